"""`tid=` and `task=` on every log record, so log lines join the ids leakhound shows.

Two parts, so it works with handlers the program sets up before or after the probe loads:

* a LogRecord factory sets `record.tid` (OS thread id, what /proc and the dashboard show) and
  `record.task` (the running asyncio task's name, or `-`) on every record; any format string
  may use `%(tid)s` / `%(task)s`, and structured handlers see them as attributes;
* a filter on each handler of the root logger (present now, and added later through
  `addHandler`, e.g. by `logging.basicConfig`) puts `tid=... task=... ` in front of
  `%(message)s` of that handler's formatter, when it is a plain `logging.Formatter` whose
  format does not mention `tid` yet. Custom formatter classes (JSON, …) are left alone.
"""

import sys
import threading

_installed = False


def current_task_name():
    # Only if the program uses asyncio: logging must not import it.
    events = sys.modules.get("asyncio.events")
    tasks = sys.modules.get("asyncio.tasks")
    if events is None or tasks is None:
        return "-"
    try:
        loop = events._get_running_loop()
        if loop is None:
            return "-"
        task = tasks._current_tasks.get(loop)
        return task.get_name() if task is not None else "-"
    except Exception:
        return "-"


def _stamp(record):
    record.tid = threading.get_native_id()
    record.task = current_task_name()


class LogIdsFilter:
    """Stamps records that bypassed the factory and prefixes its handler's formatter once."""

    def __init__(self, handler):
        self.handler = handler
        self.seen_formatter = None

    def filter(self, record):
        try:
            if not hasattr(record, "tid"):
                _stamp(record)
            formatter = self.handler.formatter
            if formatter is not self.seen_formatter or formatter is None:
                self.seen_formatter = prefix_formatter(self.handler)
        except Exception:
            pass
        return True


def prefix_formatter(handler):
    import logging

    formatter = handler.formatter
    if formatter is None:
        formatter = logging.Formatter("tid=%(tid)s task=%(task)s %(message)s")
        handler.setFormatter(formatter)
        return formatter
    if type(formatter) is not logging.Formatter:
        return formatter
    style = getattr(formatter, "_style", None)
    fmt = getattr(style, "_fmt", None)
    if not isinstance(fmt, str) or "tid" in fmt:
        return formatter
    field = {"%": ("%(message)s", "tid=%(tid)s task=%(task)s "),
             "{": ("{message}", "tid={tid} task={task} "),
             "$": ("${message}", "tid=${tid} task=${task} ")}
    # StrFormatStyle and StringTemplateStyle derive from PercentStyle: test them first.
    if isinstance(style, logging.StrFormatStyle):
        kind = "{"
    elif isinstance(style, logging.StringTemplateStyle):
        kind = "$"
    else:
        kind = "%"
    message, prefix = field[kind]
    new = fmt.replace(message, prefix + message, 1) if message in fmt else prefix + fmt
    style._fmt = new
    formatter._fmt = new
    return formatter


def _attach(handler):
    for existing in getattr(handler, "filters", ()):
        if isinstance(existing, LogIdsFilter):
            return
    handler.addFilter(LogIdsFilter(handler))


def install(logging_module):
    """Called when `logging` is imported (or at once if it already was)."""
    global _installed
    if _installed:
        return
    _installed = True
    logging = logging_module
    original_factory = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = original_factory(*args, **kwargs)
        try:
            _stamp(record)
        except Exception:
            pass
        return record

    logging.setLogRecordFactory(factory)
    root = logging.getLogger()
    for handler in list(root.handlers):
        _attach(handler)
    original_add = root.addHandler

    def add_handler(handler):
        original_add(handler)
        try:
            _attach(handler)
        except Exception:
            pass

    root.addHandler = add_handler

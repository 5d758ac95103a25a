"""leakhound_probe: the in-process probe for Python programs (see probes/PROTOCOL.md).

Load it by hand with ``leakhound_probe.install()``, or with no code change by setting
``LEAKHOUND_PROBE=1`` and putting ``leakhound_probe.hook_dir()`` on ``PYTHONPATH`` (what
``leakhound run`` and ``leakhound check`` do). Standard library only.

PYTEST_DONT_REWRITE: the probe is imported at startup, before pytest loads this package's
pytest plugin; without this marker pytest warns that it cannot rewrite an imported module.
"""

import os

__version__ = "0.1.0"
__all__ = ["install", "close", "hook_dir", "__version__"]


def install(**options):
    """Starts the probe in this process (once; later calls return the same handle).

    Options (each also readable from the environment, see probes/PROTOCOL.md):
    socket_dir, server, log_ids, task_sites, origin_depth, heartbeat_ms, stall_ms,
    window_ms, max_events, max_tasks, final_grace_ms, resource_warnings.
    Returns a handle with ``.socket_path``, ``.snapshot()`` and ``.close()``.
    """
    from . import _runtime

    return _runtime.install(**options)


def close():
    """Stops the probe: its threads end, its socket is removed, patches pass through."""
    from . import _runtime

    _runtime.close()


def hook_dir():
    """The folder to put on PYTHONPATH (with LEAKHOUND_PROBE=1) to load the probe at startup."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "_hook")

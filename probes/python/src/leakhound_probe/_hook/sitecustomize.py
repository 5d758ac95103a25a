"""Loads leakhound_probe at interpreter startup when LEAKHOUND_PROBE=1, then runs the
sitecustomize this one shadows (if any), so a site's own customisation still happens."""

import os
import sys


def _load_probe():
    if os.environ.get("LEAKHOUND_PROBE", "").strip() not in ("1", "true", "yes", "on"):
        return
    # Load the copy this hook belongs to (<pkg>/_hook/), not whatever leakhound_probe comes
    # first on sys.path: leakhound embeds the probe that speaks its protocol, and an older or
    # newer installed one must not shadow it. Loading by location leaves sys.path untouched.
    import importlib.util

    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(
        "leakhound_probe",
        os.path.join(package_dir, "__init__.py"),
        submodule_search_locations=[package_dir],
    )
    if spec is None or spec.loader is None:
        return
    leakhound_probe = importlib.util.module_from_spec(spec)
    sys.modules["leakhound_probe"] = leakhound_probe
    # Compiling the probe anew costs ~20 ms in every Python process the program starts. Its
    # bytecode is cached even under PYTHONDONTWRITEBYTECODE when it lives in leakhound's own
    # cache folder (never in a source tree), where nothing else is written.
    own_folder = os.path.basename(os.path.dirname(package_dir)).startswith("python-probe-")
    dont_write = sys.dont_write_bytecode
    if own_folder:
        sys.dont_write_bytecode = False
    try:
        spec.loader.exec_module(leakhound_probe)
        leakhound_probe.install()
    except Exception as err:  # the host program must start whatever happens here
        if getattr(leakhound_probe, "install", None) is None:
            sys.modules.pop("leakhound_probe", None)
        sys.stderr.write("leakhound_probe: not loaded: %r\n" % (err,))
    finally:
        sys.dont_write_bytecode = dont_write


def _chain_next_sitecustomize():
    """Imports the next sitecustomize on sys.path after this folder's."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    if spec.origin and os.path.abspath(spec.origin) == os.path.abspath(__file__):
        return
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        sys.stderr.write("Error in sitecustomize (%s); set PYTHONVERBOSE for traceback: %r\n"
                         % (spec.origin, err))


_load_probe()
_chain_next_sitecustomize()

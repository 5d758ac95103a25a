"""leakhound_probe: the in-process probe for Python programs (see probes/PROTOCOL.md)."""

__version__ = "0.1.0"

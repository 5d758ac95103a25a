//! leakhound-probe: the in-process probe for tokio programs (see probes/PROTOCOL.md).

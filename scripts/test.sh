#!/usr/bin/env bash
# Every test, from a fresh clone: installs what the tests need, builds once, runs it all.
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Prometheus and promtool for tests/agent_e2e.rs (Debian's package). The test runs its own
# instance on a free port; a service the package may have started is stopped.
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends prometheus
    if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
        $SUDO systemctl stop prometheus
    elif command -v service >/dev/null; then
        $SUDO service prometheus stop >/dev/null 2>&1 || true
    fi
fi

# Python test dependencies (the probe itself is standard library only); uvicorn[standard]
# among them brings uvloop, which the outside view's uvloop test also uses.
python3 -m pip install --quiet --disable-pip-version-check -e "probes/python[test]"

# gdb for the --inject tests (tests/outside_e2e.rs skips them with a message where it is absent).
if ! command -v gdb >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq gdb >/dev/null) \
        || echo "gdb could not be installed: the injection tests will be skipped" >&2
fi

# Imports follow the data flow: no cycle between the top-level modules of src/.
python3 scripts/module_cycles.py

# One build shared by every Rust test binary and by the Python end-to-end tests.
cargo build --workspace --all-targets --locked
export LEAKHOUND_BIN="$PWD/target/debug/leakhound"

cargo test --workspace --locked
# The probe's own suite runs under `leakhound check` (dogfood): it passes only when the tests
# pass and leakhound finds nothing left behind by them, so a false positive fails CI too.
# The suite's own HTTP load generators run asyncio loops in the pytest process beside real
# servers on 2 cores: their lag under that load is not a bug of the suite, hence 300 ms.
"$LEAKHOUND_BIN" check -T loop-blocked.lag=300ms -- python3 -m pytest -q probes/python/tests

# `leakhound agent --otlp` is behind the cargo feature `otlp` (off by default): its test too.
cargo test --locked --features otlp --test agent_e2e otlp

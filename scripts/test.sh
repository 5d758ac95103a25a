#!/usr/bin/env bash
# Every test, from a fresh clone: installs what the tests need, builds once, runs it all.
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Python test dependencies (the probe itself is standard library only).
python3 -m pip install --quiet --disable-pip-version-check -e "probes/python[test]"

# Imports follow the data flow: no cycle between the top-level modules of src/.
python3 scripts/module_cycles.py

# One build shared by every Rust test binary and by the Python end-to-end tests.
cargo build --workspace --all-targets --locked
export LEAKHOUND_BIN="$PWD/target/debug/leakhound"

cargo test --workspace --locked
# The probe's own suite runs under `leakhound check` (dogfood): it passes only when the tests
# pass and leakhound finds nothing left behind by them, so a false positive fails CI too.
"$LEAKHOUND_BIN" check -- python3 -m pytest -q probes/python/tests

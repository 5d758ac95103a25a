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

# The probe's own suite again on the oldest and the newest Python that pyenv has (of those the
# probe supports: pyproject's requires-python), each in a venv of its own under target/. To keep
# CI time down, these two runs leave out the frameworks-heavy tests (test_frameworks.py and
# test_service_tree.py: real uvicorn, aiohttp and gunicorn services under HTTP load, ~40% of
# the suite's time), which are about those frameworks rather than the interpreter and run on
# the default python3 above; everything else (the probe, its server, the pytest plugin, the
# end-to-end tests against the leakhound binary) runs on each.
other_pythons() {
    local root="" min default v supported=()
    if command -v pyenv >/dev/null 2>&1; then
        root="$(pyenv root)"
    elif [ -d "${PYENV_ROOT:-$HOME/.pyenv}/versions" ]; then
        root="${PYENV_ROOT:-$HOME/.pyenv}"
    fi
    if [ -z "$root" ] || [ ! -d "$root/versions" ]; then
        echo "pyenv not found: the probe's suite runs on the default python3 only" >&2
        return
    fi
    min="$(sed -n 's/^requires-python = ">=\([0-9.]*\)"$/\1/p' probes/python/pyproject.toml)"
    min="${min:-3.9}"
    for v in $(ls "$root/versions" | grep -E '^[0-9]+\.[0-9]+\.[0-9]+$' | sort -V); do
        if [ "$(printf '%s\n%s\n' "$min" "$v" | sort -V | head -1)" = "$min" ] \
                && [ -x "$root/versions/$v/bin/python" ]; then
            supported+=("$v")
        fi
    done
    if [ "${#supported[@]}" -eq 0 ]; then
        echo "pyenv has no Python >= $min: the probe's suite runs on the default python3 only" >&2
        return
    fi
    default="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    for v in $(printf '%s\n' "${supported[0]}" "${supported[-1]}" | sort -uV); do
        if [ "${v%.*}" = "$default" ]; then
            echo "pyenv's Python $v is the default python3's $default: already run" >&2
        else
            echo "$root/versions/$v/bin/python"
        fi
    done
}
for python in $(other_pythons); do
    venv="target/venv-$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "probes/python[test]"
    echo "probe suite on $("$venv/bin/python" --version)"
    "$venv/bin/python" -m pytest -q -p no:cacheprovider probes/python/tests \
        --ignore=probes/python/tests/test_frameworks.py --ignore=probes/python/tests/test_service_tree.py
done

# `leakhound agent --otlp` is behind the cargo feature `otlp` (off by default): its test too.
cargo test --locked --features otlp --test agent_e2e otlp

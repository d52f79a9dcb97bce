"""Summaries of scripts/peer_suite.sh: per-file counts and every failure, judged against the expected list.

    python scripts/peer_suite_summary.py line EXPECTED FILE RC SECONDS JUNIT_XML LOG   # one printed line
    python scripts/peer_suite_summary.py write EXPECTED RUNS_TSV OUT_DIR                # the two CSVs

Counts come from pytest's JUnit XML (a collection error is an <error> test case named after the module;
an xfail is a skip of type pytest.xfail); when there is no XML (--collect-only, a crash) they come from
pytest's last summary line. Standard library only: it runs wherever the reference's suite runs.
"""

from __future__ import annotations

import csv
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

FIELDS = [
    "file",
    "status",
    "passed",
    "failed",
    "errors",
    "skipped",
    "xfailed",
    "expected",
    "unexpected",
    "collected",
    "seconds",
]


def load_expected(path: str) -> list[tuple[re.Pattern, str]]:
    rules = []
    for line in Path(path).read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pattern, _, reason = line.partition(" | ")
        rules.append((re.compile(pattern.strip()), reason.strip()))
    return rules


def judge(node_id: str, rules: list[tuple[re.Pattern, str]]) -> str | None:
    """The reason of the first rule matching ``node_id`` (None: not expected)."""
    return next((reason for pattern, reason in rules if pattern.search(node_id)), None)


def _node_id(file: str, case: ET.Element) -> str:
    name = case.get("name", "")
    classname = case.get("classname", "")
    module = file[: -len(".py")].replace("/", ".")
    if not classname:  # a collection error: reported under the module's dotted path
        return file
    rest = classname[len(module) :].lstrip(".") if classname.startswith(module) else ""
    return "::".join(part for part in (file, *rest.split(".")) if part) + f"::{name}"


def _from_summary_line(log: str) -> dict[str, int]:
    counts = dict.fromkeys(["passed", "failed", "errors", "skipped", "xfailed"], 0)
    lines = [
        ln
        for ln in log.splitlines()
        if re.search(r"\d+ (passed|failed|skipped|errors?|tests? collected)", ln)
    ]
    if lines:
        for number, word in re.findall(r"(\d+) (passed|failed|skipped|xfailed|errors?)", lines[-1]):
            counts["errors" if word.startswith("error") else word] += int(number)
    return counts


def summarize(file: str, rc: str, secs: str, xml: str, log: str, rules) -> tuple[dict, list[dict]]:
    log_text = Path(log).read_text(errors="replace") if Path(log).exists() else ""
    failures: list[dict] = []
    counts = dict.fromkeys(["passed", "failed", "errors", "skipped", "xfailed"], 0)
    collect_error = False
    if Path(xml).exists() and rc != "missing":
        for case in ET.parse(xml).getroot().iter("testcase"):
            node = _node_id(file, case)
            outcome = "passed"
            for tag in ("failure", "error", "skipped"):
                child = case.find(tag)
                if child is not None:
                    outcome = tag
                    break
            if outcome == "skipped" and (child.get("type") == "pytest.xfail"):
                outcome = "xfailed"
            key = {"failure": "failed", "error": "errors"}.get(outcome, outcome)
            counts[key] += 1
            if outcome in ("failure", "error"):
                collect_error |= node == file
                message = (child.get("message") or "").splitlines()[0][:200] if child.get("message") else ""
                reason = judge(node, rules)
                failures.append(
                    {
                        "file": file,
                        "test": node,
                        "outcome": "collection error" if node == file else key,
                        "expected": "yes" if reason else "no",
                        "why": reason or message,
                    }
                )
    else:
        counts = _from_summary_line(log_text)
        collect_error = (
            rc not in ("0", "5", "missing") and "error" in log_text.lower() and not counts["passed"]
        )
        if rc != "missing" and rc != "0" and rc != "5":
            reason = judge(file, rules)
            failures.append(
                {
                    "file": file,
                    "test": file,
                    "outcome": "collection error" if collect_error else f"exit {rc}",
                    "expected": "yes" if reason else "no",
                    "why": reason or (log_text.strip().splitlines() or [""])[-1][:200],
                }
            )
    # --collect-only: no test ran, pytest says how many it collected
    found = re.findall(r"(\d+) tests? collected", log_text)
    collected = int(found[-1]) if found else sum(counts.values()) - collect_error
    expected = sum(f["expected"] == "yes" for f in failures)
    unexpected = len(failures) - expected
    if rc == "missing":
        status = "MISSING"
    elif collect_error:
        status = "COLLECT_ERROR"
    elif rc == "5":
        status = "EMPTY"
    elif rc == "0" and not failures and not any(counts.values()) and collected:
        status = "COLLECTED"
    elif rc == "0" and not failures:
        status = "PASS"
    else:
        status = "EXPECTED" if failures and not unexpected else "FAIL"
    row = {
        "file": file,
        "status": status,
        **counts,
        "expected": expected,
        "unexpected": unexpected,
        "collected": collected,
        "seconds": secs,
    }
    return row, failures


def main(argv: list[str]) -> int:
    mode, rules = argv[1], load_expected(argv[2])
    if mode == "line":
        file, rc, secs, xml, log = argv[3:8]
        row, _ = summarize(file, rc, secs, xml, log, rules)
        counts = " ".join(
            f"{row[k]} {k}" for k in ("passed", "failed", "errors", "skipped", "xfailed") if row[k]
        )
        if row["status"] == "COLLECTED":
            counts = f"{row['collected']} collected"
        judged = f"; {row['expected']} expected, {row['unexpected']} unexpected" if row["expected"] else ""
        print(f"{file:55s} {row['status']:13s} {counts or 'nothing ran'}{judged}")
        return 0
    runs, out = Path(argv[3]), Path(argv[4])
    rows, failures = [], []
    for line in runs.read_text().splitlines():
        row, fails = summarize(*line.split("\t"), rules)
        rows.append(row)
        failures += fails
    with open(out / "peer_suite.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    with open(out / "peer_suite_failures.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["file", "test", "outcome", "expected", "why"])
        writer.writeheader()
        writer.writerows(failures)
    unexpected = sum(r["unexpected"] for r in rows)
    print(f"{len(failures)} failures or errors, {unexpected} not in the expected list")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

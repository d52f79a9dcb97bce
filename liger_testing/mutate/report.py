"""Results of a mutation run: the kill rate, a table (``rich`` when installed) and JSON."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from liger_testing.mutate.runner import ERROR, IGNORED, KILLED, SURVIVED, TIMEOUT, MutantResult

__all__ = ["Summary", "summarize", "print_table", "write_json"]


class Summary(dict):
    """Counts per status and ``kill_rate``: (killed + timeout) / (killed + survived + timeout), in percent.

    A timeout counts as detected (a hang is something a test run notices); ignored (equivalent) mutants
    and errors (a run that could not judge the mutant) are left out; ``kill_rate`` is None when no
    mutant was judged."""


def summarize(results: Sequence[MutantResult]) -> Summary:
    counts = Counter(r.status for r in results)
    judged = counts[KILLED] + counts[SURVIVED] + counts[TIMEOUT]
    rate = 100.0 * (counts[KILLED] + counts[TIMEOUT]) / judged if judged else None
    return Summary(
        total=len(results),
        killed=counts[KILLED],
        survived=counts[SURVIVED],
        timeout=counts[TIMEOUT],
        error=counts[ERROR],
        ignored=counts[IGNORED],
        kill_rate=rate,
    )


def summary_line(summary: Summary) -> str:
    rate = "n/a" if summary["kill_rate"] is None else f"{summary['kill_rate']:.1f}%"
    return (
        f"kill rate {rate}: {summary['killed']} killed, {summary['timeout']} timed out, "
        f"{summary['survived']} survived; {summary['ignored']} ignored as equivalent, {summary['error']} errors "
        f"({summary['total']} mutants)"
    )


_STYLE = {KILLED: "green", SURVIVED: "bold red", TIMEOUT: "yellow", ERROR: "magenta", IGNORED: "dim"}


def _row(r: MutantResult) -> list[str]:
    m = r.mutant
    detail = r.killed_by or ""
    if r.note:
        detail = f"{detail} ({r.note})" if detail else r.note
    return [
        r.status,
        f"{m.file}:{m.line}",
        f"{m.operator}#{m.index}",
        m.description,
        detail,
        f"{r.seconds:.1f}",
    ]


_HEADERS = ["status", "where", "operator", "mutation", "killed by / note", "s"]


def print_table(results: Sequence[MutantResult], file: TextIO | None = None) -> None:
    """The table of every mutant and the summary line; plain text when ``rich`` is not installed."""
    summary = summarize(results)
    try:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table
    except ImportError:
        rows = [_HEADERS] + [_row(r) for r in results]
        widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADERS))]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip(), file=file)
        print(summary_line(summary), file=file)
        return
    table = Table(title="liger_testing.mutate", show_lines=False)
    for header in _HEADERS:
        table.add_column(header, overflow="fold", justify="right" if header == "s" else "left")
    for r in results:
        row = [escape(cell) for cell in _row(r)]
        row[0] = f"[{_STYLE.get(r.status, '')}]{r.status}[/]"
        table.add_row(*row)
    console = Console(file=file, width=max(150, Console(file=file).width))
    console.print(table)
    console.print(summary_line(summary), highlight=False)


def to_json(results: Sequence[MutantResult], **meta: Any) -> dict:
    return {
        "tool": "liger_testing.mutate",
        **meta,
        "summary": dict(summarize(results)),
        "mutants": [
            {
                "id": r.mutant.id,
                "file": r.mutant.file,
                "line": r.mutant.line,
                "col": r.mutant.col,
                "operator": r.mutant.operator,
                "mutation": r.mutant.description,
                "status": r.status,
                "killed_by": r.killed_by,
                "note": r.note,
                "returncode": r.returncode,
                "seconds": round(r.seconds, 3),
                "tests_run": r.tests_run,
            }
            for r in results
        ],
    }


def write_json(path: Path, results: Sequence[MutantResult], **meta: Any) -> None:
    path.write_text(json.dumps(to_json(results, **meta), indent=2) + "\n")

"""The ignore file: mutants the user has judged equivalent (no test can tell them from the original).

One entry a line, ``PATH:LINE OPERATOR REASON``; ``#`` starts a comment line; blank lines are skipped.
``OPERATOR`` may carry ``#K`` to name one of several mutants of that operator on the line (as the
report's ids do); without it, every mutant of that operator on the line is ignored. A reason is
required: an equivalent mutant is a claim someone must be able to check. Entries are keyed by line: when a
file changes, an entry whose line no longer has such a mutant is reported as stale (re-check it; a
moved line may also have brought another mutant of the same operator under an old entry).

    # liger_kernel/ops/rms_norm.py
    liger_kernel/ops/rms_norm.py:74 drop_upcast  y = n * w with fp32 w promotes n to fp32 anyway
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from liger_testing.mutate.operators import OPERATORS, Mutant

__all__ = ["IgnoreEntry", "IgnoreFileError", "parse_ignore_file", "find_ignored", "stale_entries"]

_ENTRY = re.compile(
    r"^(?P<file>\S+):(?P<line>\d+)\s+(?P<op>[a-z_]+)(?:#(?P<index>\d+))?(?:\s+(?P<reason>.*))?$"
)


class IgnoreFileError(ValueError):
    """A malformed ignore file (the message names the file and line)."""


@dataclass(frozen=True)
class IgnoreEntry:
    file: str
    line: int
    operator: str
    index: int | None
    reason: str

    def matches(self, mutant: Mutant) -> bool:
        return (
            mutant.file == self.file
            and mutant.line == self.line
            and mutant.operator == self.operator
            and (self.index is None or mutant.index == self.index)
        )


def parse_ignore_file(path: Path) -> list[IgnoreEntry]:
    entries = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        match = _ENTRY.match(text)
        if match is None:
            raise IgnoreFileError(f"{path}:{number}: expected 'PATH:LINE OPERATOR REASON', got {text!r}")
        if match["op"] not in OPERATORS:
            raise IgnoreFileError(
                f"{path}:{number}: unknown operator {match['op']!r} (known: {', '.join(OPERATORS)})"
            )
        if not (match["reason"] or "").strip():
            raise IgnoreFileError(f"{path}:{number}: give a reason why the mutant is equivalent")
        index = int(match["index"]) if match["index"] is not None else None
        entries.append(
            IgnoreEntry(match["file"], int(match["line"]), match["op"], index, match["reason"].strip())
        )
    return entries


def find_ignored(mutants: list[Mutant], entries: list[IgnoreEntry]) -> dict[str, str]:
    """Mutant id -> the reason it is ignored."""
    ignored = {}
    for mutant in mutants:
        for entry in entries:
            if entry.matches(mutant):
                ignored[mutant.id] = entry.reason
                break
    return ignored


def stale_entries(
    mutants: list[Mutant], entries: list[IgnoreEntry], operators: set[str]
) -> list[IgnoreEntry]:
    """Entries for a file and operator of this run that match none of its mutants: the file changed under
    them (a line moved), so they no longer mark what they were written for."""
    files = {m.file for m in mutants}
    return [
        e
        for e in entries
        if e.file in files and e.operator in operators and not any(e.matches(m) for m in mutants)
    ]

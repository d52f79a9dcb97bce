"""Tables for the benchmark scripts' terminal output (rich: columns fit the terminal, cells fold)."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Table


def print_table(
    title: str, header: Sequence[str], rows: Sequence[Sequence[str]], width: int | None = None
) -> None:
    """Print ``rows`` under ``header``; the first column left-aligned, the others right-aligned.

    ``width`` None: the terminal's width, or 120 columns when the output is not a terminal (a log).
    """
    console = Console(width=width or (None if Console().is_terminal else 120))
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i < 2 else "right", overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)

"""Which tests can notice a mutant: per-test line coverage of the unmutated run (``--select coverage``).

A test that never executes the statement a mutant changes runs exactly as on the unmutated code, so it
cannot kill that mutant; running only the tests that do execute it gives the same verdict, faster. The
unmutated baseline runs once under :mod:`coverage` with one context per test (the pytest plugin in
``liger_testing.mutate._coverage_plugin``), and each mutant then runs only the tests whose context
covers its statement.

The selection falls back to every test wherever a line's effect can reach a test that does not execute
it:

- statements outside a function body (module level, class bodies, ``def`` lines, decorators, default
  arguments) run once per process, at import, for whichever test imports first;
- functions with a caching decorator (``cache``, ``lru_cache``, ...) serve later tests from the cache;
- compiled kernels: a ``@triton.jit`` (or other decorated) function none of whose lines ran in Python
  ran compiled (on a GPU); coverage cannot see inside it.

A mutant whose statement no test executes (and none of the cases above) survives without a run: no test
can reach it. Code that a test runs in a subprocess is not seen by the coverage of that test.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from liger_testing.mutate.operators import Mutant

__all__ = ["COVERAGE_PLUGIN", "TestMap", "coverage_environment", "read_test_map", "select_tests"]

COVERAGE_PLUGIN = "liger_testing.mutate._coverage_plugin"
ORDER_FILE = "order.json"
CACHING_DECORATORS = {"cache", "lru_cache", "cached_property", "cached"}


@dataclass
class TestMap:
    """``lines[file][line]``: the tests (node ids, relative to the project root) that executed that line of
    ``file`` (relative path) in the unmutated run; ``order``: the tests in collection order."""

    __test__ = False  # not a pytest test class, whatever its name

    lines: dict[str, dict[int, set[str]]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)


def read_test_map(data_dir: Path, workdir: Path) -> TestMap:
    """Combine the per-process coverage files the plugin wrote under ``data_dir`` (the run's project copy
    was ``workdir``)."""
    import coverage

    # combine() reads the files named like its own data file plus a suffix: the plugin's "coverage.*".
    cov = coverage.Coverage(data_file=str(data_dir / "coverage"), config_file=False)
    cov.combine([str(data_dir)])
    data = cov.get_data()
    test_map = TestMap()
    root = workdir.resolve()
    for measured in data.measured_files():
        try:
            rel = Path(measured).resolve().relative_to(root).as_posix()
        except ValueError:
            continue
        by_line = test_map.lines.setdefault(rel, {})
        for line, contexts in data.contexts_by_lineno(measured).items():
            by_line.setdefault(line, set()).update(contexts)
    order_file = data_dir / ORDER_FILE
    if order_file.is_file():
        test_map.order = json.loads(order_file.read_text())
    return test_map


def _decorator_name(node: ast.expr) -> str:
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


@dataclass
class _Scope:
    """The innermost statement that contains an edit, and the function whose body holds it (if any)."""

    first: int
    last: int
    function: ast.FunctionDef | ast.AsyncFunctionDef | None


def _scope(tree: ast.Module, line: int, col_byte: int) -> _Scope | None:
    """The innermost statement containing (line, col); None for a position outside every statement."""

    def contains(node: ast.stmt) -> bool:
        start = (node.lineno, node.col_offset)
        end = (node.end_lineno or node.lineno, node.end_col_offset or 0)
        return start <= (line, col_byte) < end or (line, col_byte) == start

    def descend(body: Sequence[ast.stmt], function) -> _Scope | None:
        for stmt in body:
            if not contains(stmt):
                continue
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = descend(stmt.body, stmt)
                # Inside the signature or a decorator: evaluated where the def runs, in the enclosing scope.
                return inner or _Scope(stmt.lineno, stmt.lineno, function)
            if isinstance(stmt, ast.ClassDef):
                inner = descend(stmt.body, None)
                return inner or _Scope(stmt.lineno, stmt.lineno, None)
            children = []
            for child in ast.iter_child_nodes(stmt):
                if isinstance(child, ast.stmt):
                    children.append(child)
                elif isinstance(child, (ast.ExceptHandler, ast.match_case)):
                    children.extend(child.body)
            inner = descend(children, function) if children else None
            if inner is not None:
                return inner
            if children:  # a compound statement's header (an if's test, a for's iterable): up to its body
                body_first = min(c.lineno for c in children)
                return _Scope(stmt.lineno, max(stmt.lineno, body_first - 1), function)
            return _Scope(stmt.lineno, stmt.end_lineno or stmt.lineno, function)
        return None

    return descend(tree.body, None)


def _edit_positions(source: bytes, mutant: Mutant) -> list[tuple[int, int]]:
    """(line, byte column) of each edit's start."""
    out = []
    for edit in mutant.edits:
        line = source.count(b"\n", 0, edit.start) + 1
        line_start = source.rfind(b"\n", 0, edit.start) + 1
        out.append((line, edit.start - line_start))
    return out


def select_tests(mutant: Mutant, source: bytes, test_map: TestMap) -> list[str] | None:
    """The tests that can notice ``mutant`` (in collection order), or None for "every test" (one of the
    fallbacks in the module docstring). An empty list: no test executes the mutated statement."""
    tree = ast.parse(source)
    covered = test_map.lines.get(mutant.file, {})
    chosen: set[str] = set()
    for line, col in _edit_positions(source, mutant):
        scope = _scope(tree, line, col)
        if scope is None or scope.function is None:
            return None
        function = scope.function
        decorators = {_decorator_name(d) for d in function.decorator_list}
        if decorators & CACHING_DECORATORS:
            return None
        body_first = function.body[0].lineno
        body_last = function.end_lineno or body_first
        if decorators and not any(body_first <= n <= body_last for n in covered):
            return None  # compiled, or never called: coverage cannot tell which, so run everything
        for n in range(scope.first, scope.last + 1):
            chosen.update(covered.get(n, ()))
    chosen.discard("")  # lines that ran outside any test (collection) say nothing about a test
    rank = {t: i for i, t in enumerate(test_map.order)}
    return sorted(chosen, key=lambda t: (rank.get(t, len(rank)), t))


def coverage_environment(data_dir: Path, files: Sequence[str], workdir: Path) -> dict[str, str]:
    """What the plugin reads: where to write, and which files (absolute, in ``workdir``) to measure."""
    return {
        "LIGER_MUTATE_COVERAGE_DIR": str(data_dir),
        "LIGER_MUTATE_COVERAGE_INCLUDE": os.pathsep.join(str((workdir / f).resolve()) for f in files),
    }

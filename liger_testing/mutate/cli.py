"""``python -m liger_testing.mutate FILE... --tests TEST...``: the command line."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from liger_testing.mutate.ignore import IgnoreFileError, find_ignored, parse_ignore_file, stale_entries
from liger_testing.mutate.operators import OPERATORS, Mutant, generate_mutants
from liger_testing.mutate.report import print_table, summarize, summary_line, write_json
from liger_testing.mutate.runner import IGNORED, SURVIVED, MutantResult, run_baseline, run_mutants
from liger_testing.mutate.selection import select_tests

__all__ = ["main", "DEFAULT_IGNORE_FILE"]

DEFAULT_IGNORE_FILE = "mutate-ignore.txt"
EXIT_OK, EXIT_BELOW_THRESHOLD, EXIT_USAGE, EXIT_CRASH = 0, 1, 2, 3


class UsageError(Exception):
    """Bad arguments: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m liger_testing.mutate",
        description="Kernel-aware mutation testing: plant plausible kernel bugs one at a time and check "
        "that the tests catch each.",
    )
    p.add_argument(
        "files", nargs="+", metavar="FILE", help="kernel source files (.py), or folders of them, to mutate"
    )
    p.add_argument("--tests", nargs="+", required=True, metavar="TEST", help="test files or node ids to run")
    p.add_argument("--root", type=Path, help="project root copied for each run (default: nearest folder "
                   "above the first FILE with pyproject.toml, setup.py, setup.cfg, tox.ini, pytest.ini or .git)")  # fmt: skip
    p.add_argument("--operators", help=f"comma-separated subset of: {', '.join(OPERATORS)}")
    p.add_argument("--only", action="append", default=[], metavar="ID", help="run only this mutant id "
                   "(as listed by --list; repeatable)")  # fmt: skip
    p.add_argument("--ignore-file", type=Path, help=f"equivalent mutants (default: ROOT/{DEFAULT_IGNORE_FILE} "
                   "when it exists)")  # fmt: skip
    p.add_argument("--timeout", type=float, help="seconds per mutant (default: 3 x the unmutated run + 30)")
    p.add_argument("--jobs", default="1", help="mutants run in parallel, each in its own copy ('auto': one per "
                   "CPU; with --select coverage each run is a few tests, so this beats pytest-xdist's -n)")  # fmt: skip
    p.add_argument("--select", choices=("all", "coverage"), default="all",
                   help="which tests each mutant runs: all of --tests (default), or only those that execute the "
                   "mutated statement in the unmutated run (measured with coverage; needs the coverage package)")  # fmt: skip
    p.add_argument("--pytest-args", default="", help="extra pytest arguments, one string "
                   "(write --pytest-args='-n 2 -p myplugin')")  # fmt: skip
    p.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON")
    p.add_argument("--fail-under", type=float, metavar="PCT", help="exit 1 when the kill rate is below PCT")
    p.add_argument("--list", action="store_true", help="list the mutants and exit without running tests")
    return p


def _find_root(start: Path) -> Path:
    for folder in [start, *start.parents]:
        if any(
            (folder / marker).exists()
            for marker in ("pyproject.toml", "setup.py", "setup.cfg", "tox.ini", "pytest.ini", ".git")
        ):
            return folder
    return Path.cwd().resolve()


def _relative(path: Path, root: Path, what: str) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        raise UsageError(f"{what} {path} is not inside the project root {root}") from None


def _validate(args: argparse.Namespace) -> tuple[Path, list[str], list[str], list[str] | None, list[str]]:
    files = []
    for f in map(Path, args.files):  # a folder stands for every .py file under it
        files.extend(sorted(f.rglob("*.py")) if f.is_dir() else [f])
    if not files:
        raise UsageError(f"no .py files under {', '.join(args.files)}")
    for f in files:
        if not f.is_file():
            raise UsageError(f"FILE {f} does not exist or is not a file")
        if f.suffix != ".py":
            raise UsageError(f"FILE {f} is not a Python source file (.py)")
    root = (args.root or _find_root(files[0].resolve().parent)).resolve()
    if not root.is_dir():
        raise UsageError(f"--root {root} is not a folder")
    rel_files = [_relative(f, root, "FILE") for f in files]
    rel_tests = []
    for test in args.tests:
        path, sep, node = test.partition("::")
        if not Path(path).exists():
            raise UsageError(f"--tests {path} does not exist")
        rel_tests.append(_relative(Path(path), root, "--tests") + sep + node)
    operators = None
    if args.operators:
        operators = [o.strip() for o in args.operators.split(",") if o.strip()]
        unknown = [o for o in operators if o not in OPERATORS]
        if unknown or not operators:
            raise UsageError(
                f"--operators: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(OPERATORS)}"
            )
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError(f"--timeout must be positive, got {args.timeout:g}")
    if args.jobs == "auto":
        args.jobs = os.cpu_count() or 1
    elif not args.jobs.isdigit() or int(args.jobs) < 1:
        raise UsageError(f"--jobs must be a positive integer or 'auto', got {args.jobs!r}")
    args.jobs = int(args.jobs)
    if args.fail_under is not None and not 0 <= args.fail_under <= 100:
        raise UsageError(f"--fail-under must be a percentage in [0, 100], got {args.fail_under:g}")
    if args.ignore_file is not None and not args.ignore_file.is_file():
        raise UsageError(f"--ignore-file {args.ignore_file} does not exist")
    if args.select == "coverage":
        try:
            import coverage  # noqa: F401
        except ImportError:
            raise UsageError("--select coverage needs the coverage package (pip install coverage)") from None
    if args.json is not None and not args.json.resolve().parent.is_dir():
        raise UsageError(f"--json {args.json}: folder {args.json.resolve().parent} does not exist")
    try:
        pytest_args = shlex.split(args.pytest_args)
    except ValueError as e:
        raise UsageError(f"--pytest-args: {e}") from None
    return root, rel_files, rel_tests, operators, pytest_args


def _collect(root: Path, files: list[str], operators: list[str] | None, only: list[str]) -> list[Mutant]:
    mutants = []
    for rel in files:
        try:
            mutants.extend(generate_mutants((root / rel).read_bytes(), rel, operators))
        except SyntaxError as e:
            raise UsageError(f"FILE {rel} does not parse: {e.msg} (line {e.lineno})") from None
    if only:
        known = {m.id for m in mutants}
        missing = [i for i in only if i not in known]
        if missing:
            raise UsageError(f"--only {missing[0]}: no such mutant (see --list)")
        mutants = [m for m in mutants if m.id in set(only)]
    return mutants


def _progress(total: int):
    done = [0]

    def report(result: MutantResult) -> None:
        done[0] += 1
        m = result.mutant
        by = f" by {result.killed_by}" if result.killed_by else ""
        print(
            f"[{done[0]}/{total}] {result.status:8s} {m.id}{by} ({result.seconds:.1f}s)",
            file=sys.stderr,
            flush=True,
        )

    return report


def run(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    root, files, tests, operators, pytest_args = _validate(args)
    mutants = _collect(root, files, operators, args.only)

    ignore_path = args.ignore_file or (root / DEFAULT_IGNORE_FILE)
    entries = []
    if ignore_path.is_file():
        try:
            entries = parse_ignore_file(ignore_path)
        except IgnoreFileError as e:
            raise UsageError(str(e)) from None
    ignored = find_ignored(mutants, entries)
    if not args.only:
        for entry in stale_entries(mutants, entries, set(operators or OPERATORS)):
            print(f"warning: {ignore_path.name}: stale entry {entry.file}:{entry.line} {entry.operator}"
                  f"{'' if entry.index is None else f'#{entry.index}'}: no such mutant any more "
                  "(the file changed); re-check it", file=sys.stderr)  # fmt: skip

    if args.list:
        for m in mutants:
            mark = f"  [ignored: {ignored[m.id]}]" if m.id in ignored else ""
            print(f"{m.id}  {m.description}{mark}")
        print(f"{len(mutants)} mutants, {len(ignored)} ignored as equivalent")
        return EXIT_OK

    to_run = [m for m in mutants if m.id not in ignored]
    coverage_of = sorted({m.file for m in to_run}) if args.select == "coverage" else None
    baseline, tail, test_map = run_baseline(root, tests, pytest_args, coverage_of=coverage_of)
    if baseline.status != "survived":  # "survived" here: every test passed on the unmutated code
        raise UsageError(f"the tests do not pass on the unmutated code ({baseline.status}, "
                         f"{baseline.killed_by or baseline.note}); fix them first:\n{tail}")  # fmt: skip
    timeout = args.timeout if args.timeout is not None else 3 * baseline.seconds + 30
    print(f"baseline: tests pass in {baseline.seconds:.1f}s; timeout per mutant {timeout:.0f}s; "
          f"{len(to_run)} mutants to run", file=sys.stderr)  # fmt: skip

    unreached: dict[str, MutantResult] = {}
    tests_by_mutant = None
    if test_map is not None:
        tests_by_mutant = {}
        sources = {f: (root / f).read_bytes() for f in coverage_of or ()}
        for m in to_run:
            chosen = select_tests(m, sources[m.file], test_map)
            if chosen == []:
                unreached[m.id] = MutantResult(
                    m, SURVIVED, note="no test executes this statement", tests_run=0
                )
            elif chosen is not None:
                tests_by_mutant[m.id] = chosen
        print(f"selection: {len(tests_by_mutant)} mutants run the tests that execute them, "
              f"{len(to_run) - len(tests_by_mutant) - len(unreached)} run every test (import-time, cached or "
              f"compiled code), {len(unreached)} are executed by no test", file=sys.stderr)  # fmt: skip
    runnable = [m for m in to_run if m.id not in unreached]
    by_id = {r.mutant.id: r for r in run_mutants(
        root, runnable, tests, pytest_args=pytest_args, timeout=timeout, jobs=args.jobs,
        on_result=_progress(len(runnable)), tests_by_mutant=tests_by_mutant,
    )}  # fmt: skip
    by_id.update(unreached)
    results = [by_id.get(m.id) or MutantResult(m, IGNORED, note=ignored.get(m.id, "")) for m in mutants]

    print_table(results)
    summary = summarize(results)
    if args.json is not None:
        write_json(args.json, results, root=str(root), files=files, tests=tests, pytest_args=pytest_args,
                   baseline_seconds=round(baseline.seconds, 3), timeout_seconds=timeout, select=args.select,
                   fail_under=args.fail_under)  # fmt: skip
    if args.fail_under is not None and (summary["kill_rate"] or 0.0) < args.fail_under:
        print(f"FAIL: {summary_line(summary)} is below --fail-under {args.fail_under:g}%", file=sys.stderr)
        return EXIT_BELOW_THRESHOLD
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(argv)
    except UsageError as e:
        print(f"liger_testing.mutate: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_CRASH

"""Running mutants: a scratch copy of the project, one mutant at a time, the chosen tests in a subprocess.

Each worker copies the project once (without ``.git``, virtual environments and caches), then for each
mutant writes the mutated file into its copy, runs pytest there with the copy first on ``PYTHONPATH``,
and puts the original file back. Bytecode is never written, so a mutant of the same size written in the
same second as the original can never be served from a stale ``.pyc``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from liger_testing.mutate.operators import Mutant
from liger_testing.mutate.selection import COVERAGE_PLUGIN, TestMap, coverage_environment, read_test_map

__all__ = ["MutantResult", "RunOutcome", "classify", "copy_project", "run_baseline", "run_mutants"]

# Never copied into the scratch project.
EXCLUDED = (".git", ".venv", "venv", ".tox", "__pycache__", ".pytest_cache", ".hypothesis", ".mypy_cache",
            ".ruff_cache", "build", "dist", "*.egg-info", "node_modules")  # fmt: skip

KILLED, SURVIVED, TIMEOUT, ERROR, IGNORED = "killed", "survived", "timeout", "error", "ignored"


@dataclass
class RunOutcome:
    """What one pytest run said: its status, the first test that failed (or crashed), a note."""

    status: str
    killed_by: str | None
    note: str
    returncode: int | None
    seconds: float


@dataclass
class MutantResult:
    mutant: Mutant
    status: str
    killed_by: str | None = None
    note: str = ""
    returncode: int | None = None
    seconds: float = 0.0
    tests_run: int | None = None  # how many tests were chosen for it (None: all of --tests)


def copy_project(root: Path, dest: Path) -> Path:
    """Copy ``root`` to ``dest`` without version control, virtual environments and caches."""
    shutil.copytree(root, dest, ignore=shutil.ignore_patterns(*EXCLUDED), symlinks=True)
    return dest


_FAILED_LINE = re.compile(r"^(?:FAILED|ERROR) (?!collecting )(\S+)", re.MULTILINE)
_XDIST_CRASH = re.compile(r"crashed while running '([^']+)'")
_COLLECT_ERROR = re.compile(r"ERROR collecting (\S+)")
# With -v and no xdist, pytest prints a test's node id before running it: after a crash, the last one
# printed is the test that crashed.
_STARTED = re.compile(r"^(\S+::\S+)", re.MULTILINE)


def classify(returncode: int | None, output: str, seconds: float, timed_out: bool) -> RunOutcome:
    """Turn a pytest run of a mutant into killed / survived / timeout / error.

    - exit 0: every test passed, the mutant survived;
    - exit 1 (tests failed), or exit 2 when pytest was interrupted by a failure (``-x`` stops xdist's
      workers, which pytest reports as an interruption) or by a collection error (the mutant broke an
      import): killed, by the first failing test in the summary;
    - killed by a signal, or a worker xdist saw crash: killed (the mutant crashed the process; on the
      CPU that is often an out-of-bounds write that corrupted the heap);
    - anything else (internal error, usage error, no tests collected): error, not counted.
    """
    if timed_out:
        return RunOutcome(TIMEOUT, None, "timed out", returncode, seconds)
    if returncode == 0:
        return RunOutcome(SURVIVED, None, "", returncode, seconds)
    crash = _XDIST_CRASH.search(output)
    failed = _FAILED_LINE.search(output)
    collect = _COLLECT_ERROR.search(output)
    if crash:
        return RunOutcome(KILLED, crash.group(1), "worker crashed", returncode, seconds)
    if returncode is not None and returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.Signals._value2member_map_ else ""
        started = _STARTED.findall(output)
        by = failed.group(1) if failed else (started[-1] if started else None)
        return RunOutcome(KILLED, by, f"crashed ({name or returncode})", returncode, seconds)
    if returncode in (1, 2) and collect:
        return RunOutcome(KILLED, collect.group(1), "collection error", returncode, seconds)
    if returncode in (1, 2) and failed:
        note = "interrupted after the failure" if returncode == 2 else ""
        return RunOutcome(KILLED, failed.group(1), note, returncode, seconds)
    if returncode in (134, 139):  # a shell-reported SIGABRT / SIGSEGV
        started = _STARTED.findall(output)
        return RunOutcome(
            KILLED, started[-1] if started else None, f"crashed (exit {returncode})", returncode, seconds
        )
    tail = output.strip().splitlines()[-1] if output.strip() else ""
    return RunOutcome(ERROR, None, f"pytest exit {returncode}: {tail[:120]}", returncode, seconds)


def _pytest_command(python: str, tests: Sequence[str], pytest_args: Sequence[str]) -> list[str]:
    return [python, "-m", "pytest", *tests, "-x", "-v", "-rfE", "-p", "no:cacheprovider", *pytest_args]


def _environment(workdir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra or {})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(workdir), env.get("PYTHONPATH", "")) if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # liger_testing's plugin loads this Hypothesis profile: no shrinking, no database, same examples.
    env.setdefault("LIGER_HYPOTHESIS_PROFILE", "mutation")
    return env


def _run_pytest(
    workdir: Path,
    python: str,
    tests: Sequence[str],
    pytest_args: Sequence[str],
    timeout: float | None,
    env: Mapping[str, str] | None = None,
) -> tuple[RunOutcome, str]:
    """One pytest run in ``workdir``: its outcome and its output."""
    start = time.monotonic()
    # Its own session, so a timeout (or ^C) ends the whole process group, xdist workers included.
    proc = subprocess.Popen(
        _pytest_command(python, tests, pytest_args), cwd=workdir, env=_environment(workdir, env),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    timed_out = False
    try:
        output, _ = proc.communicate(timeout=timeout)
    except BaseException as e:
        timed_out = isinstance(e, subprocess.TimeoutExpired)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        output, _ = proc.communicate()
        if not timed_out:
            raise
    text = output.decode(errors="replace")
    return classify(proc.returncode, text, time.monotonic() - start, timed_out), text


def run_baseline(
    root: Path,
    tests: Sequence[str],
    pytest_args: Sequence[str],
    python: str = sys.executable,
    coverage_of: Sequence[str] | None = None,
) -> tuple[RunOutcome, str, TestMap | None]:
    """Run the tests once on an unmutated scratch copy; returns the outcome, the output's tail and, when
    ``coverage_of`` names files (relative to ``root``), which tests executed which of their lines."""
    with tempfile.TemporaryDirectory(prefix="liger-mutate-") as tmp:
        work = copy_project(root, Path(tmp) / "project")
        args, env = list(pytest_args), None
        if coverage_of is not None:
            data_dir = Path(tmp) / "coverage"
            data_dir.mkdir()
            args = ["-p", COVERAGE_PLUGIN, *args]
            env = coverage_environment(data_dir, coverage_of, work)
        outcome, output = _run_pytest(work, python, tests, args, None, env)
        test_map = (
            read_test_map(data_dir, work) if coverage_of is not None and outcome.status == SURVIVED else None
        )
        return outcome, "\n".join(output.strip().splitlines()[-15:]), test_map


def run_mutants(
    root: Path,
    mutants: Sequence[Mutant],
    tests: Sequence[str],
    *,
    pytest_args: Sequence[str] = (),
    timeout: float | None = None,
    jobs: int = 1,
    python: str = sys.executable,
    on_result: Callable[[MutantResult], None] | None = None,
    tests_by_mutant: Mapping[str, Sequence[str]] | None = None,
) -> list[MutantResult]:
    """Run each mutant alone against ``tests`` (or ``tests_by_mutant[mutant.id]`` where given) in ``jobs``
    scratch copies; results in ``mutants`` order."""
    results: list[MutantResult | None] = [None] * len(mutants)
    if not mutants:
        return []
    originals = {m.file: (root / m.file).read_bytes() for m in mutants}
    lock = threading.Lock()
    next_index = iter(range(len(mutants)))

    def worker(tmp: Path) -> None:
        work = copy_project(root, tmp / "project")
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            mutant = mutants[i]
            target = work / mutant.file
            target.write_bytes(mutant.apply(originals[mutant.file]))
            try:
                chosen = (tests_by_mutant or {}).get(mutant.id, tests)
                outcome, _output = _run_pytest(work, python, chosen, pytest_args, timeout)
            finally:
                target.write_bytes(originals[mutant.file])
            result = MutantResult(mutant, outcome.status, outcome.killed_by, outcome.note, outcome.returncode,
                                  outcome.seconds, None if chosen is tests else len(chosen))  # fmt: skip
            results[i] = result
            if on_result is not None:
                with lock:
                    on_result(result)

    with tempfile.TemporaryDirectory(prefix="liger-mutate-") as tmp:
        dirs = [Path(tmp) / f"w{k}" for k in range(max(1, min(jobs, len(mutants))))]
        for d in dirs:
            d.mkdir()
        with ThreadPoolExecutor(len(dirs)) as pool:
            for future in [pool.submit(worker, d) for d in dirs]:
                future.result()
    return [r for r in results if r is not None]

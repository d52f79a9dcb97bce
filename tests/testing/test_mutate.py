"""liger_testing.mutate: the operators on kernel source, the verdicts, the ignore file, the command line,
and one end-to-end run on a tiny project (plain Python, so each mutant's pytest run is quick)."""

import json
import textwrap

import pytest

from liger_testing.mutate import Edit, Mutant, classify, generate_mutants, parse_ignore_file
from liger_testing.mutate.cli import main
from liger_testing.mutate.ignore import IgnoreFileError, stale_entries

KERNEL = textwrap.dedent(
    """
    import triton
    import triton.language as tl


    @triton.jit
    def _helper_rows(BLOCK: tl.constexpr):
        return tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)


    @triton.jit
    def _kernel(X, Y, stride_x, n_rows, n_cols, scale, SQUARE: tl.constexpr, BLOCK: tl.constexpr):
        rows = _helper_rows(BLOCK)
        cols = tl.arange(0, BLOCK)
        mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
        x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        m = tl.load(X + rows[:, None] * stride_x, mask=mask, other=float("-inf"))
        if SQUARE:
            x = x * x
        y = tl.where(x > 0, x, -x) + scale * tl.sum(x, axis=1)[:, None]
        tl.store(Y + rows[:, None] * n_cols + cols[None, :], y, mask=mask)


    def launch(x, y, scale):
        _kernel[(1,)](x, y, x.stride(0), x.shape[0], x.shape[1], scale, SQUARE=True, BLOCK=16)
    """
)


def by_operator(mutants):
    out = {}
    for m in mutants:
        out.setdefault(m.operator, []).append(m)
    return out


def test_operators_find_the_kernel_slips():
    mutants = generate_mutants(KERNEL, "k.py")
    ops = by_operator(mutants)
    descriptions = {op: [m.description for m in ms] for op, ms in ops.items()}
    # both bound checks, including rows built by a jit helper
    assert descriptions["mask_compare"] == [
        "rows < n_rows  ->  rows <= n_rows",
        "cols < n_cols  ->  cols <= n_cols",
    ]
    assert sorted(descriptions["load_other"]) == [
        'other=0.0  ->  other=float("-inf")',
        'other=float("-inf")  ->  other=0.0',
    ]
    assert descriptions["reduction_axis"] == ["tl.sum(x, axis=1)  ->  axis 1 -> 0"]
    assert descriptions["swap_where"] == ["where(.., x, -x)  ->  where(.., -x, x)"]
    assert descriptions["stride_to_row_length"] == ["x.stride(0)  ->  x.shape[-1]"]
    assert descriptions["constexpr_ignored"] == ["if SQUARE:  ->  if False:", "if SQUARE:  ->  if True:"]
    assert len(ops["drop_upcast"]) == 1
    # the stored sum loses either term; the helper's index arithmetic is a stored value of its caller
    dropped = descriptions["drop_term"]
    assert any(d.endswith("->  (tl.where(x > 0, x, -x))") for d in dropped)
    assert any(d.endswith("->  (scale * tl.sum(x, axis=1)[:, None])") for d in dropped)
    assert not any("stride_x" in d for d in dropped)  # addresses are not values
    for m in mutants:
        mutated = m.apply(KERNEL.encode())
        assert mutated != KERNEL.encode()
        compile(mutated, "k.py", "exec")
    assert len({m.id for m in mutants}) == len(mutants)


def test_plain_pytorch_file_uses_the_pytorch_forms():
    source = textwrap.dedent(
        """
        import torch

        def softmax_rows(x, bias):
            z = x.float() + bias
            z = torch.where(z > 0, z, 0.1 * z)
            return torch.exp(z - z.amax(-1, keepdim=True))
        """
    )
    ops = by_operator(generate_mutants(source, "p.py"))
    assert set(ops) == {"drop_upcast", "swap_where", "reduction_axis", "drop_term"}
    assert ops["reduction_axis"][0].description.endswith("dim -1 -> 0")


OK_OUTPUT = "5 passed in 1.0s"
FAILED_OUTPUT = "FAILED tests/test_k.py::test_a[float32] - AssertionError: x\n1 failed, 3 passed"
XDIST_OUTPUT = (
    "FAILED tests/test_k.py::test_b - assert 1 != 1\n!!! stopping after 1 failures !!!\n"
    "!!! xdist.dsession.Interrupted: stopping after 1 failures !!!\n1 failed, 4 passed"
)
XDIST_CRASH = "worker 'gw0' crashed while running 'tests/test_k.py::test_c'\nFAILED tests/test_k.py::test_c"
ABORT_OUTPUT = "tests/test_k.py::test_a PASSED [ 50%]\ntests/test_k.py::test_d \nFatal Python error: Aborted"


@pytest.mark.parametrize(
    "returncode, output, timed_out, status, killed_by",
    [
        (0, OK_OUTPUT, False, "survived", None),
        (1, FAILED_OUTPUT, False, "killed", "tests/test_k.py::test_a[float32]"),
        (2, XDIST_OUTPUT, False, "killed", "tests/test_k.py::test_b"),  # -x interrupts xdist: not a crash
        (1, XDIST_CRASH, False, "killed", "tests/test_k.py::test_c"),
        (-6, ABORT_OUTPUT, False, "killed", "tests/test_k.py::test_d"),
        (2, "ERROR collecting tests/test_k.py\n1 error", False, "killed", "tests/test_k.py"),
        (None, "", True, "timeout", None),
        (4, "ERROR: usage", False, "error", None),
        (5, "no tests ran", False, "error", None),
    ],
)
def test_verdicts(returncode, output, timed_out, status, killed_by):
    outcome = classify(returncode, output, 1.0, timed_out)
    assert (outcome.status, outcome.killed_by) == (status, killed_by)


def test_ignore_file(tmp_path):
    mutants = generate_mutants(KERNEL, "k.py")
    where = next(m for m in mutants if m.operator == "swap_where")
    path = tmp_path / "ignore.txt"
    path.write_text(f"# equivalent mutants\n\nk.py:{where.line} swap_where  |x| either way\n")
    (entry,) = parse_ignore_file(path)
    assert entry.matches(where) and entry.reason == "|x| either way"
    assert not any(entry.matches(m) for m in mutants if m is not where)
    for bad, match in ((f"k.py:{where.line} swap_where", "give a reason"), ("k.py:3 flip it", "unknown operator"),
                       ("k.py swap_where why", "expected 'PATH:LINE")):  # fmt: skip
        path.write_text(bad + "\n")
        with pytest.raises(IgnoreFileError, match=match):
            parse_ignore_file(path)


def test_stale_ignore_entries_are_found(tmp_path):
    """An entry whose line has no such mutant any more (the file changed) is stale; an entry for a file
    or an operator this run does not mutate is not."""
    mutants = generate_mutants(KERNEL, "k.py")
    where = next(m for m in mutants if m.operator == "swap_where")
    path = tmp_path / "ignore.txt"
    path.write_text(
        f"k.py:{where.line} swap_where  kept\n"
        f"k.py:{where.line + 1000} swap_where  moved away\n"
        "other.py:3 swap_where  another file\n"
    )
    entries = parse_ignore_file(path)
    assert stale_entries(mutants, entries, {"swap_where"}) == [entries[1]]
    assert stale_entries(mutants, entries, {"drop_term"}) == []


@pytest.mark.parametrize(
    "argv, reason",
    [
        (["missing.py", "--tests", "t.py"], "FILE missing.py does not exist"),
        (["k.py"], "--tests"),
        (["k.py", "--tests", "nope.py"], "--tests nope.py does not exist"),
        (["k.py", "--tests", "t.py", "--operators", "flip"], "--operators: unknown flip"),
        (["k.py", "--tests", "t.py", "--fail-under", "120"], "--fail-under must be a percentage"),
        (["k.py", "--tests", "t.py", "--timeout", "0"], "--timeout must be positive"),
        (["k.py", "--tests", "t.py", "--jobs", "0"], "--jobs must be a positive integer or 'auto', got '0'"),
        (["k.py", "--tests", "t.py", "--jobs", "many"], "--jobs must be a positive integer or 'auto'"),
        (["k.py", "--tests", "t.py", "--select", "some"], "--select: invalid choice"),
        (["t.txt", "--tests", "t.py"], "not a Python source file"),
        (
            ["k.py", "--tests", "t.py", "--only", "k.py:1:swap_where#0"],
            "--only k.py:1:swap_where#0: no such mutant",
        ),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, monkeypatch, capsys, argv, reason):
    (tmp_path / "k.py").write_text(KERNEL)
    (tmp_path / "t.py").write_text("")
    (tmp_path / "t.txt").write_text("")
    (tmp_path / "pyproject.toml").write_text("")
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and reason in err, err


PROJECT_CODE = textwrap.dedent(
    """
    def affine(x, w, b):
        return x * w + b


    def shifted(x):
        return x * 2 + 0


    def plus_zero(x):
        return x + 0
    """
)
PROJECT_TESTS = textwrap.dedent(
    """
    from kern import affine, plus_zero, shifted


    def test_affine():
        assert affine(2, 3, 1) == 7


    def test_shifted():
        assert shifted(5) == 10


    def test_plus_zero():
        assert plus_zero(3) == 3
    """
)


def test_end_to_end_on_a_tiny_project(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # a bare pytest per mutant starts fast
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "kern.py").write_text(PROJECT_CODE)
    (tmp_path / "test_kern.py").write_text(PROJECT_TESTS)
    # x + 0 -> x is marked equivalent; x * 2 + 0 -> x * 2 is not, so it survives.
    (tmp_path / "mutate-ignore.txt").write_text("kern.py:11 drop_term#0  adding 0 changes nothing\n")
    out = tmp_path / "result.json"
    kern, tests = str(tmp_path / "kern.py"), str(tmp_path / "test_kern.py")
    assert main([kern, "--tests", tests, "--json", str(out), "--fail-under", "100"]) == 1  # below 100%
    report = json.loads(out.read_text())
    status = {m["mutation"]: (m["status"], m["killed_by"]) for m in report["mutants"]}
    assert status == {
        "x * w + b  ->  (x * w)": ("killed", "test_kern.py::test_affine"),
        "x * w + b  ->  (b)": ("killed", "test_kern.py::test_affine"),
        "x * 2 + 0  ->  (x * 2)": ("survived", None),
        "x * 2 + 0  ->  (0)": ("killed", "test_kern.py::test_shifted"),
        "x + 0  ->  (x)": ("ignored", None),
        "x + 0  ->  (0)": ("killed", "test_kern.py::test_plus_zero"),
    }
    summary = report["summary"]
    assert (summary["kill_rate"], summary["ignored"], summary["survived"]) == (80.0, 1, 1)
    assert (tmp_path / "kern.py").read_text() == PROJECT_CODE  # mutants only ever touch the scratch copy
    assert "kill rate 80.0%" in capsys.readouterr().out


# --select coverage: which tests each mutant runs ----------------------------------------------------------

SELECTION_CODE = textwrap.dedent(
    """
    import functools

    SCALE = 2 + 0


    def used(x):
        y = x * 3 + 1
        if x + 0 > 1:
            return y
        return y + 0


    def unused(x):
        return x + 5


    @functools.lru_cache
    def cached(x):
        return x + 7


    @some.jit
    def compiled(x):
        return x + 9
    """
)


def test_selection_picks_the_tests_that_run_the_statement():
    from liger_testing.mutate.selection import TestMap, select_tests

    source = SELECTION_CODE.encode()
    line_of = {text: n for n, text in enumerate(SELECTION_CODE.splitlines(), start=1)}
    body = line_of["    y = x * 3 + 1"]
    branch = line_of["    if x + 0 > 1:"]
    tail = line_of["    return y + 0"]
    test_map = TestMap(
        lines={"sel.py": {body: {"t::b", "t::a"}, branch: {"t::a", "t::b", "t::c"}, tail: {"t::c", ""}}},
        order=["t::c", "t::b", "t::a"],
    )

    def chosen(line_text: str, fragment: str):
        """The tests chosen for a mutant that edits ``fragment`` on the line that reads ``line_text``."""
        line = line_of[line_text]
        start = sum(len(t) + 1 for t in SELECTION_CODE.splitlines()[: line - 1]) + line_text.index(fragment)
        mutant = Mutant("sel.py", line, 0, "drop_term", "", (Edit(start, start + len(fragment), "0"),))
        selected = select_tests(mutant, source, test_map)
        return None if selected is None else tuple(selected)

    assert chosen("    y = x * 3 + 1", "1") == ("t::b", "t::a")  # in collection order
    assert chosen("    if x + 0 > 1:", "0") == ("t::c", "t::b", "t::a")  # an if's test: whoever reached it
    assert chosen("    return y + 0", "0") == ("t::c",)  # the empty context (outside any test) is no test
    assert chosen("    return x + 5", "5") == ()  # never executed: nothing can notice it
    assert chosen("SCALE = 2 + 0", "0") is None  # import time: every test
    assert chosen("def used(x):", "x") is None  # a signature runs where the def runs: every test
    assert chosen("    return x + 7", "7") is None  # cached: later tests use the result unseen
    assert chosen("    return x + 9", "9") is None  # decorated, no line ran in Python: compiled


def test_end_to_end_with_coverage_selection_under_xdist(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "kern.py").write_text(PROJECT_CODE + "\n\ndef unused(x):\n    return x - 1\n")
    (tmp_path / "test_kern.py").write_text(PROJECT_TESTS)
    out = tmp_path / "result.json"
    argv = [str(tmp_path / "kern.py"), "--tests", str(tmp_path / "test_kern.py"), "--json", str(out)]
    # The coverage plugin must reach xdist's workers, or every mutant would look unreached.
    assert main([*argv, "--select", "coverage", "--pytest-args=-p xdist -n 2"]) == 0
    report = json.loads(out.read_text())
    assert report["select"] == "coverage"
    got = {m["mutation"]: (m["status"], m["killed_by"], m["tests_run"]) for m in report["mutants"]}
    assert got == {
        "x * w + b  ->  (x * w)": ("killed", "test_kern.py::test_affine", 1),
        "x * w + b  ->  (b)": ("killed", "test_kern.py::test_affine", 1),
        "x * 2 + 0  ->  (x * 2)": ("survived", None, 1),
        "x * 2 + 0  ->  (0)": ("killed", "test_kern.py::test_shifted", 1),
        "x + 0  ->  (x)": ("survived", None, 1),
        "x + 0  ->  (0)": ("killed", "test_kern.py::test_plus_zero", 1),
        "x - 1  ->  (x)": ("survived", None, 0),
    }
    assert {m["note"] for m in report["mutants"] if m["tests_run"] == 0} == {
        "no test executes this statement"
    }


def test_select_coverage_without_the_package_is_a_usage_error(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_coverage(name, *args, **kwargs):
        if name == "coverage":
            raise ImportError("No module named 'coverage'")
        return real_import(name, *args, **kwargs)

    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "kern.py").write_text(PROJECT_CODE)
    monkeypatch.setattr(builtins, "__import__", no_coverage)
    assert main([str(tmp_path / "kern.py"), "--tests", str(tmp_path), "--select", "coverage"]) == 2
    assert "--select coverage needs the coverage package" in capsys.readouterr().err

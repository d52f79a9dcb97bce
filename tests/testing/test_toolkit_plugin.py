"""Tests of the liger_testing pytest plugin, through inner pytest runs (pytester, in subprocesses so the
inner sessions cannot change this process's Hypothesis profile or Triton state)."""

import json

import pytest

from liger_testing.device import resolve_device, set_interpreter_if_no_gpu
from liger_testing.pytest_plugin import test_seed

INNER_KERNELS = """
import triton
import triton.language as tl


@triton.jit
def add_one(X, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(X + offs, tl.load(X + offs, mask=offs < n) + 1, mask=offs < n)
"""

# A rootdir conftest.py that imports a module decorating a Triton kernel at import time. It is an
# "initial conftest", imported before any pytest_configure hook runs; the plugin must have set
# TRITON_INTERPRET already (it does so in pytest_load_initial_conftests).
INNER_CONFTEST = """
import mykernels  # noqa: F401
"""

INNER_TESTS = """
import json
import os

import pytest
import torch

import mykernels


def _record(name, seed):
    with open("seeds.jsonl", "a") as f:
        f.write(json.dumps({"name": name, "seed": seed}) + "\\n")


def test_kernel_decorated_in_interpreter_mode(device):
    assert device == "cpu"
    assert os.environ.get("TRITON_INTERPRET") == "1"
    assert type(mykernels.add_one).__name__ == "InterpretedFunction"
    x = torch.zeros(5)
    mykernels.add_one[(1,)](x, 5, BLOCK=8)
    assert x.tolist() == [1.0] * 5


def test_seed_a(seed):
    _record("a", seed)
    assert torch.initial_seed() == seed


def test_seed_b(seed):
    _record("b", seed)


def test_planted_failure(seed):
    assert seed < 0, "planted failure"


@pytest.mark.gpu
def test_needs_gpu(device):
    raise AssertionError("must not run without a GPU")
"""


@pytest.fixture
def inner(pytester, monkeypatch):
    for var in ("TRITON_INTERPRET", "LIGER_SEED", "LIGER_DEVICE", "LIGER_HYPOTHESIS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    pytester.makeini("[pytest]\naddopts = -p liger_testing.pytest_plugin\n")  # the documented opt-in
    pytester.makepyfile(mykernels=INNER_KERNELS, conftest=INNER_CONFTEST, test_inner=INNER_TESTS)
    return pytester


def _seeds(pytester):
    path = pytester.path / "seeds.jsonl"
    out = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        out[rec["name"]] = rec["seed"]
    path.unlink()
    return out


def test_plugin_end_to_end(inner):
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", "-ra", "--liger-device=cpu")
    result.assert_outcomes(passed=3, failed=1, skipped=1)
    out = result.stdout.str()

    # the rootdir conftest imported a kernel after TRITON_INTERPRET was set (the kernel test passed)
    # seeds: stable hash of (global seed, node id), different per node id, independent of process
    seeds = _seeds(inner)
    assert seeds["a"] == test_seed(0, "test_inner.py::test_seed_a")
    assert seeds["b"] == test_seed(0, "test_inner.py::test_seed_b")
    assert seeds["a"] != seeds["b"]

    # reproduce section on failure
    fail_seed = test_seed(0, "test_inner.py::test_planted_failure")
    assert "liger_testing reproduce" in out
    assert f"seed: {fail_seed} (global seed 0)" in out
    assert "TRITON_INTERPRET: 1" in out
    assert "versions: python" in out and "torch" in out and "hypothesis" in out
    assert "pytest 'test_inner.py::test_planted_failure' --liger-seed=0 --liger-device=cpu" in out
    # the reproduce section is only added to failures
    assert out.count("liger_testing reproduce") == 1

    # gpu marker skips with a clear reason
    assert "needs a CUDA GPU" in out


def test_global_seed_from_env_changes_seeds_and_selection_does_not(inner, monkeypatch):
    # $LIGER_SEED is the default of --liger-seed; running one test alone gives it the same seed as in a
    # full run with that global seed (no dependence on order, selection or xdist scheduling).
    monkeypatch.setenv("LIGER_SEED", "7")
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", "-k", "seed_b")
    result.assert_outcomes(passed=1, deselected=4)
    seeds = _seeds(inner)
    assert seeds == {"b": test_seed(7, "test_inner.py::test_seed_b")}
    assert seeds["b"] != test_seed(0, "test_inner.py::test_seed_b")


HYPOTHESIS_TEST = """
from hypothesis import given, settings, strategies as st


@settings(max_examples=3, database=None)
@given(st.integers(0, 2**62))
def test_draws(value):
    with open("draws.txt", "a") as f:
        f.write(f"{value}\\n")
"""


def _draws(pytester, *args):
    pytester.makeini("[pytest]\naddopts = -p liger_testing.pytest_plugin\n")
    pytester.makepyfile(test_draws=HYPOTHESIS_TEST)
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--hypothesis-profile=default", *args)
    path = pytester.path / "draws.txt"
    draws = path.read_text().split()
    path.unlink()
    return draws


def test_liger_seed_also_seeds_hypothesis(pytester, monkeypatch):
    monkeypatch.delenv("LIGER_SEED", raising=False)
    first, again, other = (_draws(pytester, f"--liger-seed={s}") for s in (5, 5, 6))
    assert first == again and first != other
    assert _draws(pytester, "--liger-seed=5", "--hypothesis-seed=6") == other  # Hypothesis's own option wins
    monkeypatch.setenv("LIGER_SEED", "6")
    assert _draws(pytester) == other


def test_seed_function_is_a_stable_hash():
    assert test_seed(0, "a::b") == test_seed(0, "a::b")
    assert test_seed(0, "a::b") != test_seed(1, "a::b")
    assert 0 <= test_seed(123, "x") < 2**31


def test_resolve_device_and_interpreter(monkeypatch):
    # setenv first so that teardown restores the original state: delenv of an unset variable records
    # nothing, and the "1" set below would then leak into later tests of this process (on a GPU run,
    # inductor's Triton helpers imported afterwards would be interpreted).
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.delenv("TRITON_INTERPRET")
    assert set_interpreter_if_no_gpu("cpu") == "cpu"
    import os

    assert os.environ["TRITON_INTERPRET"] == "1"
    assert resolve_device("auto") in ("cpu", "cuda")
    assert resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(ValueError, match="invalid device"):
        resolve_device("not-a-device")


def test_device_fixture(device):
    assert device in ("cpu", "cuda") or device.startswith("cuda:")


def test_markers_registered(pytestconfig):
    markers = "\n".join(pytestconfig.getini("markers"))
    for name in ("gpu", "slow", "convergence", "nightly"):
        assert f"{name}:" in markers


# ----------------------------------------------------------------------------------------------------
# Installing liger-kernel changes nothing in another project's pytest run until it opts in.
# ----------------------------------------------------------------------------------------------------

# An unrelated project's test that reports what pytest gave it: the environment, Hypothesis' settings
# and the fixtures that exist.
UNRELATED_TEST = """
import json
import os

import pytest


def test_report(request):
    try:
        from hypothesis import settings
    except ImportError:
        max_examples = None
    else:
        max_examples = settings().max_examples
    fixtures = set()
    for name in ("device", "seed"):
        try:
            request.getfixturevalue(name)
        except pytest.FixtureLookupError:
            continue
        fixtures.add(name)
    with open("report.json", "w") as f:
        json.dump(
            {
                "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET"),
                "max_examples": max_examples,
                "liger_fixtures": sorted(fixtures),
                "plugin_loaded": request.config.pluginmanager.has_plugin("liger_testing.pytest_plugin"),
            },
            f,
        )
"""

# Hypothesis' own default in a fresh interpreter with the same environment (it loads its built-in
# "ci" profile by itself when $CI is set, as in our CI).
_HYPOTHESIS_DEFAULT = "from hypothesis import settings; print(settings().max_examples)"


def _unrelated_project(pytester, monkeypatch, conftest: str = ""):
    for var in (
        "TRITON_INTERPRET",
        "LIGER_SEED",
        "LIGER_DEVICE",
        "LIGER_HYPOTHESIS_PROFILE",
        "PYTEST_ADDOPTS",
    ):
        monkeypatch.delenv(var, raising=False)
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_unrelated=UNRELATED_TEST)
    if conftest:
        pytester.makeconftest(conftest)
    return pytester


def _report(pytester, *args):
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    return result, json.loads((pytester.path / "report.json").read_text())


def test_installed_plugin_is_inert_for_an_unrelated_project(pytester, monkeypatch):
    import subprocess
    import sys

    project = _unrelated_project(pytester, monkeypatch)
    result, report = _report(project)
    assert result.ret == 0
    hypothesis_default = int(
        subprocess.run(
            [sys.executable, "-c", _HYPOTHESIS_DEFAULT], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    assert report == {
        "TRITON_INTERPRET": None,
        "max_examples": hypothesis_default,
        "liger_fixtures": [],
        "plugin_loaded": False,
    }
    assert "liger_testing" not in result.stdout.str()


def test_installed_plugin_is_inert_without_hypothesis(pytester, monkeypatch):
    # Hypothesis "absent": a module that fails to import shadows it, and its pytest plugin is off.
    (pytester.path / "hypothesis.py").write_text("raise ModuleNotFoundError('absent', name='hypothesis')\n")
    project = _unrelated_project(pytester, monkeypatch)
    result, report = _report(project, "-p", "no:hypothesispytest")
    assert result.ret == 0, result.stdout.str()
    assert report == {
        "TRITON_INTERPRET": None,
        "max_examples": None,
        "liger_fixtures": [],
        "plugin_loaded": False,
    }


def test_opting_in_through_a_conftest_gives_the_plugin(pytester, monkeypatch):
    project = _unrelated_project(pytester, monkeypatch, 'pytest_plugins = ["liger_testing.pytest_plugin"]\n')
    result, report = _report(project, "--liger-device=cpu")
    assert result.ret == 0
    assert report["plugin_loaded"] and report["liger_fixtures"] == ["device", "seed"]
    assert report["TRITON_INTERPRET"] == "1"
    from liger_testing.profiles import default_profile_name

    # the dev or ci profile of liger_testing (20 or 25 examples), not Hypothesis' default
    assert report["max_examples"] == {"dev": 20, "ci": 25}[default_profile_name()]


def test_opted_in_plugin_works_without_hypothesis(pytester, monkeypatch):
    (pytester.path / "hypothesis.py").write_text("raise ModuleNotFoundError('absent', name='hypothesis')\n")
    project = _unrelated_project(pytester, monkeypatch)
    result, report = _report(project, "-p", "no:hypothesispytest", "-p", "liger_testing.pytest_plugin")
    assert result.ret == 0, result.stdout.str()
    assert report["plugin_loaded"] and report["liger_fixtures"] == ["device", "seed"]
    assert "hypothesis profile=none (Hypothesis is not installed)" in result.stdout.str()


def test_hypothesis_profile_option_takes_our_profiles(pytester):
    """--hypothesis-profile=gpu (one of ours) works: Hypothesis loads it before our configure runs."""
    pytester.makeini("[pytest]\naddopts = -p liger_testing.pytest_plugin\n")
    pytester.makepyfile(test_draws=HYPOTHESIS_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--hypothesis-profile=gpu")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*hypothesis profile=gpu*"])

"""liger_testing with the base install only (no ``test`` extra): Hypothesis absent."""

from __future__ import annotations

import subprocess
import sys

# A module named hypothesis that fails to import, first on the path: Hypothesis "not installed".
_ABSENT = "raise ModuleNotFoundError(\"No module named 'hypothesis'\", name='hypothesis')\n"


def _run(tmp_path, code: str) -> subprocess.CompletedProcess:
    (tmp_path / "hypothesis.py").write_text(_ABSENT)
    return subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n{code}"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_assertions_tolerances_and_runner_import_without_hypothesis(tmp_path):
    proc = _run(
        tmp_path,
        "import liger_testing\n"
        "from liger_testing import assert_close, assert_close_to_reference, tolerances\n"
        "from liger_testing.convergence import run_convergence, register_spec\n"
        "import torch\n"
        "assert_close(torch.ones(3), torch.ones(3))\n"
        "print(tolerances(torch.bfloat16))\n",
    )
    assert proc.returncode == 0, proc.stderr


def test_converge_help_without_hypothesis(tmp_path):
    proc = _run(
        tmp_path,
        "import runpy; sys.argv = ['converge', '--help']; runpy.run_module('liger_testing.converge', run_name='__main__')",
    )
    assert proc.returncode == 0, proc.stderr
    assert "--model" in proc.stdout


def test_strategies_name_the_missing_extra(tmp_path):
    for name in ("strategies", "profiles"):
        proc = _run(tmp_path, f"from liger_testing import {name}")
        assert proc.returncode != 0
        last = proc.stderr.strip().splitlines()[-1]
        assert f"liger_testing.{name} needs Hypothesis" in last and "liger-kernel[test]" in last, last

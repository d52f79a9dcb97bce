"""The liger_testing README's downstream example (examples/downstream_convergence) registers its specs and
converges, through the command line as the README runs it, and the README shows its files verbatim."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from liger_testing.convergence import cli, get_spec

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "downstream_convergence"
README = Path(__file__).resolve().parents[2] / "liger_testing" / "README.md"

pytestmark = pytest.mark.convergence


@pytest.fixture
def example_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    yield
    for name in ("my_convergence_specs", "my_patching"):
        sys.modules.pop(name, None)


def test_readme_shows_the_example_files():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    for name in ("my_convergence_specs.py", "my_patching.py"):
        assert (EXAMPLE / name).read_text() in blocks, f"README.md does not show {name} as it is"


def test_downstream_spec_converges_through_the_command_line(example_on_path, device, capsys):
    argv = ["--import", "my_convergence_specs", "--device", device, "--quiet"]
    assert cli.main([*argv, "--list"]) == 0
    listed = capsys.readouterr().out
    assert "my-qwen3 " in listed and "my-qwen3-liger-no-rope" in listed and "llama" in listed
    assert get_spec("my-qwen3").patch == "my_patching:patch_model"
    assert (
        cli.main([*argv, "--model", "my-qwen3", "--steps", "2", "--batch-size", "2", "--seq-len", "16"]) == 0
    )
    out = capsys.readouterr().out
    assert "Qwen3RMSNorm -> FunctionalQwen3RMSNorm (my_patching)" in out and "RESULT: PASS" in out

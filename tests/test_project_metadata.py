"""The project's own promises about itself: the README's "tested with" line names the releases pinned
as known good, and that constraints file is one a pip install can use."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _known_good() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints" / "known-good.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and name and version, f"constraints/known-good.txt: not a name==version pin: {line!r}"
            pins[name.lower()] = version
    return pins


def test_readme_tested_with_line_matches_the_known_good_pins():
    readme = " ".join((ROOT / "README.md").read_text().split())
    match = re.search(
        r"Tested with torch (\S+) \(CPU build\) / triton (\S+) / transformers (\S+) \(CPU, interpreter",
        readme,
    )
    assert match, "README.md has no 'Tested with torch X (CPU build) / triton Y / transformers Z' line"
    pins = _known_good()
    assert dict(zip(("torch", "triton", "transformers"), match.groups(), strict=True)) == {
        name: pins[name] for name in ("torch", "triton", "transformers")
    }


def test_known_good_pins_every_runtime_and_test_dependency():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    names = {re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0].lower() for req in required}
    assert names - set(_known_good()) == set()


def test_readme_model_table_is_the_one_generated_from_the_patch_table():
    import importlib.util

    from liger_kernel.transformers.model_specs import MODEL_SPECS

    spec = importlib.util.spec_from_file_location("model_table", ROOT / "scripts" / "model_table.py")
    model_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(model_table)
    readme = (ROOT / "README.md").read_text()
    assert model_table.updated(readme, MODEL_SPECS.values()) == readme, (
        "README.md's model table differs from MODEL_SPECS: run python scripts/model_table.py --write"
    )
    notes = model_table.notes_in(readme)
    assert list(notes) == list(MODEL_SPECS)  # every type, in the table's order
    # a stale row (an option missing) or a missing row is found, and --write keeps the notes
    stale = readme.replace("| `qwen3` | `Qwen3ForCausalLM` | rope, ", "| `qwen3` | `Qwen3ForCausalLM` | ")
    assert stale != readme and model_table.updated(stale, MODEL_SPECS.values()) == readme
    row = next(line for line in readme.splitlines() if line.startswith("| `gemma2` |"))
    without = readme.replace(row + "\n", "")
    assert model_table.updated(without, MODEL_SPECS.values()).count("| `gemma2` |") == 1
    assert model_table.notes_in(readme)["gemma2"] == "final-logit soft-cap inside the fused loss"

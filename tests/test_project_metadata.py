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

"""``benchmark/`` lives at the repository root, outside the package: tests import its modules through
the ``benchmark_module`` fixture, inside the test, so collecting them (on CPU, say) needs nothing from
``benchmark/``."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def benchmark_module() -> Callable[[str], ModuleType]:
    """``benchmark_module("e2e")`` is ``benchmark.e2e``."""

    def load(name: str) -> ModuleType:
        if str(REPO) not in sys.path:
            sys.path.insert(0, str(REPO))
        return importlib.import_module(f"benchmark.{name}")

    return load

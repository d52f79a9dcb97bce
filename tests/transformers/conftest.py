"""Every test here starts and ends with Hugging Face's modeling modules unpatched."""

from __future__ import annotations

import pytest

from liger_kernel.transformers import unpatch


@pytest.fixture(autouse=True)
def _no_patch_leaks():
    unpatch()
    yield
    unpatch()

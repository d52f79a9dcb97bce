"""Every test here starts and ends with Hugging Face's modeling modules unpatched."""

from __future__ import annotations

import _hf_tiny
import pytest

from liger_kernel.transformers import unpatch


@pytest.fixture(autouse=True, scope="session")
def _models_on_the_test_device(device):
    _hf_tiny.DEVICE = device


@pytest.fixture(autouse=True)
def _no_patch_leaks():
    unpatch()
    yield
    unpatch()

"""Tests of training at scale: FSDP2, whole-model torch.compile, the Hugging Face Trainer.

The tiny models come from tests/transformers/_hf_tiny.py (put on sys.path here); every test starts
and ends with Hugging Face's modeling modules unpatched.
"""

from __future__ import annotations

import pathlib
import sys

import pytest

_TRANSFORMERS_TESTS = str(pathlib.Path(__file__).resolve().parent.parent / "transformers")
if _TRANSFORMERS_TESTS not in sys.path:
    sys.path.insert(0, _TRANSFORMERS_TESTS)

import _hf_tiny  # noqa: E402

from liger_kernel.transformers import unpatch  # noqa: E402


@pytest.fixture(autouse=True)
def _models_on_the_test_device(device):
    _hf_tiny.DEVICE = device


@pytest.fixture(autouse=True)
def _no_patch_leaks():
    unpatch()
    yield
    unpatch()

"""The host-side helpers every launch uses: their contracts, at and around powers of two (a block one
power too large gives the same results with twice the masked lanes, which no numerical test sees)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liger_kernel.ops.utils import cdiv, next_power_of_2, row_block_size


@given(st.integers(1, 2**40), st.integers(1, 2**20))
def test_cdiv(a, b):
    assert cdiv(a, b) == (a + b - 1) // b


@given(st.integers(-3, 2**40))
def test_next_power_of_2(n):
    p = next_power_of_2(n)
    assert p & (p - 1) == 0  # a power of two
    assert p >= n and (p == 1 or p // 2 < n)  # the smallest one


@pytest.mark.parametrize(("n", "block"), [(1, 1), (2, 2), (3, 4), (4096, 4096), (4097, 8192), (65536, 65536)])
def test_row_block_size(n, block):
    assert row_block_size(n) == block


def test_row_block_size_names_the_limit():
    with pytest.raises(ValueError, match="rows of 65537 elements exceed the largest block"):
        row_block_size(65537)

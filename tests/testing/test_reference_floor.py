"""assert_close_to_reference's floor derived from the formula: ``roundings=`` and ``terms_scale=``."""

import pytest
import torch

from liger_testing import assert_close_to_reference

EPS32 = torch.finfo(torch.float32).eps


def ulps_off(golden: torch.Tensor, n: float) -> torch.Tensor:
    """golden in fp32, moved by n ulps (of each element's magnitude)."""
    g32 = golden.float()
    return (g32.double() * (1 + n * EPS32)).float()


def test_roundings_allow_as_many_half_ulps_as_the_formula_rounds():
    golden = torch.linspace(1.0, 1.9, 64, dtype=torch.float64)
    reference = golden.float()  # exact: zero error of its own
    actual = ulps_off(golden, 3)  # three ulps = six roundings of half an ulp
    with pytest.raises(AssertionError):
        assert_close_to_reference(actual, reference, golden)  # default: 2 roundings
    with pytest.raises(AssertionError, match="4 roundings"):
        assert_close_to_reference(actual, reference, golden, roundings=4)
    assert_close_to_reference(actual, reference, golden, roundings=7)


def test_terms_scale_bounds_a_result_that_cancels():
    """g = t1 - t2 with |t| ~ 1000 and |g| ~ 1: one rounding of the terms is ~1000 ulps of g."""
    t1 = torch.linspace(1000.0, 1001.0, 32, dtype=torch.float64)
    t2 = t1 - torch.linspace(0.5, 1.5, 32, dtype=torch.float64)
    golden = t1 - t2
    actual = (t1.float() * (1 + EPS32 / 2) - t2.float()).to(torch.float32)  # t1 off by half an ulp
    reference = golden.float()
    with pytest.raises(AssertionError):
        assert_close_to_reference(actual, reference, golden, roundings=4)
    assert_close_to_reference(actual, reference, golden, roundings=4, terms_scale=t1)
    # A tree of scales, matched by key; None means "relative to golden".
    tree = {"g": actual, "h": reference}
    assert_close_to_reference(
        tree, {"g": reference, "h": reference}, {"g": golden, "h": golden}, roundings=4,
        terms_scale={"g": t1, "h": None},
    )  # fmt: skip


def test_floor_and_roundings_are_exclusive():
    x = torch.ones(3)
    with pytest.raises(ValueError, match="floor or roundings"):
        assert_close_to_reference(x, x, x.double(), floor=1e-6, roundings=3)

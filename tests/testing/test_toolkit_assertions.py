"""Unit tests of liger_testing.assert_close, assert_close_to_reference and tolerances."""

import math
import re

import pytest
import torch

from liger_testing import Tolerance, assert_close, assert_close_to_reference, tolerances
from liger_testing.tolerances import _FLOAT_TABLE

FLOAT_DTYPES = [getattr(torch, name) for name, *_ in _FLOAT_TABLE if hasattr(torch, name)]


# --------------------------------------------------------------------------------------------------------
# tolerances
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_every_float_dtype_has_nonzero_tolerances(dtype):
    tol = tolerances(dtype)
    assert isinstance(tol, Tolerance)
    assert tol.atol > 0 and tol.rtol > 0
    # Never tighter than one rounding of the dtype, never absurdly loose.
    eps = (
        torch.finfo(dtype).eps
        if dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16)
        else None
    )
    if eps is not None:
        assert eps / 2 <= tol.rtol <= 64 * eps


def test_table_covers_standard_and_fp8_dtypes():
    for name in ("float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"):
        if hasattr(torch, name):
            assert getattr(torch, name) in FLOAT_DTYPES


def test_lower_precision_is_looser():
    assert tolerances(torch.float64).rtol < tolerances(torch.float32).rtol < tolerances(torch.float16).rtol
    assert tolerances(torch.float16).rtol < tolerances(torch.bfloat16).rtol


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool], ids=str)
def test_integer_dtypes_are_exact(dtype):
    assert tolerances(dtype) == Tolerance(0.0, 0.0)


def test_unknown_dtype_raises_type_error_naming_it():
    with pytest.raises(TypeError, match="complex64"):
        tolerances(torch.complex64)


# --------------------------------------------------------------------------------------------------------
# assert_close: passing cases
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64], ids=str)
def test_equal_and_close_tensors_pass(dtype):
    x = torch.randn(16, 33, generator=torch.Generator().manual_seed(0)).to(dtype)
    assert_close(x, x.clone())
    # a perturbation well inside the default rtol
    y = (x.double() * (1 + 0.25 * tolerances(dtype).rtol)).to(dtype)
    assert_close(y, x)


def test_scalars_and_nested_structures_pass():
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    assert_close(1.0, 1.0)
    assert_close(3, 3)
    assert_close([t, (t, 2.0)], ((t.clone(), [t.clone(), 2.0])))
    assert_close(torch.tensor(1.5), 1.5)
    assert_close(None, None)


def test_empty_tensors_pass():
    assert_close(torch.empty(0, 4), torch.empty(0, 4))


def test_device_and_grad_are_ignored():
    x = torch.randn(4, 4, requires_grad=True)
    assert_close(x * 1, x.detach().clone())


# --------------------------------------------------------------------------------------------------------
# assert_close: failure messages
# --------------------------------------------------------------------------------------------------------


def test_single_element_off_reports_index_count_fraction_and_tolerance():
    expected = torch.ones(64, 64)
    actual = expected.clone()
    actual[3, 17] = 1.5
    with pytest.raises(AssertionError) as info:
        assert_close(actual, expected)
    text = str(info.value)
    assert "1 / 4096 elements (0.0244%)" in text
    assert "(3, 17)" in text
    assert "greatest absolute error: 5.000e-01" in text
    assert "greatest relative error" in text
    assert "actual=1.5" in text and "expected=1" in text
    tol = tolerances(torch.float32)
    assert f"atol={tol.atol:.3e}" in text and f"rtol={tol.rtol:.3e}" in text
    assert "default for torch.float32" in text


def test_explicit_tolerance_is_used_and_reported():
    a, e = torch.tensor([1.0, 2.0]), torch.tensor([1.05, 2.0])
    assert_close(a, e, atol=0.1, rtol=0.0)
    with pytest.raises(AssertionError, match=r"atol=1\.000e-02, rtol=0\.000e\+00 \(given\)"):
        assert_close(a, e, atol=0.01, rtol=0.0)
    with pytest.raises(AssertionError, match="atol given, rtol default for torch.float32"):
        assert_close(a, e, atol=0.01)


def test_criterion_is_atol_plus_rtol_times_expected():
    e = torch.tensor([100.0], dtype=torch.float64)
    assert_close(torch.tensor([100.5], dtype=torch.float64), e, atol=0.0, rtol=0.005)
    with pytest.raises(AssertionError):
        assert_close(torch.tensor([100.6], dtype=torch.float64), e, atol=0.0, rtol=0.005)
    # relative to expected, not actual
    with pytest.raises(AssertionError):
        assert_close(e, torch.tensor([100.0 - 0.6], dtype=torch.float64), atol=0.0, rtol=0.005)


def test_failures_of_all_leaves_are_collected():
    a = {"x": torch.zeros(3), "y": [torch.zeros(2), torch.ones(2)]}
    e = {"x": torch.ones(3), "y": [torch.zeros(2), torch.zeros(2)]}
    with pytest.raises(AssertionError) as info:
        assert_close(a, e, msg="grads differ")
    text = str(info.value)
    assert "grads differ" in text
    assert "actual['x']: 3 / 3 elements" in text
    assert "actual['y'][1]: 2 / 2 elements" in text
    assert "actual['y'][0]" not in text


def test_dicts_are_matched_by_key_not_order():
    w, b = torch.randn(4, 4), torch.randn(4)
    assert_close({"weight": w, "bias": b}, {"bias": b.clone(), "weight": w.clone()})
    # Same insertion order but swapped values must fail at the right keys.
    with pytest.raises(AssertionError) as info:
        assert_close({"weight": w, "bias": b}, {"bias": w, "weight": b})
    assert "actual['weight']" in str(info.value)


def test_missing_and_extra_keys_are_named():
    t = torch.zeros(2)
    with pytest.raises(AssertionError) as info:
        assert_close({"weight": t, "bias": t}, {"weight": t, "scale": t})
    text = str(info.value)
    assert "'bias' is missing from expected" in text
    assert "'scale' is missing from actual" in text


def test_sequence_length_and_structure_mismatch():
    t = torch.zeros(2)
    with pytest.raises(AssertionError, match="length mismatch"):
        assert_close([t, t], [t])
    with pytest.raises(AssertionError, match="structure mismatch"):
        assert_close({"a": t}, [t])


def test_shape_mismatch_is_reported_not_broadcast():
    with pytest.raises(AssertionError, match=r"shape mismatch: actual \(4, 1\) vs expected \(4,\)"):
        assert_close(torch.zeros(4, 1), torch.zeros(4))
    with pytest.raises(AssertionError, match="shape mismatch"):
        assert_close(torch.zeros(4, 4), torch.zeros(4))  # broadcastable, still an error
    assert_close(torch.zeros(4, 1), torch.zeros(4), check_shape=False)
    with pytest.raises(AssertionError, match="shape mismatch"):
        assert_close(torch.zeros(4, 4), torch.zeros(4), check_shape=False)


def test_dtype_mismatch_and_looser_tolerance_across_dtypes():
    x = torch.randn(32, generator=torch.Generator().manual_seed(1))
    with pytest.raises(
        AssertionError, match="dtype mismatch: actual torch.bfloat16 vs expected torch.float32"
    ):
        assert_close(x.to(torch.bfloat16), x)
    # With check_dtype=False the looser (bfloat16) tolerance applies.
    assert_close(x.to(torch.bfloat16), x, check_dtype=False)
    with pytest.raises(AssertionError, match="looser of torch.bfloat16 and torch.float32"):
        assert_close(x.to(torch.bfloat16) + 1, x, check_dtype=False)


def test_nan_handling():
    e = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    a = e.clone()
    a[1, 2] = math.nan
    with pytest.raises(AssertionError) as info:
        assert_close(a, e)
    text = str(info.value)
    assert "1 NaN mismatches" in text and "first at index (1, 2)" in text
    # NaN at the same place: equal only with equal_nan
    with pytest.raises(AssertionError, match="NaN mismatches"):
        assert_close(a, a.clone())
    assert_close(a, a.clone(), equal_nan=True)
    # NaN on one side only fails even with equal_nan
    with pytest.raises(AssertionError, match="1 NaN mismatches, first at index \\(1, 2\\)"):
        assert_close(a, e, equal_nan=True)


def test_inf_handling():
    e = torch.tensor([1.0, math.inf, -math.inf, 4.0])
    assert_close(e, e.clone())
    a = e.clone()
    a[1] = -math.inf  # +inf vs -inf
    a[3] = math.inf  # inf vs finite
    with pytest.raises(AssertionError) as info:
        assert_close(a, e)
    text = str(info.value)
    assert "2 inf mismatches, first at index (1,)" in text
    assert "2 / 4 elements (50%)" in text


def test_nan_and_value_mismatches_are_counted_separately():
    e = torch.zeros(10)
    a = e.clone()
    a[0] = 1.0
    a[5:8] = math.nan
    with pytest.raises(AssertionError) as info:
        assert_close(a, e)
    text = str(info.value)
    assert "4 / 10 elements" in text
    assert "1 value mismatches, first at index (0,)" in text
    assert "3 NaN mismatches" in text and "first at index (5,)" in text


def test_integer_tensors_are_exact():
    a = torch.tensor([2**53 + 1], dtype=torch.int64)
    with pytest.raises(AssertionError):
        assert_close(a, torch.tensor([2**53], dtype=torch.int64))  # equal in float64, not in int64
    assert_close(torch.tensor([1, 2, 3]), torch.tensor([1, 2, 3]))


def test_non_numeric_leaves():
    assert_close({"name": "w", "t": torch.zeros(1)}, {"name": "w", "t": torch.zeros(1)})
    with pytest.raises(AssertionError, match="values differ"):
        assert_close({"name": "w"}, {"name": "b"})


# --------------------------------------------------------------------------------------------------------
# assert_close_to_reference
# --------------------------------------------------------------------------------------------------------


def _softmax_case(dtype, n=1024, rows=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(rows, n, generator=g) * 3).to(dtype)
    golden = torch.softmax(x.double(), dim=-1)
    reference = torch.softmax(x.float(), dim=-1).to(dtype)
    return x, reference, golden


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_reference_mode_passes_kernel_as_accurate_as_reference(dtype):
    x, reference, golden = _softmax_case(dtype)
    # "kernel": a different but equally accurate computation (exp/sum in float32, divide, round once)
    e = torch.exp(x.float() - x.float().amax(-1, keepdim=True))
    kernel = (e / e.sum(-1, keepdim=True)).to(dtype)
    assert_close_to_reference(kernel, reference, golden)
    assert_close_to_reference(
        {"y": kernel, "z": [kernel]}, {"z": [reference], "y": reference}, {"y": golden, "z": [golden]}
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_reference_mode_fails_kernel_ten_times_worse(dtype):
    x, reference, golden = _softmax_case(dtype)
    ref_err = reference.double() - golden
    kernel = (
        golden
        + 10
        * ref_err.abs().clamp_min(torch.finfo(dtype).eps * golden.abs())
        * torch.sign(
            torch.randn(golden.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        )
    ).to(dtype)
    with pytest.raises(AssertionError) as info:
        assert_close_to_reference(kernel, reference, golden)
    text = str(info.value)
    assert "normwise" in text and "elementwise" in text and "FAIL" in text
    assert "ratio" in text and "factor: 2" in text
    assert f"eps of {dtype}" in text
    assert re.search(r"worst element of actual at index \(\d+, \d+\): actual=.*, reference=.*, golden=", text)


def test_reference_mode_floor_allows_one_rounding_of_an_exact_reference():
    golden = torch.linspace(-3, 3, 1001, dtype=torch.float64)
    exact = golden.to(torch.float32).double()  # representable values: reference error zero
    reference = exact.to(torch.float32)
    one_ulp_off = torch.nextafter(reference, torch.full_like(reference, math.inf))
    assert_close_to_reference(one_ulp_off, reference, exact)
    with pytest.raises(AssertionError):
        assert_close_to_reference(reference + 1e-3, reference, exact)
    # explicit floor override
    assert_close_to_reference(reference + 1e-3, reference, exact, floor=1e-3)


def test_reference_mode_floor_doubles_for_bf16_under_the_interpreter(monkeypatch):
    # Two bf16 roundings by truncation (the interpreter's fp32 -> bf16) can be 2 ulp off an exact
    # reference: allowed under TRITON_INTERPRET=1, not on hardware that rounds to nearest.
    golden = torch.linspace(1.0, 1.9, 101, dtype=torch.float64).to(torch.bfloat16).double()
    reference = golden.to(torch.bfloat16)
    two_ulp_off = reference.float() - 2 * 2.0**-7
    two_ulp_off = two_ulp_off.to(torch.bfloat16)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(AssertionError, match="default: eps of torch.bfloat16"):
        assert_close_to_reference(two_ulp_off, reference, golden)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert_close_to_reference(two_ulp_off, reference, golden)
    four_ulp_off = (reference.float() - 4 * 2.0**-7).to(torch.bfloat16)
    with pytest.raises(AssertionError, match="truncation"):
        assert_close_to_reference(four_ulp_off, reference, golden)


def test_reference_mode_nonfinite_actual_fails():
    golden = torch.linspace(0.5, 1.5, 8, dtype=torch.float64)
    reference = golden.to(torch.float32)
    actual = reference.clone()
    actual[5] = math.nan
    with pytest.raises(
        AssertionError, match=r"1 NaN/inf values in actual where golden is finite, first at index \(5,\)"
    ):
        assert_close_to_reference(actual, reference, golden)


def test_reference_mode_shape_and_key_mismatch():
    g = torch.zeros(4, dtype=torch.float64)
    with pytest.raises(AssertionError, match="shape mismatch"):
        assert_close_to_reference(torch.zeros(4, 1), torch.zeros(4), g)
    with pytest.raises(AssertionError, match="'b' is missing from golden"):
        assert_close_to_reference({"a": g, "b": g}, {"a": g, "b": g}, {"a": g})

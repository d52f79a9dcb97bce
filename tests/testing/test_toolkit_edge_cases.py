"""The toolkit's own blind spots: complex values, bad tolerances, huge integers, meta tensors, and bad
strategy arguments; and a property test of ``assert_close`` against ``torch.testing.assert_close``."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liger_testing import assert_close
from liger_testing import strategies as lst

# --------------------------------------------------------------------------------------------------------
# assert_close
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=str)
def test_complex_values_differing_in_the_imaginary_part_fail(dtype):
    a = torch.tensor([1 + 1j, 2 - 1j], dtype=dtype)
    with pytest.raises(AssertionError, match=r"greatest absolute error: 1\.000e\+00"):
        assert_close(a, a + 1j, atol=0.5, rtol=0.0)
    assert_close(a, a + 0.25j, atol=0.5, rtol=0.0)
    with pytest.raises(AssertionError):  # the modulus of the difference: 0.3 + 0.4j is 0.5 away
        assert_close(a, a + (0.3 + 0.4j), atol=0.49, rtol=0.0)


@pytest.mark.parametrize("name", ["atol", "rtol"])
@pytest.mark.parametrize("value", [float("nan"), -1e-3, -math.inf])
def test_nan_and_negative_tolerances_raise_naming_the_argument(name, value):
    tols = {"atol": 0.0, "rtol": 0.0, name: value}
    with pytest.raises(ValueError, match=rf"^{name} must be a number >= 0"):
        assert_close(torch.ones(2), torch.full((2,), 5.0), **tols)


def test_non_numeric_tolerance_is_a_type_error():
    with pytest.raises(TypeError, match="atol must be a real number"):
        assert_close(torch.ones(2), torch.ones(2), atol="1e-3", rtol=0.0)


@pytest.mark.parametrize("tols", [{}, {"atol": 0.5, "rtol": 0.0}], ids=["default", "atol=0.5"])
def test_int64_beyond_2_53_is_compared_exactly(tols):
    """torch.testing passes 2**62 against 2**62 + 1 with atol=0.5 (it rounds to float); we fail, and
    report the error exactly."""
    a, e = torch.tensor([2**62]), torch.tensor([2**62 + 1])
    with pytest.raises(AssertionError) as info:
        assert_close(a, e, **tols)
    text = str(info.value)
    assert "greatest absolute error: 1.000e+00" in text
    assert "actual=4611686018427387904, expected=4611686018427387905" in text


def test_int64_extremes_do_not_overflow_the_report():
    a, e = torch.tensor([2**63 - 1]), torch.tensor([-(2**63)])
    with pytest.raises(AssertionError, match=r"greatest absolute error: 1\.845e\+19"):
        assert_close(a, e, atol=1.0, rtol=0.0)


def test_meta_tensors_are_reported_like_torch_testing():
    meta = torch.empty(3, device="meta")
    assert_close(meta, torch.empty(3, device="meta"))  # nothing to compare, as torch.testing
    for actual, expected in ((meta, torch.zeros(3)), (torch.zeros(3), meta)):
        with pytest.raises(AssertionError, match="device mismatch"):
            assert_close(actual, expected)
        with pytest.raises(AssertionError, match="device"):
            torch.testing.assert_close(actual, expected)
    with pytest.raises(AssertionError, match="shape mismatch"):
        assert_close(meta, torch.empty(4, device="meta"))


# --------------------------------------------------------------------------------------------------------
# property: the same verdict as torch.testing.assert_close
# --------------------------------------------------------------------------------------------------------

_GRID = st.integers(-64, 64).map(lambda k: k / 8)  # dyadic: every |a - e| and bound is exact in bf16
_SPECIAL = st.sampled_from([math.nan, math.inf, -math.inf])
# Powers of two (and 0): rtol * |e| is exact, also as |rtol * e| (torch's form) for complex e.
_TOLS = st.sampled_from([0.0, 0.125, 0.25, 0.5, 1.0, 2.0])
_RTOLS = st.sampled_from([0.0, 0.125, 0.25, 0.5, 1.0])
_DTYPES = (
    torch.float64,
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int16,
    torch.complex128,
)


def _element(dtype: torch.dtype):
    if dtype.is_complex:
        part = st.one_of(_GRID, _GRID, _SPECIAL)
        return st.builds(complex, part, part)
    if dtype.is_floating_point:
        return st.one_of(_GRID, _GRID, _GRID, _SPECIAL)
    return st.integers(-64, 64)


@st.composite
def _pairs(draw):
    dtype = draw(st.sampled_from(_DTYPES))
    shape = draw(st.sampled_from([(), (0,), (1,), (3,), (2, 3)]))
    n = math.prod(shape)
    actual = draw(st.lists(_element(dtype), min_size=n, max_size=n))
    # Half the time expected is actual with a few small changes: near the tolerance boundary.
    if draw(st.booleans()):
        expected = [
            v + draw(st.sampled_from([0, 0, 0.125, -0.25, 1, 2] if dtype != torch.int16 else [0, 0, 1, -2]))
            for v in actual
        ]
    else:
        expected = draw(st.lists(_element(dtype), min_size=n, max_size=n))
    as_tensor = lambda values: torch.tensor(values, dtype=dtype).reshape(shape)  # noqa: E731
    return as_tensor(actual), as_tensor(expected)


def _passes(check) -> bool:
    try:
        check()
    except AssertionError:
        return False
    return True


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(pair=_pairs(), atol=_TOLS, rtol=_RTOLS, equal_nan=st.booleans())
def test_same_verdict_as_torch_testing(pair, atol, rtol, equal_nan):
    """With the same explicit tolerances (values where both compute exactly), ours passes exactly when
    torch's passes. (Where ours is stricter by design -- int64 beyond 2**53 -- see above.)"""
    actual, expected = pair
    kwargs = {"atol": atol, "rtol": rtol, "equal_nan": equal_nan}
    ours = _passes(lambda: assert_close(actual, expected, **kwargs))
    theirs = _passes(lambda: torch.testing.assert_close(actual, expected, **kwargs))
    assert ours == theirs, f"liger_testing {'passes' if ours else 'fails'}, torch.testing does not"


# --------------------------------------------------------------------------------------------------------
# strategies: bad arguments raise clear errors
# --------------------------------------------------------------------------------------------------------


def _draw(strategy):
    """Draw one example (raising what the strategy raises)."""
    found = []

    @settings(max_examples=1, database=None)
    @given(strategy)
    def run(value):
        found.append(value)

    run()
    return found[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64], ids=str)
def test_tensors_with_low_above_high_raise(dtype):
    with pytest.raises(ValueError, match="need low <= high, got low=5"):
        lst.tensors((3,), dtype, device="cpu", low=5, high=1)


@pytest.mark.parametrize("bound", [math.nan, math.inf])
def test_tensors_with_non_finite_bounds_raise(bound):
    with pytest.raises(ValueError, match="high must be a finite number"):
        lst.tensors((3,), torch.float32, device="cpu", high=bound)


def test_tensors_draw_their_dtype_from_a_strategy():
    t = _draw(lst.tensors((3,), lst.dtypes(torch.float16), device="cpu"))
    assert t.dtype == torch.float16


@pytest.mark.parametrize("dtype", ["float32", torch.float32.itemsize])
def test_tensors_with_a_non_dtype_raise_a_type_error(dtype):
    with pytest.raises(TypeError, match="tensors: dtype must be a torch.dtype"):
        lst.tensors((3,), dtype, device="cpu")
    with pytest.raises(TypeError, match="tensors: dtype must be a torch.dtype"):
        _draw(lst.tensors((3,), st.just(dtype), device="cpu"))
    with pytest.raises(TypeError, match="dtypes: each candidate must be a torch.dtype"):
        lst.dtypes(dtype)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((4, 0), "vocab_size must be an int >= 1"),
        ((-1, 5), "n must be an int >= 0"),
        ((4, 5, 2.0), "ignore_fraction must be in"),
    ],
)
def test_labels_with_bad_arguments_raise(args, match):
    n, vocab, *frac = args
    with pytest.raises(ValueError, match=match):
        lst.labels(n, vocab, device="cpu", ignore_fraction=frac[0] if frac else 0.0)


def test_labels_with_a_drawn_negative_count_raise():
    with pytest.raises(ValueError, match="labels: n must be an int >= 0"):
        _draw(lst.labels(st.just(-2), 5, device="cpu"))


def test_shapes_with_min_side_above_max_side_raise():
    with pytest.raises(ValueError, match="need 0 <= min_side <= max_side"):
        lst.shapes(min_side=5, max_side=2)

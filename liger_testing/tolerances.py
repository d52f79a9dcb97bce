"""Default comparison tolerances per dtype, derived from each dtype's machine epsilon.

Every floating dtype gets a nonzero ``(atol, rtol)`` pair, written as a small multiple of its machine
epsilon ``eps = 2**-mantissa_bits`` (the gap between 1.0 and the next representable value; the unit
roundoff of round-to-nearest is ``eps / 2``).

Derivation:

* Low-precision dtypes (float16, bfloat16, fp8) are computed in fp32 by well written kernels and
  rounded to the storage dtype at the end. Kernel output and reference output are then each rounded
  once (relative error <= eps / 2 each, so <= eps between them); one more rounding of an
  intermediate stored in the low-precision dtype (a common, legitimate implementation choice) adds
  up to eps again. fp32 accumulation error is far below eps of these dtypes. Hence ``rtol = 2 * eps``.
  For values near zero (results of cancellation between O(1) operands) the absolute error is about
  one ulp of an O(1) value, hence ``atol = eps``.
* float32 is accumulated in float32 itself, so besides the final rounding the result carries the
  accumulation error of reductions (about ``sqrt(n) * eps / 2`` for pairwise/blocked sums of
  ``n`` thousands of terms) and a few ulps from fast transcendental approximations (``exp``,
  ``rsqrt``) in GPU math libraries: ``rtol = atol = 16 * eps`` (about 1.9e-6).
* float64 is used for golden references; reductions of up to ~1e4 terms in different orders
  stay within ``64 * eps`` (about 1.4e-14): ``rtol = atol = 64 * eps``.

Integer and bool dtypes compare exactly: ``(0, 0)``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["Tolerance", "tolerances", "machine_eps"]


class Tolerance(NamedTuple):
    """An absolute and a relative tolerance; elementwise criterion ``|a - e| <= atol + rtol * |e|``."""

    atol: float
    rtol: float


# (dtype name, explicit mantissa bits, atol multiple of eps, rtol multiple of eps).
# Mantissa bits are written out instead of read from torch.finfo because some torch versions report
# an eps for the fnuz fp8 variants that does not match their 2 or 3 stored mantissa bits.
_FLOAT_TABLE: tuple[tuple[str, int, float, float], ...] = (
    ("float64", 52, 64.0, 64.0),
    ("float32", 23, 16.0, 16.0),
    ("float16", 10, 1.0, 2.0),
    ("bfloat16", 7, 1.0, 2.0),
    ("float8_e4m3fn", 3, 1.0, 2.0),
    ("float8_e4m3fnuz", 3, 1.0, 2.0),
    ("float8_e5m2", 2, 1.0, 2.0),
    ("float8_e5m2fnuz", 2, 1.0, 2.0),
)

_EPS: dict[torch.dtype, float] = {}
_TOLERANCES: dict[torch.dtype, Tolerance] = {}
for _name, _mantissa_bits, _atol_mult, _rtol_mult in _FLOAT_TABLE:
    _dtype = getattr(torch, _name, None)
    if _dtype is None:  # this torch build lacks the dtype (older fp8 variants)
        continue
    _eps = 2.0**-_mantissa_bits
    _EPS[_dtype] = _eps
    _TOLERANCES[_dtype] = Tolerance(atol=_atol_mult * _eps, rtol=_rtol_mult * _eps)

_EXACT_DTYPES: frozenset[torch.dtype] = frozenset(
    d
    for d in (
        torch.bool,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        getattr(torch, "uint16", None),
        getattr(torch, "uint32", None),
        getattr(torch, "uint64", None),
    )
    if d is not None
)


def tolerances(dtype: torch.dtype) -> Tolerance:
    """Return the default :class:`Tolerance` for comparing results of ``dtype``.

    Floating dtypes get ``atol``/``rtol`` as small multiples of their machine epsilon (see the module
    docstring for the derivation); integer and bool dtypes get ``Tolerance(0.0, 0.0)`` (exact).

    Raises:
        TypeError: if ``dtype`` is not in the table (for example complex dtypes or exotic fp8/fp4
            formats), naming the dtype.
    """
    if dtype in _TOLERANCES:
        return _TOLERANCES[dtype]
    if dtype in _EXACT_DTYPES:
        return Tolerance(0.0, 0.0)
    raise TypeError(
        f"liger_testing.tolerances: no default tolerance for dtype {dtype!r}; pass atol= and rtol= explicitly"
    )


def machine_eps(dtype: torch.dtype) -> float:
    """Machine epsilon ``2**-mantissa_bits`` of a floating dtype in the table; 0.0 for integer/bool dtypes.

    Raises:
        TypeError: for dtypes without a table entry.
    """
    if dtype in _EPS:
        return _EPS[dtype]
    if dtype in _EXACT_DTYPES:
        return 0.0
    raise TypeError(f"liger_testing.tolerances: unknown dtype {dtype!r}")


def looser(a: Tolerance, b: Tolerance) -> Tolerance:
    """The elementwise looser (larger) of two tolerances."""
    return Tolerance(atol=max(a.atol, b.atol), rtol=max(a.rtol, b.rtol))

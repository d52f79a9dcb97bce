"""Assertions for comparing kernel outputs: plain tolerance mode and reference-error mode."""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

import torch

from liger_testing._tree import zip_trees
from liger_testing.tolerances import Tolerance, looser, machine_eps, tolerances

__all__ = ["assert_close", "assert_close_to_reference", "default_floor"]

_INDENT = "    "


# ----------------------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------------------


def _is_scalar(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, torch.Tensor)


def _scalar_to_tensor(x: numbers.Real) -> torch.Tensor:
    if isinstance(x, bool):
        return torch.tensor(x, dtype=torch.bool)
    if isinstance(x, numbers.Integral):
        return torch.tensor(int(x), dtype=torch.int64)
    return torch.tensor(float(x), dtype=torch.float64)


def _unravel(flat_index: int, shape: torch.Size) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        index.append(flat_index % size)
        flat_index //= size
    return tuple(reversed(index))


def _fmt_index(flat_index: int, shape: torch.Size) -> str:
    return str(_unravel(int(flat_index), shape))


def _fmt_value(v: float, dtype: torch.dtype) -> str:
    if dtype == torch.float64:
        return repr(float(v))
    if not dtype.is_floating_point:
        return str(int(v)) if math.isfinite(v) else repr(v)
    return f"{float(v):.9g}"


def _fmt_element(v: torch.Tensor) -> str:
    """One element, exactly for integers (int64 beyond 2**53 too), as in its dtype otherwise."""
    if v.dtype.is_complex:
        return repr(complex(v.item()))
    return _fmt_value(v.item(), v.dtype)


def _is_inexact(dtype: torch.dtype) -> bool:
    return dtype.is_floating_point or dtype.is_complex


def _integer_abs_diff(a: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """|a - e| of integer (or bool) tensors in float64, without the int64 overflow of a - e: exact
    where both have one sign (the int64 difference cannot overflow), |a| + |e| otherwise (no
    cancellation: correctly rounded)."""
    a, e = a.to(torch.int64), e.to(torch.int64)
    same_sign = (a >= 0) == (e >= 0)
    exact = torch.where(same_sign, a - e, torch.zeros_like(a)).abs().to(torch.float64)
    apart = a.to(torch.float64).abs() + e.to(torch.float64).abs()
    return torch.where(same_sign, exact, apart)


def _check_tolerance(name: str, value: Any) -> None:
    """A given tolerance must be a real number >= 0 (NaN would make every comparison pass)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number or None, got {type(value).__name__} {value!r}")
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be a number >= 0 (or None for the default), got {value!r}")


def _fmt_err(v: float) -> str:
    return f"{float(v):.3e}"


def _as_cpu_f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(device="cpu").to(torch.float64)


def _first_index(mask: torch.Tensor, shape: torch.Size) -> str:
    flat = torch.nonzero(mask.reshape(-1), as_tuple=False)
    return _fmt_index(int(flat[0, 0]), shape)


def _raise(title: str, msg: str | None, failures: list[str]) -> None:
    parts = [title]
    if msg:
        parts.append(msg)
    parts.extend(failures)
    raise AssertionError("\n\n".join(parts))


# ----------------------------------------------------------------------------------------------------------
# assert_close
# ----------------------------------------------------------------------------------------------------------


def _default_tolerance(dtypes: list[torch.dtype]) -> tuple[Tolerance, str]:
    tols = [tolerances(d) for d in dtypes]
    tol = tols[0]
    for t in tols[1:]:
        tol = looser(tol, t)
    unique = list(dict.fromkeys(dtypes))
    if len(unique) == 1:
        return tol, f"default for {unique[0]}"
    return tol, f"default, looser of {' and '.join(str(d) for d in unique)}"


def _compare_leaf(
    path: str,
    actual: Any,
    expected: Any,
    *,
    atol: float | None,
    rtol: float | None,
    equal_nan: bool,
    check_dtype: bool,
    check_shape: bool,
) -> str | None:
    a_is_t, e_is_t = isinstance(actual, torch.Tensor), isinstance(expected, torch.Tensor)
    a_is_s, e_is_s = _is_scalar(actual), _is_scalar(expected)
    if not (a_is_t or a_is_s) or not (e_is_t or e_is_s):
        # Non-numeric leaves (None, strings, ...) must be equal.
        if actual is None and expected is None:
            return None
        if (a_is_t or a_is_s) != (e_is_t or e_is_s):
            return (
                f"{path}: type mismatch: actual is {type(actual).__name__}, "
                f"expected is {type(expected).__name__}"
            )
        if actual == expected:
            return None
        return f"{path}: values differ: actual={actual!r}, expected={expected!r}"

    # Python scalars are "weakly typed": they take the tensor side's dtype for tolerances and are not
    # subject to the dtype check.
    a = actual if a_is_t else _scalar_to_tensor(actual)
    e = expected if e_is_t else _scalar_to_tensor(expected)
    problems = []
    if a.shape != e.shape:
        if check_shape or a.numel() != e.numel():
            problems.append(f"shape mismatch: actual {tuple(a.shape)} vs expected {tuple(e.shape)}")
        else:
            e = e.reshape(a.shape)
    if check_dtype and a_is_t and e_is_t and a.dtype != e.dtype:
        problems.append(
            f"dtype mismatch: actual {a.dtype} vs expected {e.dtype} "
            "(pass check_dtype=False to compare across dtypes)"
        )
    if problems:
        return f"{path}: " + "; ".join(problems)

    if a_is_t and e_is_t:
        tol_dtypes = [a.dtype, e.dtype]
    elif a_is_t:
        tol_dtypes = [a.dtype]
    elif e_is_t:
        tol_dtypes = [e.dtype]
    else:
        tol_dtypes = [a.dtype, e.dtype]
    if atol is None or rtol is None:
        default, default_desc = _default_tolerance(tol_dtypes)
        used_atol = default.atol if atol is None else atol
        used_rtol = default.rtol if rtol is None else rtol
        if atol is None and rtol is None:
            tol_desc = default_desc
        elif atol is None:
            tol_desc = f"rtol given, atol {default_desc}"
        else:
            tol_desc = f"atol given, rtol {default_desc}"
    else:
        used_atol, used_rtol, tol_desc = atol, rtol, "given"

    shape = a.shape
    n = a.numel()
    if a.is_meta or e.is_meta:
        if a.is_meta and e.is_meta:
            return None  # as torch.testing: meta tensors hold no values; shape and dtype were checked
        return (
            f"{path}: device mismatch: actual on {a.device} vs expected on {e.device} "
            "(a meta tensor holds no values to compare)"
        )
    if n == 0:
        return None
    a_cpu = a.detach().to("cpu")
    e_cpu = e.detach().to("cpu")

    if a.dtype.is_complex or e.dtype.is_complex:
        # |actual - expected| is the modulus of the complex difference (as torch.isclose).
        a64, e64 = a_cpu.to(torch.complex128), e_cpu.to(torch.complex128)
    else:
        a64, e64 = a_cpu.to(torch.float64), e_cpu.to(torch.float64)
    if not _is_inexact(a.dtype) and not _is_inexact(e.dtype):
        # Integers/bools: exact differences (float64 alone would round int64 beyond 2**53).
        diff_all = _integer_abs_diff(a_cpu, e_cpu)
        value_bad = (a_cpu != e_cpu) & (diff_all > used_atol + used_rtol * e64.abs())
        nan_bad = torch.zeros_like(value_bad)
        inf_bad = torch.zeros_like(value_bad)
        finite = torch.ones_like(value_bad)
    else:
        a_nan, e_nan = torch.isnan(a64), torch.isnan(e64)
        nan_bad = (a_nan != e_nan) if equal_nan else (a_nan | e_nan)
        any_nan = a_nan | e_nan
        a_inf, e_inf = torch.isinf(a64), torch.isinf(e64)
        inf_bad = (a_inf | e_inf) & ~any_nan & (a64 != e64)
        finite = torch.isfinite(a64) & torch.isfinite(e64)
        diff_all = (a64 - e64).abs()
        value_bad = finite & (diff_all > used_atol + used_rtol * e64.abs())

    bad = value_bad | nan_bad | inf_bad
    n_bad = int(bad.sum())
    if n_bad == 0:
        return None

    lines = [f"{path}: {n_bad} / {n} elements ({100.0 * n_bad / n:.3g}%) mismatched"]
    if bool(finite.any()):
        diff = torch.where(finite, diff_all, torch.zeros_like(diff_all))
        i_abs = int(torch.argmax(diff.reshape(-1)))
        denom = e64.abs()
        rel = torch.where(
            diff == 0, torch.zeros_like(diff), diff / torch.where(denom == 0, torch.zeros_like(denom), denom)
        )
        rel = torch.where(finite, rel, torch.zeros_like(rel))
        i_rel = int(torch.argmax(rel.reshape(-1)))
        af, ef, df, rf = a_cpu.reshape(-1), e_cpu.reshape(-1), diff.reshape(-1), rel.reshape(-1)
        lines.append(
            f"{_INDENT}greatest absolute error: {_fmt_err(df[i_abs])} at index {_fmt_index(i_abs, shape)}"
            f" (actual={_fmt_element(af[i_abs])}, expected={_fmt_element(ef[i_abs])})"
        )
        lines.append(
            f"{_INDENT}greatest relative error: {_fmt_err(rf[i_rel])} at index {_fmt_index(i_rel, shape)}"
            f" (actual={_fmt_element(af[i_rel])}, expected={_fmt_element(ef[i_rel])})"
        )
    n_value = int(value_bad.sum())
    if n_value and (nan_bad.any() or inf_bad.any()):
        lines.append(f"{_INDENT}{n_value} value mismatches, first at index {_first_index(value_bad, shape)}")
    n_nan = int(nan_bad.sum())
    if n_nan:
        what = "NaN mismatches" if equal_nan else "NaN mismatches (equal_nan=False)"
        lines.append(f"{_INDENT}{n_nan} {what}, first at index {_first_index(nan_bad, shape)}")
    n_inf = int(inf_bad.sum())
    if n_inf:
        lines.append(f"{_INDENT}{n_inf} inf mismatches, first at index {_first_index(inf_bad, shape)}")
    lines.append(f"{_INDENT}tolerance: atol={used_atol:.3e}, rtol={used_rtol:.3e} ({tol_desc})")
    return "\n".join(lines)


def assert_close(
    actual: Any,
    expected: Any,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    equal_nan: bool = False,
    check_dtype: bool = True,
    check_shape: bool = True,
    msg: str | None = None,
) -> None:
    """Assert that ``actual`` and ``expected`` are elementwise close.

    Both arguments may be tensors, Python numbers, or nested lists/tuples (matched by position, the
    lengths must agree) and dicts/Mappings (matched by key; missing and extra keys are reported by
    name) of them. Every leaf is compared on CPU in float64 (complex128 for complex leaves, where
    ``|.|`` is the modulus of the complex difference) with the criterion
    ``|actual - expected| <= atol + rtol * |expected|``, as ``torch.testing.assert_close`` (given the
    same tolerances, the two agree) with two differences by design: integer leaves are compared
    exactly (torch rounds int64 beyond 2**53 to float, so 2**62 and 2**62 + 1 pass its
    ``atol=0.5``; here they fail, with an absolute error of 1), and devices are not compared (a CUDA
    result may be checked against a CPU reference) except that a meta tensor, which holds no values,
    only matches another meta tensor (shapes and dtypes are then checked, as torch does).

    Args:
        actual: the result under test (e.g. a kernel output).
        expected: the reference result.
        atol: absolute tolerance; default from :func:`liger_testing.tolerances` of the leaf's dtype
            (the looser of actual's and expected's dtype when they differ).
        rtol: relative tolerance; default as for ``atol``.
        equal_nan: treat NaN in both at the same position as equal. A NaN on one side only is
            always a mismatch.
        check_dtype: require equal tensor dtypes (Python scalars are exempt).
        check_shape: require equal shapes. With ``False`` shapes may differ if the element counts
            agree (expected is reshaped to actual's shape); nothing is ever broadcast.
        msg: extra text prepended to the failure message.

    Raises:
        AssertionError: listing every failing leaf with its path (``actual['weight']``,
            ``actual[1]``), the mismatch count and fraction, the greatest absolute and relative
            errors with their indices and values, NaN/inf mismatches, and the tolerances used.
        TypeError: when no default tolerance exists for a dtype and none was given, or a tolerance is
            not a real number.
        ValueError: when ``atol`` or ``rtol`` is NaN or negative (NaN would pass anything).
    """
    _check_tolerance("atol", atol)
    _check_tolerance("rtol", rtol)
    leaves, structure_errors = zip_trees((actual, expected), ("actual", "expected"))
    failures = list(structure_errors)
    for path, (a, e) in leaves:
        failure = _compare_leaf(
            path,
            a,
            e,
            atol=atol,
            rtol=rtol,
            equal_nan=equal_nan,
            check_dtype=check_dtype,
            check_shape=check_shape,
        )
        if failure is not None:
            failures.append(failure)
    if failures:
        _raise(f"assert_close: {len(failures)} problem(s) among {len(leaves)} compared leaves", msg, failures)


# ----------------------------------------------------------------------------------------------------------
# assert_close_to_reference
# ----------------------------------------------------------------------------------------------------------


def _ratio(num: float, den: float) -> str:
    if den == 0:
        return "inf" if num > 0 else "n/a (both zero)"
    return f"{num / den:.3g}"


def _interpreter_truncates(actual: torch.Tensor) -> bool:
    """Whether ``actual`` is a bf16 CPU result of Triton's interpreter, which converts fp32 to bf16 by
    dropping the low mantissa bits (triton 3.x ``_convert_float`` without a rounding mode)."""
    return (
        actual.dtype == torch.bfloat16
        and actual.device.type == "cpu"
        and os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    )


def default_floor(actual: torch.Tensor) -> float:
    """The default relative floor of ``assert_close_to_reference`` for a kernel result ``actual``: the
    machine epsilon of its dtype, twice that for bf16 on the CPU under Triton's interpreter."""
    eps = machine_eps(actual.dtype)
    return 2.0 * eps if _interpreter_truncates(actual) else eps


def _compare_reference_leaf(
    path: str,
    actual: Any,
    reference: Any,
    golden: Any,
    *,
    factor: float,
    floor: float | None,
    roundings: float | None = None,
    terms_scale: Any = None,
) -> str | None:
    tensors = []
    for name, x in (("actual", actual), ("reference", reference), ("golden", golden)):
        if isinstance(x, torch.Tensor):
            tensors.append(x)
        elif _is_scalar(x):
            tensors.append(_scalar_to_tensor(x))
        else:
            return f"{path}: {name} is {type(x).__name__}, expected a tensor or a number"
    a, r, g = tensors
    if not (a.shape == r.shape == g.shape):
        return (
            f"{path}: shape mismatch: actual {tuple(a.shape)}, reference {tuple(r.shape)}, "
            f"golden {tuple(g.shape)}"
        )
    shape = a.shape
    if a.numel() == 0:
        return None

    if roundings is not None:
        unit = default_floor(a) / 2.0  # half an ulp per rounding; a whole one where the interpreter truncates
        floor_rel = float(roundings) * unit
        floor_desc = f"{floor_rel:.3e} (given: {roundings:g} roundings of {unit:.3e})"
    elif floor is None:
        floor_rel = default_floor(a)
        floor_desc = f"{floor_rel:.3e} (default: eps of {a.dtype})"
        if _interpreter_truncates(a):
            floor_desc = (
                f"{floor_rel:.3e} (default: 2 x eps of {a.dtype}: Triton's interpreter rounds fp32 -> bf16 "
                "by truncation, up to 1 ulp where the hardware's round-to-nearest gives 1/2)"
            )
    else:
        floor_rel = float(floor)
        floor_desc = f"{floor_rel:.3e} (given)"

    a64, r64, g64 = _as_cpu_f64(a), _as_cpu_f64(r), _as_cpu_f64(g)
    lines: list[str] = []

    g_finite = torch.isfinite(g64)
    a_bad_nonfinite = g_finite & ~torch.isfinite(a64)
    # Where golden itself is NaN/inf, actual must reproduce it exactly.
    a_bad_special = ~g_finite & ~((a64 == g64) | (torch.isnan(a64) & torch.isnan(g64)))
    n_nonfinite = int(a_bad_nonfinite.sum())
    if n_nonfinite:
        lines.append(
            f"{_INDENT}{n_nonfinite} NaN/inf values in actual where golden is finite, "
            f"first at index {_first_index(a_bad_nonfinite, shape)}"
        )
    n_special = int(a_bad_special.sum())
    if n_special:
        lines.append(
            f"{_INDENT}{n_special} elements where golden is NaN/inf and actual differs, "
            f"first at index {_first_index(a_bad_special, shape)}"
        )

    # Metrics over positions where golden and actual are finite. Reference errors are taken over the
    # positions where the reference is finite too (a reference that overflows must not make any
    # kernel pass, nor make a better kernel fail).
    mask_a = g_finite & torch.isfinite(a64)
    mask_r = g_finite & torch.isfinite(r64)
    zeros = torch.zeros_like(g64)
    err_a = torch.where(mask_a, (a64 - g64).abs(), zeros)
    err_r = torch.where(mask_r, (r64 - g64).abs(), zeros)
    g_fin = torch.where(g_finite, g64, zeros)

    norm_a = float(torch.linalg.vector_norm(err_a))
    norm_r = float(torch.linalg.vector_norm(err_r))
    if terms_scale is not None:
        # The floor scales with the terms the formula combines, not with its (possibly cancelled) result.
        scale = torch.as_tensor(terms_scale, dtype=torch.float64).detach().cpu().abs().expand(shape)
        g_fin = torch.where(g_finite & torch.isfinite(scale), scale, zeros)
        floor_desc += ", relative to terms_scale"
    norm_g = float(torch.linalg.vector_norm(g_fin))
    max_a = float(err_a.max())
    max_r = float(err_r.max())
    max_g = float(g_fin.abs().max())

    bound_norm = factor * norm_r + floor_rel * norm_g
    bound_max = factor * max_r + floor_rel * max_g
    norm_ok = norm_a <= bound_norm
    max_ok = max_a <= bound_max

    if norm_ok and max_ok and not lines:
        return None

    i_worst = int(torch.argmax(err_a.reshape(-1)))
    header = f"{path}: kernel error exceeds factor * reference error + floor"
    out = [header, *lines]
    out.append(
        f"{_INDENT}normwise:   ||actual-golden||_2 = {_fmt_err(norm_a)}, ||reference-golden||_2 = "
        f"{_fmt_err(norm_r)}, ratio {_ratio(norm_a, norm_r)}; bound = {factor:g} * {_fmt_err(norm_r)} "
        f"+ floor * ||golden||_2 ({_fmt_err(floor_rel * norm_g)}) = {_fmt_err(bound_norm)} "
        f"-> {'ok' if norm_ok else 'FAIL'}"
    )
    out.append(
        f"{_INDENT}elementwise: max|actual-golden| = {_fmt_err(max_a)}, max|reference-golden| = "
        f"{_fmt_err(max_r)}, ratio {_ratio(max_a, max_r)}; bound = {factor:g} * {_fmt_err(max_r)} "
        f"+ floor * max|golden| ({_fmt_err(floor_rel * max_g)}) = {_fmt_err(bound_max)} "
        f"-> {'ok' if max_ok else 'FAIL'}"
    )
    af, rf, gf = a64.reshape(-1), r64.reshape(-1), g64.reshape(-1)
    out.append(
        f"{_INDENT}worst element of actual at index {_fmt_index(i_worst, shape)}: "
        f"actual={_fmt_value(af[i_worst], a.dtype)}, reference={_fmt_value(rf[i_worst], r.dtype)}, "
        f"golden={_fmt_value(gf[i_worst], torch.float64)}"
    )
    out.append(f"{_INDENT}factor: {factor:g}; floor (relative to golden's scale): {floor_desc}")
    return "\n".join(out)


def assert_close_to_reference(
    actual: Any,
    reference: Any,
    golden: Any,
    *,
    factor: float = 2.0,
    floor: float | None = None,
    msg: str | None = None,
    roundings: float | None = None,
    terms_scale: Any = None,
) -> None:
    """Assert that a kernel is at most ``factor`` times less accurate than the PyTorch reference.

    Reference-error mode: instead of a fixed tolerance, the error of ``actual`` (the kernel result)
    against ``golden`` (the same computation in float64 on the same inputs) is compared with the
    error of ``reference`` (the PyTorch result in the same dtype as the kernel) against ``golden``.
    Two metrics must both hold, per leaf::

        ||actual - golden||_2    <= factor * ||reference - golden||_2    + floor_rel * ||golden||_2
        max|actual - golden|     <= factor * max|reference - golden|     + floor_abs

    with ``floor_abs = floor_rel * max|golden|``. The default ``floor_rel`` is the machine epsilon
    of actual's dtype, so that even an exact reference (zero error) still allows the kernel one
    rounding of its result (eps is twice the half-ulp error of round-to-nearest, which leaves room
    for a second rounding, e.g. a gradient stored in bf16 and scaled later). For bf16 results on the
    CPU under Triton's interpreter (``TRITON_INTERPRET=1``), which converts fp32 to bf16 by truncation
    (up to a whole ulp per rounding), the default floor is 2 x eps. ``floor`` overrides ``floor_rel`` (a float relative to the golden's
    scale).

    NaN/inf in ``actual`` where ``golden`` is finite fail; where ``golden`` is NaN/inf, ``actual``
    must hold the same value. Nested tuples/lists/dicts are matched like :func:`assert_close` (dicts
    by key); the three shapes must be equal per leaf.

    Args:
        actual: kernel output.
        reference: PyTorch output in the kernel's dtype (the accuracy the kernel must match).
        golden: high-precision (float64) output of the same computation.
        factor: allowed multiple of the reference's error.
        floor: relative error floor; default eps of actual's dtype.
        msg: extra text prepended to the failure message.
        roundings: derive the floor from the formula instead: the number of roundings the kernel's formula
            makes in actual's dtype, each worth half an ulp of it (``default_floor(actual) / 2``: a whole
            ulp where the interpreter truncates bf16). A kernel that computes in fp32 and rounds once to
            bf16 makes one such rounding (its fp32 ones are 2^16 times smaller). The
            default floor is ``roundings=2``. Where the reference happens to be nearly exact, a kernel
            whose formula rounds a few more times than PyTorch's still passes. Exclusive with ``floor``.
        terms_scale: what the floor is relative to, instead of ``golden``: the magnitude of the largest
            term the formula combines, elementwise (a tensor broadcastable to the leaf, or a tree like
            ``actual`` with such leaves, or None leaves for "golden"). Use it where the result is a
            difference of larger terms, e.g. ``s * (1 + a * (1 - s))`` near its zero, or a norm's dx:
            one rounding of the terms is many ulps of the result there.

    Raises:
        AssertionError: listing each failing leaf with both errors in both metrics, their ratio,
            the factor and floor, and the index of actual's worst element with the actual,
            reference and golden values there.
    """
    if floor is not None and roundings is not None:
        raise ValueError("assert_close_to_reference: give floor or roundings, not both")
    if terms_scale is None or isinstance(terms_scale, (torch.Tensor, numbers.Real)):
        leaves, structure_errors = zip_trees((actual, reference, golden), ("actual", "reference", "golden"))
        leaves = [(path, (*trio, terms_scale)) for path, trio in leaves]
    else:
        leaves, structure_errors = zip_trees(
            (actual, reference, golden, terms_scale), ("actual", "reference", "golden", "terms_scale")
        )
    failures = list(structure_errors)
    for path, (a, r, g, t) in leaves:
        failure = _compare_reference_leaf(
            path, a, r, g, factor=factor, floor=floor, roundings=roundings, terms_scale=t
        )
        if failure is not None:
            failures.append(failure)
    if failures:
        _raise(
            f"assert_close_to_reference: {len(failures)} problem(s) among {len(leaves)} compared leaves",
            msg,
            failures,
        )

"""Hypothesis strategies for kernel inputs.

Device, layout (``contiguous``) and ``requires_grad`` are always chosen by the caller, never drawn.
Tensor values are generated from a drawn seed through a CPU ``torch.Generator`` so that shrinking
works on a single integer and examples reproduce exactly across machines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from liger_testing._optional import require_hypothesis

require_hypothesis("liger_testing.strategies")

from hypothesis import strategies as st  # noqa: E402
from hypothesis.strategies import SearchStrategy  # noqa: E402

__all__ = ["dims", "shapes", "dtypes", "tensors", "labels", "seeds", "DEFAULT_BLOCKS"]

DEFAULT_BLOCKS: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024)
_SMALL_PRIMES: tuple[int, ...] = (2, 3, 5, 7, 11, 13, 17, 31, 61, 127, 257, 509, 1021, 2039, 4093)


def seeds() -> SearchStrategy[int]:
    """Seeds for ``torch.Generator.manual_seed``: integers in ``[0, 2**31 - 1]``."""
    return st.integers(0, 2**31 - 1)


def dims(
    min_value: int = 1, max_value: int = 2048, blocks: Sequence[int] = DEFAULT_BLOCKS
) -> SearchStrategy[int]:
    """Sizes of one tensor dimension, biased toward the values that break blocked kernels.

    Draws half of the time from the "edge" values inside ``[min_value, max_value]`` -- 1, the bounds,
    ``BLOCK - 1``, ``BLOCK`` and ``BLOCK + 1`` for every block size in ``blocks``, and small primes
    (non powers of two) -- and otherwise uniformly from the whole range.
    """
    if min_value < 0 or max_value < min_value:
        raise ValueError(f"dims: need 0 <= min_value <= max_value, got {min_value}, {max_value}")
    edges = {1, min_value, max_value, *_SMALL_PRIMES}
    for b in blocks:
        edges.update((b - 1, b, b + 1))
    in_range = sorted(v for v in edges if min_value <= v <= max_value)
    return st.one_of(st.sampled_from(in_range), st.integers(min_value, max_value))


@st.composite
def _shapes(
    draw: st.DrawFn,
    min_dims: int,
    max_dims: int,
    min_side: int,
    max_side: int,
    last_dim: SearchStrategy[int] | None,
    max_numel: int | None,
    blocks: Sequence[int],
) -> tuple[int, ...]:
    ndim = draw(st.integers(min_dims, max_dims))
    if ndim == 0:
        return ()
    budget = max_numel if max_numel is not None else None
    last = draw(last_dim) if last_dim is not None else draw(dims(min_side, max_side, blocks))
    sides = [last]
    for _ in range(ndim - 1):
        cap = max_side
        if budget is not None:
            used = 1
            for s in sides:
                used *= max(s, 1)
            cap = max(min_side, min(max_side, budget // used))
        sides.append(draw(dims(min_side, cap, blocks)))
    return tuple(reversed(sides))


def shapes(
    min_dims: int = 1,
    max_dims: int = 3,
    min_side: int = 1,
    max_side: int = 256,
    last_dim: SearchStrategy[int] | None = None,
    *,
    max_numel: int | None = 1 << 16,
    blocks: Sequence[int] = DEFAULT_BLOCKS,
) -> SearchStrategy[tuple[int, ...]]:
    """Tensor shapes whose sides are drawn from :func:`dims`.

    Args:
        min_dims, max_dims: range of the number of dimensions.
        min_side, max_side: range of each side (the leading sides; see ``last_dim``).
        last_dim: optional strategy for the last (usually the reduction) dimension; it is drawn
            first and not capped by ``max_side``.
        max_numel: leading sides are capped so that the product stays within this budget where
            possible (keeps interpreter runs cheap); ``None`` disables the cap.
        blocks: block sizes whose edges :func:`dims` favours.
    """
    if min_dims < 0 or max_dims < min_dims:
        raise ValueError(f"shapes: need 0 <= min_dims <= max_dims, got {min_dims}, {max_dims}")
    if min_side < 0 or max_side < min_side:
        raise ValueError(f"shapes: need 0 <= min_side <= max_side, got {min_side}, {max_side}")
    return _shapes(min_dims, max_dims, min_side, max_side, last_dim, max_numel, tuple(blocks))


def _check_dtype(where: str, dtype: object) -> None:
    if not isinstance(dtype, torch.dtype):
        raise TypeError(
            f"{where} must be a torch.dtype (or, where allowed, a strategy of them such as dtypes(...)), "
            f"got {type(dtype).__name__} {dtype!r}"
        )


def dtypes(*candidates: torch.dtype) -> SearchStrategy[torch.dtype]:
    """One of ``candidates``; defaults to ``torch.float32, torch.bfloat16, torch.float16``."""
    if not candidates:
        candidates = (torch.float32, torch.bfloat16, torch.float16)
    for c in candidates:
        _check_dtype("dtypes: each candidate", c)
    return st.sampled_from(candidates)


_SPECIAL_MODES = ("none", "zero_row", "tiny_row", "large_row")


def _values(
    shape: tuple[int, ...],
    dtype: torch.dtype,
    seed: int,
    low: float,
    high: float,
    special: str,
    special_row: int,
) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    if dtype.is_floating_point:
        x = torch.rand(shape, generator=gen, dtype=torch.float32) * (high - low) + low
        if special != "none" and x.ndim >= 1 and x.numel() > 0:
            rows = x.reshape(-1, x.shape[-1]) if x.ndim >= 2 else x.reshape(1, -1)
            row = special_row % rows.shape[0]
            if special == "zero_row":
                rows[row] = 0.0
            elif special == "tiny_row":
                rows[row] *= 2.0**-10  # power of two: exact unless it reaches subnormals
            elif special == "large_row":
                finite_max = min(torch.finfo(dtype).max, torch.finfo(torch.float32).max)
                rows[row] = (rows[row] * 2.0**6).clamp(-finite_max, finite_max)
        # Casting makes every value exactly representable in dtype.
        return x.to(dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).to(torch.bool)
    lo, hi = math.floor(low), math.floor(high)
    return torch.randint(lo, hi + 1, shape, generator=gen, dtype=torch.int64).to(dtype)


def _non_contiguous_like(values: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A strided view on ``device`` holding ``values``: the last dim of size > 1 is doubled in a larger
    buffer and sliced with step 2. Tensors with at most one element are always contiguous in torch's
    sense, so they come back contiguous."""
    sizes = list(values.shape)
    dim = next((d for d in range(len(sizes) - 1, -1, -1) if sizes[d] > 1), None)
    if dim is None:
        return values.to(device)
    big = list(sizes)
    big[dim] = 2 * sizes[dim]
    # Fill the unused half with NaN so a kernel that ignores strides is caught immediately.
    fill = float("nan") if values.dtype.is_floating_point else 0
    buf = torch.full(big, fill, dtype=values.dtype)
    buf = buf.to(device)  # move the buffer, then slice: .to() on a strided view would densify it
    view = buf.narrow(dim, 0, big[dim])[(slice(None),) * dim + (slice(0, None, 2),)]
    view.copy_(values.to(device))
    return view


@st.composite
def _tensors(
    draw: st.DrawFn,
    shape: tuple[int, ...] | SearchStrategy[tuple[int, ...]],
    dtype: torch.dtype | SearchStrategy[torch.dtype],
    device: torch.device | str,
    requires_grad: bool,
    low: float,
    high: float,
    contiguous: bool,
    special: bool,
) -> torch.Tensor:
    shp = tuple(draw(shape)) if isinstance(shape, SearchStrategy) else tuple(shape)
    dt = draw(dtype) if isinstance(dtype, SearchStrategy) else dtype
    _check_dtype("tensors: dtype", dt)
    seed = draw(seeds())
    mode, row = "none", 0
    if special:
        mode = draw(st.sampled_from(_SPECIAL_MODES))
        row = draw(st.integers(0, 2**16))
    values = _values(shp, dt, seed, low, high, mode, row)
    t = values.to(device) if contiguous else _non_contiguous_like(values, device)
    if requires_grad:
        t.requires_grad_(True)
    return t


def tensors(
    shape: tuple[int, ...] | SearchStrategy[tuple[int, ...]],
    dtype: torch.dtype | SearchStrategy[torch.dtype],
    *,
    device: torch.device | str,
    requires_grad: bool = False,
    low: float = -4.0,
    high: float = 4.0,
    contiguous: bool = True,
    special: bool = False,
) -> SearchStrategy[torch.Tensor]:
    """Tensors whose values are exactly representable in ``dtype``.

    Values are drawn uniformly from ``[low, high]`` in float32 on CPU with a generator seeded by a
    drawn seed, then cast to ``dtype`` (so the tensor equals its own round trip through float64) and
    moved to ``device``. Integer dtypes draw integers in ``[floor(low), floor(high)]``.

    Args:
        shape: a tuple or a strategy of tuples (e.g. :func:`shapes`).
        dtype: a dtype or a strategy of dtypes (e.g. :func:`dtypes`).
        device: target device (from the ``device`` fixture).
        requires_grad: make the result a leaf requiring grad.
        low, high: value range before rounding to ``dtype``.
        contiguous: with ``False`` return a strided (every other element) view of a larger buffer,
            holding the same values; the gaps hold NaN. Tensors of <= 1 element are always
            contiguous in torch's sense.
        special: occasionally zero one row, scale one row down by ``2**-10``, or scale it up by
            ``2**6`` (clamped to the dtype's range).
    """
    if not isinstance(dtype, SearchStrategy):
        _check_dtype("tensors: dtype", dtype)
    for name, bound in (("low", low), ("high", high)):
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
            raise ValueError(f"tensors: {name} must be a finite number, got {bound!r}")
    if low > high:
        raise ValueError(f"tensors: need low <= high, got low={low}, high={high}")
    return _tensors(shape, dtype, device, requires_grad, low, high, contiguous, special)


@st.composite
def _labels(
    draw: st.DrawFn,
    n: int | SearchStrategy[int],
    vocab_size: int,
    device: torch.device | str,
    ignore_index: int,
    ignore_fraction: float | SearchStrategy[float],
) -> torch.Tensor:
    count = draw(n) if isinstance(n, SearchStrategy) else n
    _check_count("labels: n", count)
    frac = draw(ignore_fraction) if isinstance(ignore_fraction, SearchStrategy) else ignore_fraction
    if not 0.0 <= frac <= 1.0:
        raise ValueError(f"labels: ignore_fraction must be in [0, 1], got {frac}")
    gen = torch.Generator(device="cpu").manual_seed(draw(seeds()))
    out = torch.randint(0, vocab_size, (count,), generator=gen, dtype=torch.int64)
    k = round(frac * count)
    if k:
        positions = torch.randperm(count, generator=gen)[:k]
        out[positions] = ignore_index
    return out.to(device)


def labels(
    n: int | SearchStrategy[int],
    vocab_size: int,
    *,
    device: torch.device | str,
    ignore_index: int = -100,
    ignore_fraction: float | SearchStrategy[float] = 0.0,
) -> SearchStrategy[torch.Tensor]:
    """int64 label vectors of length ``n`` with values in ``[0, vocab_size)``.

    Exactly ``round(ignore_fraction * n)`` positions (chosen from a drawn seed) hold
    ``ignore_index`` (``ignore_index`` should lie outside ``[0, vocab_size)``, as -100 does, for that
    count to be the number of ignored labels). ``n`` and ``ignore_fraction`` may be strategies.
    """
    if not isinstance(n, SearchStrategy):
        _check_count("labels: n", n)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(
            f"labels: vocab_size must be an int >= 1 (labels lie in [0, vocab_size)), got {vocab_size!r}"
        )
    if not isinstance(ignore_fraction, SearchStrategy) and not 0.0 <= ignore_fraction <= 1.0:
        raise ValueError(f"labels: ignore_fraction must be in [0, 1], got {ignore_fraction}")
    return _labels(n, vocab_size, device, ignore_index, ignore_fraction)


def _check_count(where: str, n: object) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{where} must be an int >= 0, got {n!r}")

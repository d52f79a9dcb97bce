"""Bounds-checked mode for kernel tests: guard regions around buffers, checked after the call.

A kernel that writes one row or column past the end of its output corrupts whatever lies there. On a
GPU that is a silent race; on the CPU (Triton's interpreter) it may abort the process or may not. Here
every buffer a kernel writes sits between two guard regions filled with a sentinel byte pattern; after
the call, any changed guard byte is an ``AssertionError`` naming the kernel, the buffer and the offset.

Two ways in:

* ``with bounds_checked("rope") as guard:``: while active, the tensors that ``torch.empty``,
  ``torch.empty_like`` and ``Tensor.new_empty`` allocate (what the kernels' launch code allocates its
  outputs with) are views into guarded buffers; the guards are checked when the block exits (and by
  ``guard.check()``). Contiguous allocations only: anything else is allocated as usual.
* ``guard.guarded(t)``: a copy of ``t`` in a guarded buffer, with ``t``'s strides (for inputs that a
  kernel writes in place, or reads with strides).

The guards catch writes out of bounds, not reads: an out-of-bounds read is caught by the values it
brings in (the guard bytes decode to garbage), which the numerical checks see.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

import torch

__all__ = ["bounds_checked", "BoundsGuard", "SENTINEL_BYTE", "GUARD_BYTES"]

SENTINEL_BYTE = 0xA5  # 0xA5A5 as bf16/fp16 and 0xA5A5A5A5 as fp32 are ordinary finite numbers, rarely written
GUARD_BYTES = 512  # per side; a multiple of 128 so the view keeps the allocator's alignment


@dataclass
class _Guarded:
    raw: torch.Tensor  # uint8, the whole allocation
    start: int  # byte offset of the tensor's first byte
    nbytes: int  # bytes the tensor spans
    what: str  # how it was made, for the message


def _span_bytes(shape: tuple[int, ...], stride: tuple[int, ...], element_size: int) -> int:
    if any(s == 0 for s in shape):
        return 0
    return (1 + sum((n - 1) * s for n, s in zip(shape, stride))) * element_size


class BoundsGuard:
    """The active bounds check (see the module docstring); ``bounds_checked`` makes one."""

    def __init__(self, kernel: str, guard_bytes: int = GUARD_BYTES):
        self.kernel = kernel
        self.guard_bytes = guard_bytes
        self.buffers: list[_Guarded] = []

    # -- allocation ------------------------------------------------------------------------------------

    def _allocate(self, shape, stride, dtype: torch.dtype, device, what: str) -> torch.Tensor:
        # Only ops this mode passes through (torch.full, views): no recursion into the allocation hooks.
        nbytes = _span_bytes(tuple(shape), tuple(stride), dtype.itemsize)
        raw = torch.full((nbytes + 2 * self.guard_bytes,), SENTINEL_BYTE, dtype=torch.uint8, device=device)
        flat = raw[self.guard_bytes : self.guard_bytes + max(nbytes, dtype.itemsize)].view(dtype)
        tensor = torch.as_strided(flat, tuple(shape), tuple(stride), flat.storage_offset())
        self.buffers.append(_Guarded(raw, self.guard_bytes, nbytes, what))
        return tensor

    def guarded(self, t: torch.Tensor) -> torch.Tensor:
        """A copy of ``t`` (same strides, values, ``requires_grad``) inside a guarded buffer."""
        where = _caller()
        copy = self._allocate(t.shape, t.stride(), t.dtype, t.device, f"guarded({tuple(t.shape)}) at {where}")
        with torch.no_grad():
            copy.copy_(t)
        return copy.requires_grad_(t.requires_grad)

    # Patched in while active: the launch code of a kernel allocates its outputs through these, in the
    # forward and in the backward (which autograd runs outside any mode's reach, hence no TorchFunctionMode).
    def __enter__(self) -> BoundsGuard:
        self._saved = (torch.empty, torch.empty_like, torch.Tensor.new_empty)
        real_empty, real_like, real_new = self._saved

        def empty(*size, **kwargs):
            shape = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
            made = None if kwargs.get("out") is not None else self._made(shape, None, kwargs, "torch.empty")
            return made if made is not None else real_empty(*size, **kwargs)

        def empty_like(like, **kwargs):
            made = None
            # preserve_format keeps a dense layout's strides (e.g. a transposed view)
            dense = (
                _span_bytes(tuple(like.shape), like.stride(), 1) == like.numel()
                and min(like.stride(), default=1) > 0
            )
            if like.is_contiguous() or (
                dense and kwargs.get("memory_format") in (None, torch.preserve_format)
            ):
                stride = None if like.is_contiguous() else like.stride()
                made = self._made(like.shape, stride, {"dtype": like.dtype, "device": like.device, **kwargs},
                                  "torch.empty_like")  # fmt: skip
            return made if made is not None else real_like(like, **kwargs)

        def new_empty(base, *size, **kwargs):
            shape = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
            made = self._made(
                shape, None, {"dtype": base.dtype, "device": base.device, **kwargs}, "Tensor.new_empty"
            )
            return made if made is not None else real_new(base, *size, **kwargs)

        torch.empty, torch.empty_like, torch.Tensor.new_empty = empty, empty_like, new_empty
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        torch.empty, torch.empty_like, torch.Tensor.new_empty = self._saved

    def _made(self, shape, stride, kwargs, what):
        """A guarded tensor for a plain (strided, contiguous or explicitly strided) allocation, else None."""
        if kwargs.get("layout") not in (None, torch.strided):
            return None
        if kwargs.get("memory_format") not in (None, torch.contiguous_format, torch.preserve_format):
            return None
        if kwargs.get("pin_memory") or kwargs.get("names") is not None:
            return None
        shape = tuple(int(n) for n in shape)
        if stride is None:
            stride, acc = [], 1
            for n in reversed(shape):
                stride.append(acc)
                acc *= max(n, 1)
            stride = tuple(reversed(stride))
        dtype = kwargs.get("dtype") or torch.get_default_dtype()
        if _span_bytes(shape, tuple(stride), dtype.itemsize) == 0:
            return None  # nothing to write out of bounds of
        device = kwargs.get("device") or "cpu"
        t = self._allocate(shape, tuple(stride), dtype, device, f"{what}{shape} at {_caller()}")
        return t.requires_grad_(bool(kwargs.get("requires_grad", False)))

    # -- checking --------------------------------------------------------------------------------------

    def check(self) -> None:
        """Raise ``AssertionError`` if any guard byte of any buffer so far was written."""
        problems = []
        for buf in self.buffers:
            raw = buf.raw.detach().cpu()
            before = (raw[: buf.start] != SENTINEL_BYTE).nonzero()
            after = (raw[buf.start + buf.nbytes :] != SENTINEL_BYTE).nonzero()
            if len(before):
                first = buf.start - int(before[0, 0])
                problems.append(
                    f"{buf.what}: {len(before)} byte(s) written before its start (up to {first} bytes)"
                )
            if len(after):
                last = int(after[-1, 0]) + 1
                problems.append(f"{buf.what}: {len(after)} byte(s) written past its end (up to {last} bytes)")
        if problems:
            raise AssertionError(
                f"kernel {self.kernel!r} wrote out of bounds:\n    " + "\n    ".join(problems)
            )


def _caller() -> str:
    """file:line of the code that asked for the allocation (outside this module and torch)."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "liger_testing/bounds" not in frame.filename and "/torch/" not in frame.filename:
            return f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}"
    return "?"


class bounds_checked:  # noqa: N801 - used as a context manager, like torch.no_grad
    """``with bounds_checked("kernel name") as guard:``: allocations inside are guarded; checked at exit.

    ``check_on_exit=False`` leaves the check to the caller (``guard.check()``), e.g. after a backward that
    runs outside the block."""

    def __init__(self, kernel: str, *, guard_bytes: int = GUARD_BYTES, check_on_exit: bool = True):
        self.guard = BoundsGuard(kernel, guard_bytes)
        self.check_on_exit = check_on_exit

    def __enter__(self) -> BoundsGuard:
        self.guard.__enter__()
        return self.guard

    def __exit__(self, exc_type, exc, tb) -> None:
        self.guard.__exit__(exc_type, exc, tb)
        if exc_type is None and self.check_on_exit:
            self.guard.check()

"""Elementwise kernels on DTensors (tensor parallelism): each rank runs the kernel on its local shard.

An elementwise op commutes with sharding and replication, so ``f(a, b)`` of two DTensors laid out
alike is the DTensor of ``f`` over their local tensors, with the same layout. Partial (pending
reduction) placements do not commute with a nonlinear op and are reduced first; a plain tensor next
to a DTensor is distributed like it. ``to_local`` and ``from_local`` are differentiable, so the
gradients come back as DTensors of the same layout.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def is_dtensor(*tensors: torch.Tensor) -> bool:
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return any(isinstance(t, DTensor) for t in tensors)


def elementwise_on_shards(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], a: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """``fn(a, b)`` (elementwise, same shapes) where a or b is a DTensor: computed on the local shards."""
    from torch.distributed.tensor import DTensor, Replicate, distribute_tensor

    layout = a if isinstance(a, DTensor) else b
    mesh = layout.device_mesh
    placements = tuple(Replicate() if p.is_partial() else p for p in layout.placements)
    a, b = (
        t.redistribute(mesh, placements) if isinstance(t, DTensor) else distribute_tensor(t, mesh, placements)
        for t in (a, b)
    )
    out = fn(a.to_local(), b.to_local())
    return DTensor.from_local(out, mesh, placements, shape=a.shape, stride=a.stride())

"""A downstream project's own Triton kernel: a scaled softmax over the last dim (forward only)."""

import torch
import triton
import triton.language as tl


@triton.jit
def _softmax_kernel(X, Y, stride_x, stride_y, n_cols, scale, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * stride_x + cols, mask=mask, other=float("-inf")).to(tl.float32) * scale
    x = x - tl.max(x, 0)
    e = tl.exp(x)
    tl.store(Y + row * stride_y + cols, (e / tl.sum(e, 0)).to(Y.dtype.element_ty), mask=mask)


def scaled_softmax(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    rows = x.reshape(-1, x.shape[-1])
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    y = torch.empty(rows.shape, dtype=x.dtype, device=x.device)
    block = triton.next_power_of_2(rows.shape[1])
    _softmax_kernel[(rows.shape[0],)](rows, y, rows.stride(0), y.stride(0), rows.shape[1], scale, BLOCK=block)
    return y.view(x.shape)

"""Prototype (not used by the library): FusedLinearCrossEntropy's weight-gradient update as one Triton GEMM.

Per chunk of C rows the fused loss does ``dW += dlogits_c^T @ x_c`` (dW: V x H, dlogits_c: C x V, x_c:
C x H), today through cuBLAS ``addmm_``. At 8192 x 4096 -> 128256 with 1024-row chunks that GEMM has
K = 1024 only, and its epilogue reads and writes all of dW (2 x 1002 MiB, ~0.49 ms at 4.25 TB/s) every
chunk; if that read waits until the main loop is done it costs ~3.7 ms over 8 chunks (NOTES, fifth
session). Here each tile issues the load of its dW tile before the main loop and adds it after, so
the load can overlap the tile's matrix products; the sum is rounded once, as addmm_ does.

    python -m benchmark.proto_dw_gemm            # on a GPU: times mm, addmm_ and this kernel's configs
    TRITON_INTERPRET=1 python -m benchmark.proto_dw_gemm   # on CPU: checks the result at a tiny shape

What the GPU run decides: if ``addmm_`` is not slower than ``mm`` at this shape, the epilogue overlaps
already and this prototype is dropped; if it is, and the best config here gets within 3 % of ``mm``, it
moves into ``liger_kernel/ops/fused_linear_cross_entropy.py``.
"""

from __future__ import annotations

import itertools
import os

import torch
import triton
import triton.language as tl


@triton.jit
def _dw_update_kernel(
    G, X, DW,  # G: (K, M) row-major, X: (K, N) row-major, DW: (M, N) row-major
    M, N, K,
    stride_g, stride_x, stride_dw,
    ACCUMULATE: tl.constexpr,  # DW += G^T X (else DW = G^T X)
    EVEN_K: tl.constexpr,  # K % BLOCK_K == 0: the main loop needs no mask on K
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    # Tiles in groups of GROUP_M rows of tiles, so that neighbouring programs share G's columns in L2.
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    group_rows = min(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_rows
    pid_n = (pid % per_group) // group_rows

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    dw_ptrs = DW + offs_m[:, None].to(tl.int64) * stride_dw + offs_n[None, :]
    dw_mask = mask_m[:, None] & mask_n[None, :]
    if ACCUMULATE:
        # Issued here, used after the loop: the load is in flight while the tile's products run.
        previous = tl.load(dw_ptrs, mask=dw_mask, other=0.0)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    offs_k = tl.arange(0, BLOCK_K)
    g_ptrs = G + offs_k[:, None].to(tl.int64) * stride_g + offs_m[None, :]
    x_ptrs = X + offs_k[:, None].to(tl.int64) * stride_x + offs_n[None, :]
    for k0 in range(0, K, BLOCK_K):
        if EVEN_K:
            g = tl.load(g_ptrs, mask=mask_m[None, :], other=0.0)
            x = tl.load(x_ptrs, mask=mask_n[None, :], other=0.0)
        else:
            in_k = (k0 + offs_k) < K
            g = tl.load(g_ptrs, mask=in_k[:, None] & mask_m[None, :], other=0.0)
            x = tl.load(x_ptrs, mask=in_k[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(tl.trans(g), x, acc)
        g_ptrs += BLOCK_K * stride_g
        x_ptrs += BLOCK_K * stride_x
    if ACCUMULATE:
        acc += previous.to(tl.float32)
    tl.store(dw_ptrs, acc.to(DW.dtype.element_ty), mask=dw_mask)


def dw_update(
    g: torch.Tensor,
    x: torch.Tensor,
    dw: torch.Tensor,
    accumulate: bool,
    block_m: int = 128,
    block_n: int = 128,
    block_k: int = 64,
    group_m: int = 8,
    num_warps: int = 8,
    num_stages: int = 3,
) -> None:
    """``dw (+)= g^T @ x`` in place: g (K, M), x (K, N), dw (M, N), all row-major, one dtype."""
    if g.dim() != 2 or x.dim() != 2 or dw.dim() != 2:
        raise ValueError(
            f"g, x and dw must be 2-D, got {tuple(g.shape)}, {tuple(x.shape)}, {tuple(dw.shape)}"
        )
    (k, m), (k_x, n) = g.shape, x.shape
    if k_x != k or tuple(dw.shape) != (m, n):
        raise ValueError(
            f"need g (K, M), x (K, N), dw (M, N); got g {tuple(g.shape)}, x {tuple(x.shape)}, dw {tuple(dw.shape)}"
        )
    if g.stride(1) != 1 or x.stride(1) != 1 or dw.stride(1) != 1:
        raise ValueError("g, x and dw must have contiguous rows")
    grid = (triton.cdiv(m, block_m) * triton.cdiv(n, block_n),)
    _dw_update_kernel[grid](
        g, x, dw, m, n, k, g.stride(0), x.stride(0), dw.stride(0),
        ACCUMULATE=accumulate, EVEN_K=k % block_k == 0,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=group_m,
        num_warps=num_warps, num_stages=num_stages,
    )  # fmt: skip


def check(m: int, n: int, k: int, dtype: torch.dtype, device: str, **cfg: int) -> float:
    """Largest error of ``dw_update`` (both modes) against the fp32 result, in units of
    eps(dtype) * (|dw| + |g|^T |x|), the size of the terms summed: a correct kernel stays near 1 (one
    rounding of the output plus the fp32 summation), a wrong one (a tile or a k-step missing, the old dW
    dropped) lands orders of magnitude higher."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    g = torch.randn(k, m, generator=gen).to(device, dtype)
    x = torch.randn(k, n, generator=gen).to(device, dtype)
    dw0 = torch.randn(m, n, generator=gen).to(device, dtype)
    product, terms = g.float().t() @ x.float(), g.float().abs().t() @ x.float().abs()
    worst = 0.0
    for accumulate in (True, False):
        dw = dw0.clone()
        dw_update(g, x, dw, accumulate=accumulate, **cfg)
        expected = product + dw0.float() if accumulate else product
        scale = torch.finfo(dtype).eps * (terms + (dw0.float().abs() if accumulate else 0))
        worst = max(
            worst, ((dw.float() - expected).abs() / scale.clamp_min(torch.finfo(dtype).tiny)).max().item()
        )
    return worst


def main() -> None:
    if not torch.cuda.is_available():
        assert os.environ.get("TRITON_INTERPRET") == "1", "on CPU, run with TRITON_INTERPRET=1"
        for shape in ((96, 64, 40), (130, 70, 128)):  # ragged M, N and K; then an even K
            err = check(*shape, torch.float32, "cpu", block_m=32, block_n=32, block_k=16, num_warps=4)
            print(f"dw_update {shape} fp32 on CPU: max error {err:.2f} eps-units")
        return

    from triton.testing import do_bench

    v, h, c = 128256, 4096, 1024
    g = (torch.randn(c, v, device="cuda") * 1e-4).to(torch.bfloat16)
    x = torch.randn(c, h, device="cuda", dtype=torch.bfloat16)
    dw = torch.zeros(v, h, device="cuda", dtype=torch.bfloat16)
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    flop = 2 * v * h * c
    results = {
        "torch.mm (beta 0)": do_bench(lambda: torch.mm(g.t(), x, out=dw), rep=200, return_mode="median"),
        "addmm_ (beta 1)": do_bench(lambda: dw.addmm_(g.t(), x), rep=200, return_mode="median"),
    }
    for bm, bn, bk, warps, stages in itertools.product((128,), (128, 256), (64,), (4, 8), (3, 4)):
        cfg = dict(block_m=bm, block_n=bn, block_k=bk, num_warps=warps, num_stages=stages)
        try:
            err = check(v // 64, h // 4, c, torch.bfloat16, "cuda", **cfg)
            t = do_bench(
                lambda cfg=cfg: dw_update(g, x, dw, accumulate=True, **cfg), rep=200, return_mode="median"
            )
        except Exception as exc:  # a config the compiler cannot fit (shared memory, registers)
            print(f"triton {cfg}: {type(exc).__name__}: {str(exc)[:120]}")
            continue
        results[f"triton {cfg} (max err {err:.2f} eps-units)"] = t
    for name, ms in sorted(results.items(), key=lambda kv: kv[1]):
        print(f"{name}: {ms:.3f} ms, {flop / ms / 1e9:.0f} TFLOP/s")


if __name__ == "__main__":
    main()

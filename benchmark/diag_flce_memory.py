"""Diagnose the fused loss's peak on CUDA: does the backward hand back the gradients the forward
computed (same storage), or copies? Prints pointer checks and the blocks alive at the peak."""

import torch

import liger_kernel.ops.fused_linear_cross_entropy as F
from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

_recorded = {}
_chunked = F._chunked


def _recording_chunked(*args, **kwargs):
    out = _chunked(*args, **kwargs)
    _recorded["gx"], _recorded["gw"] = out[2].data_ptr(), out[3].data_ptr()
    return out


def main() -> None:
    F._chunked = _recording_chunked
    x = torch.randn(8192, 4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = (0.02 * torch.randn(128256, 4096, device="cuda")).to(torch.bfloat16).requires_grad_()
    t = torch.randint(0, 128256, (8192,), device="cuda")
    for how in ("autograd.grad", "backward"):
        x.grad = w.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        loss = liger_fused_linear_cross_entropy(x, w, t)
        if how == "backward":
            loss.backward()
            gx, gw = x.grad, w.grad
        else:
            gx, gw = torch.autograd.grad(loss, (x, w))
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        print(
            f"{how}: gx same storage {gx.data_ptr() == _recorded['gx']}, gw same storage "
            f"{gw.data_ptr() == _recorded['gw']}, peak extra {peak:.0f} MiB",
            flush=True,
        )
        del gx, gw, loss
    x.grad = w.grad = None
    torch.cuda.memory._record_memory_history(max_entries=100000)
    grads = torch.autograd.grad(liger_fused_linear_cross_entropy(x, w, t), (x, w))
    torch.cuda.synchronize()
    snap = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    del grads
    live, cur, peak, at_peak = {}, 0, 0, {}
    for ev in snap["device_traces"][0]:
        if ev["action"] == "alloc":
            live[ev["addr"]] = ev
            cur += ev["size"]
            if cur > peak:
                peak, at_peak = cur, dict(live)
        elif ev["action"] == "free_completed" and ev["addr"] in live:
            cur -= live.pop(ev["addr"])["size"]
    print(f"peak of blocks allocated during the pass: {peak / 2**20:.0f} MiB")
    for ev in sorted(at_peak.values(), key=lambda e: -e["size"])[:5]:
        frames = [
            f"{f['filename'].split('site-packages/')[-1]}:{f['line']}:{f['name']}" for f in ev["frames"]
        ]
        print(f"  {ev['size'] / 2**20:8.0f} MiB, {len(frames)} frames:")
        for f in frames[:12]:
            print("       ", f)


if __name__ == "__main__":
    main()

"""One rank of the FSDP2 test: ``python _fsdp2_worker.py OUT_FILE`` under a torchrun-like env.

Trains a Liger-patched tiny llama sharded with ``fully_shard`` (one FSDP group per decoder layer plus
the root, which holds embeddings, final norm and lm_head), and writes to OUT_FILE (rank 0):

* ``losses``: per step, the loss averaged over ranks (each rank's batch has the same token count, so
  this is the loss of the global batch);
* ``params``: the final parameters, gathered to full tensors;
* ``saved``: what autograd kept between forward and backward of step 0 (see ``_SavedTensorProbe``).

``train``/``batches``/``make_optimizer`` are shared with the single-process reference in the test.
TRITON_INTERPRET must already be in the environment on CPU (set by the launcher before this imports
liger_kernel).
"""

from __future__ import annotations

import gc
import os
import pathlib
import sys
import weakref

import torch
import torch.distributed as dist

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "transformers"))

import _hf_tiny as T  # noqa: E402

from liger_kernel.transformers import apply_liger_kernel_to_llama  # noqa: E402

STEPS = 3
PER_RANK_BATCH = T.BATCH  # 2 sequences of T.SEQ tokens on each rank


def batches(world_size: int, step: int, device: str) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Each rank's batch of one step. No ignored labels: every rank has the same token count, so the
    mean over ranks of per-rank mean losses (what data parallelism averages) is the global mean."""
    T.DEVICE = device
    return [T.batch(seed=100 * step + rank, ignore_some=False) for rank in range(world_size)]


def make_optimizer(params) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, eps=1e-6)


def build_patched_llama(device: str) -> torch.nn.Module:
    T.DEVICE = device
    # 4 KV heads: k/v_proj (32, 32) rather than (16, 32), the shape of a rank's flattened activations.
    model = T.build("llama", config=T.tiny_config("llama", num_key_value_heads=4))
    apply_liger_kernel_to_llama(model=model)  # RMSNorm, SwiGLU MLP, RoPE, fused linear cross entropy
    return model


class _Held:
    """A saved tensor as autograd holds it (pack hook result); weakref-able, unlike a SavedVariable."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


class _SavedTensorProbe(torch.autograd.graph.saved_tensors_hooks):
    """Records every tensor autograd saves for backward (our custom ops' ``save_for_backward`` too)."""

    def __init__(self) -> None:
        self.held: list[weakref.ref] = []
        self.tensors: list[torch.Tensor] = []  # strong refs, dropped before backward (see report())

        def pack(t: torch.Tensor) -> _Held:
            h = _Held(t)
            self.held.append(weakref.ref(h))
            self.tensors.append(t)
            return h

        super().__init__(pack, lambda h: h.tensor)


def _full_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.full_tensor().detach().cpu().clone() for n, p in model.named_parameters()}  # DTensors


def main(out_file: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    on_gpu = torch.cuda.is_available() and os.environ.get("LIGER_TEST_DEVICE") == "cuda"
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if on_gpu:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    device = f"cuda:{torch.cuda.current_device()}" if on_gpu else "cpu"
    dist.init_process_group("nccl" if on_gpu else "gloo")
    try:
        model = build_patched_llama(device)
        mesh = init_device_mesh("cuda" if on_gpu else "cpu", (world,))
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        opt = make_optimizer(model.parameters())

        losses, saved = [], {}
        for step in range(STEPS):
            ids, mask, labels = batches(world, step, device)[rank]
            probe = _SavedTensorProbe() if step == 0 else None
            if probe is not None:
                with probe:
                    out = model(input_ids=ids, attention_mask=mask, labels=labels)
                saved = _inspect_saved(model, probe)
                probe.tensors.clear()  # from here on only autograd holds the saved tensors
            else:
                out = model(input_ids=ids, attention_mask=mask, labels=labels)
            loss = out.loss
            loss.backward()
            del out
            if probe is not None:
                gc.collect()
                saved["alive_after_backward"] = sum(r() is not None for r in probe.held)
            opt.step()
            opt.zero_grad(set_to_none=True)
            global_loss = loss.detach().clone()
            dist.all_reduce(global_loss)
            losses.append((global_loss / world).item())

        params = _full_params(model)
        if rank == 0:
            torch.save({"losses": losses, "params": params, "saved": saved}, out_file)
        dist.barrier()  # no rank tears gloo down while another still talks to it
    finally:
        dist.destroy_process_group()


def _inspect_saved(model, probe: _SavedTensorProbe) -> dict:
    """Between forward and backward of step 0, classify the saved tensors that have the full
    (unsharded) shape of a weight, or its transpose:

    * ``freed_alias``: storage of size 0: FSDP's all-gather buffer itself, freed by the reshard after
      forward and re-gathered before backward, so holding it costs no memory;
    * ``live_alias``: the storage of a parameter the root group keeps gathered until backward;
    * ``live_copy_of_weight``: live storage with exactly a gathered weight's values: a copy of a full
      weight kept alive until backward (e.g. a ``.contiguous()`` / ``.t().contiguous()`` made by a kernel
      wrapper), or a gathered buffer FSDP did not free;
    * ``live_other``: other live full-shape tensors (e.g. a weight gradient computed in the forward).
    Recorded by shape (several weights share one). The tiny config has no weight with as many rows
    as a batch has tokens, so activations are not mistaken for weights.
    """
    from torch.distributed.tensor import DTensor

    # The root group (embeddings, final norm, lm_head) stays gathered from forward to backward (FSDP2
    # does not reshard the root after forward: it would be re-gathered at once); its registered
    # parameters are then the gathered tensors themselves.
    weights, gathered_storages = {}, set()
    for n, p in model.named_parameters():
        if isinstance(p, DTensor):
            weights[n] = p.full_tensor().detach()
        else:
            weights[n] = p.detach()
            gathered_storages.add(p.untyped_storage().data_ptr())
    out = {"total_saved": len(probe.tensors), "freed_alias": [], "live_alias": [], "live_copy_of_weight": []}
    out["live_other"] = []
    for t in probe.tensors:
        same = [w for w in weights.values() if t.shape == w.shape]
        flipped = [w.t() for w in weights.values() if w.dim() == 2 and t.shape == w.t().shape]
        if not same and not flipped:
            continue
        shape = tuple(t.shape)
        if t.untyped_storage().size() == 0:
            out["freed_alias"].append(shape)
        elif t.untyped_storage().data_ptr() in gathered_storages:
            out["live_alias"].append(shape)
        elif any(torch.equal(t.detach(), w) for w in same + flipped):
            out["live_copy_of_weight"].append(shape)
        else:
            out["live_other"].append(shape)
    return out


if __name__ == "__main__":
    main(sys.argv[1])
    # Leave without the interpreter's teardown, where a gloo worker thread can still free a collective's
    # tensor and abort the rank (the mechanism is in examples/train_fsdp2.py).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

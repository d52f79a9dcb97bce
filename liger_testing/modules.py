"""``assert_modules_equivalent``: a fused module against the ``nn.Module`` it replaces, forward and backward."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Mapping
from typing import Any

import torch

from liger_testing._tree import zip_trees
from liger_testing.assertions import _compare_reference_leaf

__all__ = ["assert_modules_equivalent"]


def _cast(x: Any, dtype: torch.dtype | None) -> Any:
    if isinstance(x, torch.Tensor):
        out = x.detach()
        if dtype is not None and out.is_floating_point():
            out = out.to(dtype)
        else:
            out = out.clone()
        return out.requires_grad_(x.requires_grad)
    if isinstance(x, (list, tuple)):
        return type(x)(_cast(v, dtype) for v in x)
    if isinstance(x, Mapping):
        return {k: _cast(v, dtype) for k, v in x.items()}
    return x


def _float_leaves(tree: Any) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree] if tree.is_floating_point() and tree.requires_grad else []
    if isinstance(tree, (list, tuple)):
        return [t for v in tree for t in _float_leaves(v)]
    if isinstance(tree, Mapping):
        return [t for v in tree.values() for t in _float_leaves(v)]
    if hasattr(tree, "to_tuple"):  # Hugging Face ModelOutput
        return _float_leaves(tree.to_tuple())
    return []


def _detached(tree: Any) -> Any:
    if isinstance(tree, torch.Tensor):
        return tree.detach()
    if hasattr(tree, "to_tuple"):
        tree = tree.to_tuple()
    if isinstance(tree, (list, tuple)):
        return [_detached(v) for v in tree]
    if isinstance(tree, Mapping):
        return {k: _detached(v) for k, v in tree.items()}
    return tree


def _float64_throughout():
    """The golden's forward stays in float64 where module code upcasts with ``x.to(torch.float32)`` or
    ``x.float()`` (Hugging Face's RMSNorm does): on float64 tensors those are downcasts that would make the
    golden only float32-accurate there (the convergence runner's reference arm does the same)."""
    from liger_testing.convergence.runner import float64_throughout

    return float64_throughout()


def _run(module: torch.nn.Module, inputs: tuple, dtype: torch.dtype | None, seed: int) -> dict:
    """Forward, backward with seeded float64 output gradients; outputs, input and parameter gradients."""
    args = _cast(inputs, dtype)
    with _float64_throughout() if dtype == torch.float64 else contextlib.nullcontext():
        out = module(*args)
    leaves = _float_leaves(out)
    if leaves:
        gen = torch.Generator().manual_seed(seed)
        grads = [
            torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.device, t.dtype) for t in leaves
        ]
        torch.autograd.backward(leaves, grads)
    input_grads = {
        f"input[{i}]": a.grad for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad
    }
    params = {name: p.grad for name, p in module.named_parameters() if p.requires_grad}
    return {"output": _detached(out), "input_grads": input_grads, "param_grads": params}


def _errors(actual: torch.Tensor, golden: torch.Tensor) -> tuple[float, float]:
    diff = (actual.detach().double().cpu() - golden.detach().double().cpu()).abs()
    diff = torch.where(torch.isfinite(diff), diff, torch.full_like(diff, float("inf")))
    scale = golden.detach().double().abs().max().item() if golden.numel() else 0.0
    worst = diff.max().item() if diff.numel() else 0.0
    return worst, (worst / scale if scale > 0 else worst)


def assert_modules_equivalent(
    reference: torch.nn.Module,
    candidate: torch.nn.Module,
    *inputs: Any,
    dtype: torch.dtype | None = None,
    factor: float = 2.0,
    floor: float | Mapping[str, float] | None = None,
    seed: int = 0,
    msg: str | None = None,
) -> None:
    """Assert that ``candidate`` (e.g. a fused kernel module) can replace ``reference``: forward and backward.

    Both modules run on copies of ``inputs`` (floating tensors cast to ``dtype`` when given; those with
    ``requires_grad`` get their gradients compared too), and so does a float64 copy of ``reference``
    (the golden, kept in float64 where the module's code asks for float32). The outputs get the same seeded random gradients. Then, in reference-error mode
    (:func:`assert_close_to_reference`), the candidate's outputs, input gradients and every parameter
    gradient, matched by name (never by position), must be within ``factor`` times the reference's own
    error against the golden, plus ``floor`` (default one rounding of the dtype; a mapping gives a floor
    per leaf name, e.g. ``{"param:weight": 4e-3}``).

    The modules are copied (``dtype`` casts the copies), never changed. Their parameters must have the
    same names and values, since the comparison is meaningless otherwise.

    Raises:
        AssertionError: for different parameter names or values, or listing, for every output and
            gradient, the candidate's and the reference's max error against the golden (failing ones
            marked), then the details of each failure.
    """
    ref = copy.deepcopy(reference)
    cand = copy.deepcopy(candidate)
    if dtype is not None:
        ref, cand = ref.to(dtype), cand.to(dtype)
    golden = copy.deepcopy(reference).to(torch.float64)

    ref_params, cand_params = dict(ref.named_parameters()), dict(cand.named_parameters())
    missing, extra = sorted(set(ref_params) - set(cand_params)), sorted(set(cand_params) - set(ref_params))
    if missing or extra:
        raise AssertionError(
            (f"{msg}\n\n" if msg else "") + "assert_modules_equivalent: parameter names differ: "
            f"missing from candidate {missing}, only in candidate {extra}"
        )
    different = [
        n for n, p in ref_params.items() if not torch.equal(p.detach().cpu(), cand_params[n].detach().cpu())
    ]
    if different:
        raise AssertionError(
            (f"{msg}\n\n" if msg else "")
            + "assert_modules_equivalent: the modules' parameters differ before "
            f"the run (load one's state_dict into the other): {different}"
        )

    runs = {name: _run(m, inputs, d, seed) for name, m, d in (
        ("candidate", cand, dtype), ("reference", ref, dtype), ("golden", golden, torch.float64))}  # fmt: skip

    def flat(run: dict) -> dict:
        out = {"output": run["output"]}
        out.update({f"grad:{k}": v for k, v in run["input_grads"].items()})
        out.update({f"param:{k}": v for k, v in run["param_grads"].items()})
        return out

    c, r, g = flat(runs["candidate"]), flat(runs["reference"]), flat(runs["golden"])
    leaves, structure_errors = zip_trees((c, r, g), ("candidate", "reference", "golden"), root="")
    failures = list(structure_errors)
    rows = []
    for path, (a, rv, gv) in leaves:
        name = path.split("'")[1] if "'" in path else path
        if a is None or rv is None or gv is None:
            if not (a is None and rv is None and gv is None):
                failures.append(f"{path}: gradient is None in " + ", ".join(
                    k for k, v in (("candidate", a), ("reference", rv), ("golden", gv)) if v is None))  # fmt: skip
            continue
        leaf_floor = floor.get(name) if isinstance(floor, Mapping) else floor
        failure = _compare_reference_leaf(path, a, rv, gv, factor=factor, floor=leaf_floor)
        if failure is not None:
            failures.append(failure)
        if isinstance(a, torch.Tensor) and isinstance(gv, torch.Tensor) and a.shape == gv.shape:
            (ca, cr), (ra, rr) = _errors(a, gv), _errors(rv, gv)
            mark = "FAIL" if failure else "ok"
            rows.append(
                f"    {path:<40s} candidate {ca:.3e} ({cr:.2e} rel)   reference {ra:.3e} ({rr:.2e} rel)   {mark}"
            )
    if failures:
        title = (
            f"assert_modules_equivalent: {len(failures)} problem(s); max error against the float64 golden "
            f"(relative to max|golden|), dtype {dtype or 'as given'}:"
        )
        parts = ([msg] if msg else []) + [title + "\n" + "\n".join(rows), *failures]
        raise AssertionError("\n\n".join(parts))

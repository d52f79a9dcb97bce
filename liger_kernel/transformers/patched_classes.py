"""Where pickle finds the module classes that patching makes (``LigerLlamaRMSNorm``, ``LigerLlamaMLP``...).

Each such class is registered here under a name that encodes what it replaces, e.g.
``transformers__models__llama__modeling_llama___LlamaRMSNorm`` (the class's ``__qualname__``; its
``__name__`` stays ``LigerLlamaRMSNorm``), so ``torch.save(model)`` / ``pickle`` of a patched model
works. A process that unpickles such a model without having patched anything makes the class on first
lookup (module ``__getattr__``), from the same table that patching uses: the loaded model is patched
as it was saved. This module holds nothing else.
"""

from __future__ import annotations


def __getattr__(name: str) -> type:
    if name.startswith("__"):  # dunder lookups (copy, inspect, doctest...) are not ours
        raise AttributeError(name)
    from liger_kernel.transformers.monkey_patch import patched_class_by_name

    return patched_class_by_name(name)

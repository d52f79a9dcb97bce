"""Where pickle finds the module classes that patching makes (``LigerLlamaRMSNorm``, ``LigerLlamaMLP``...).

Each such class is made by ``make_patched_class``, which registers it here under a name that encodes
what it replaces, e.g. ``transformers__models__llama__modeling_llama___LlamaRMSNorm`` (the class's
``__qualname__``; its ``__name__`` stays ``LigerLlamaRMSNorm``), so ``torch.save(model)`` / ``pickle``
of a patched model works. A process that unpickles such a model without having patched anything makes
the class on first lookup (module ``__getattr__``), from the same table that patching uses: the loaded
model is patched as it was saved. This module holds nothing else.
"""

from __future__ import annotations


def pickle_name(original: type, method: str | None = None) -> str:
    """The name under which this module holds the replacement of ``original`` (one method of it when
    ``method`` is given): its module path and name, "." as "__" and parts joined by "___"."""
    parts = [original.__module__.replace(".", "__"), original.__qualname__]
    return "___".join(parts + ([method] if method else []))


def make_patched_class(original: type, base: type, namespace: dict, method: str | None = None) -> type:
    """A replacement class for ``original`` deriving from ``base``, registered here so that pickle finds it."""
    ref = pickle_name(original, method)
    namespace = {"__module__": __name__, "__qualname__": ref, **namespace}
    cls = type(f"Liger{original.__name__}", (base,), namespace)
    globals()[ref] = cls
    return cls


def __getattr__(name: str) -> type:
    if name.startswith("__"):  # dunder lookups (copy, inspect, doctest...) are not ours
        raise AttributeError(name)
    from liger_kernel.transformers.monkey_patch import patched_class_by_name

    return patched_class_by_name(name)

"""Walk several nested structures in parallel and pair up their leaves by key path.

Shared by :func:`liger_testing.assert_close` and :func:`liger_testing.assert_close_to_reference`.
Mappings are matched by key (never by iteration order), lists/tuples by position.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["zip_trees"]


def _is_sequence(x: Any) -> bool:
    return isinstance(x, (list, tuple))


def _kind(x: Any) -> str:
    if isinstance(x, Mapping):
        return "mapping"
    if _is_sequence(x):
        return "sequence"
    return "leaf"


def _type_name(x: Any) -> str:
    return type(x).__name__


def zip_trees(
    trees: Sequence[Any], names: Sequence[str], root: str = "actual"
) -> tuple[list[tuple[str, tuple[Any, ...]]], list[str]]:
    """Pair the leaves of ``trees`` by path.

    Args:
        trees: structures of the same shape (tensors/scalars nested in dicts, lists and tuples).
        names: a display name per tree (``"actual"``, ``"expected"``, ...), used in error messages.
        root: how the root is written in leaf paths, e.g. ``actual['weight'][0]``.

    Returns:
        ``(leaves, structure_errors)``: ``leaves`` is a list of ``(path, (leaf_of_tree_0, ...))`` in
        the first tree's order; ``structure_errors`` lists human-readable problems (missing/extra
        keys named, length mismatches, container type mismatches). Subtrees with a structural problem
        are not descended into.
    """
    leaves: list[tuple[str, tuple[Any, ...]]] = []
    errors: list[str] = []
    _walk(tuple(trees), tuple(names), root, leaves, errors)
    return leaves, errors


def _walk(
    nodes: tuple[Any, ...],
    names: tuple[str, ...],
    path: str,
    leaves: list[tuple[str, tuple[Any, ...]]],
    errors: list[str],
) -> None:
    kinds = [_kind(n) for n in nodes]
    if len(set(kinds)) > 1:
        desc = ", ".join(f"{name} is {_type_name(n)}" for name, n in zip(names, nodes))
        errors.append(f"{path}: structure mismatch: {desc}")
        return
    kind = kinds[0]
    if kind == "leaf":
        leaves.append((path, nodes))
        return
    if kind == "sequence":
        lengths = [len(n) for n in nodes]
        if len(set(lengths)) > 1:
            desc = ", ".join(f"{name} has {length}" for name, length in zip(names, lengths))
            errors.append(f"{path}: length mismatch: {desc} elements")
            return
        for i in range(lengths[0]):
            _walk(tuple(n[i] for n in nodes), names, f"{path}[{i}]", leaves, errors)
        return
    # Mappings: match by key, report missing/extra keys by name.
    first_keys = list(nodes[0].keys())
    all_keys = list(first_keys)
    seen = set(first_keys)
    for n in nodes[1:]:
        for k in n.keys():
            if k not in seen:
                seen.add(k)
                all_keys.append(k)
    for k in all_keys:
        missing_in = [name for name, n in zip(names, nodes) if k not in n]
        if missing_in:
            present_in = [name for name, n in zip(names, nodes) if k in n]
            errors.append(
                f"{path}[{k!r}]: key {k!r} is missing from {', '.join(missing_in)} "
                f"(present in {', '.join(present_in)})"
            )
            continue
        _walk(tuple(n[k] for n in nodes), names, f"{path}[{k!r}]", leaves, errors)

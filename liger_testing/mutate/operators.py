"""Kernel-aware mutation operators: each finds, in one source file, the places where a kernel author
could plausibly slip, and describes each slip as a text edit of the original source.

The file is parsed with :mod:`ast` only to find the places; a mutant is a set of byte-range edits of
the original text, so everything else in the file (formatting, comments) is left as it was.

Scope: in a file with ``@triton.jit`` functions, the operators look inside those functions only (the
host code's PyTorch fallback is not what the kernel tests run), except ``stride_to_row_length``,
which mutates the stride arguments of kernel launches (``kernel[grid](...)``) in the host code. In a
file without Triton kernels (a plain PyTorch kernel), every function is in scope and the operators
look for the PyTorch forms (``torch.where``, ``.sum(dim)``, ``.float()``, ``return`` values).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

__all__ = ["OPERATORS", "Edit", "Mutant", "generate_mutants"]


@dataclass(frozen=True)
class Edit:
    """Replace bytes ``[start, end)`` of the original source with ``text``."""

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Mutant:
    """One mutation of one file: where it is, which operator made it, and the edits that apply it."""

    file: str  # path relative to the project root, with "/" separators
    line: int
    col: int
    operator: str
    description: str
    edits: tuple[Edit, ...] = field(repr=False)
    index: int = 0  # distinguishes mutants of the same operator on the same line

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}:{self.operator}#{self.index}"

    def apply(self, source: bytes) -> bytes:
        """The mutated source (edits applied right to left so earlier offsets stay valid)."""
        out = source
        for edit in sorted(self.edits, key=lambda e: e.start, reverse=True):
            out = out[: edit.start] + edit.text.encode() + out[edit.end :]
        return out


# ----------------------------------------------------------------------------------------------------------
# source positions
# ----------------------------------------------------------------------------------------------------------


class _Source:
    """The file's bytes with (line, col) -> byte offset conversion (ast's col_offset counts UTF-8 bytes)."""

    def __init__(self, data: bytes):
        self.data = data
        self.line_starts = [0]
        for i, byte in enumerate(data):
            if byte == 0x0A:
                self.line_starts.append(i + 1)

    def offset(self, line: int, col: int) -> int:
        return self.line_starts[line - 1] + col

    def span(self, node: ast.AST) -> tuple[int, int]:
        return self.offset(node.lineno, node.col_offset), self.offset(node.end_lineno, node.end_col_offset)

    def text(self, node: ast.AST) -> str:
        start, end = self.span(node)
        return self.data[start:end].decode()


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------------------------------------
# recognizing kernel code
# ----------------------------------------------------------------------------------------------------------


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for a Name/Attribute chain, else ""."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _triton_language_aliases(tree: ast.Module) -> set[str]:
    """Names under which the file imports ``triton.language`` (``tl`` by convention)."""
    aliases = {"tl"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "triton.language":
                    aliases.add(alias.asname or "triton.language")
        elif isinstance(node, ast.ImportFrom) and node.module == "triton":
            for alias in node.names:
                if alias.name == "language":
                    aliases.add(alias.asname or "language")
    return aliases


def _is_jit(fn: ast.FunctionDef) -> bool:
    for dec in fn.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if _dotted(target).split(".")[-1] == "jit":
            return True
    return False


class _Context:
    """What the operators need to know about the file."""

    def __init__(self, src: _Source, tree: ast.Module):
        self.src = src
        self.tree = tree
        self.tl = _triton_language_aliases(tree)
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        self.kernels = [f for f in functions if _is_jit(f)]
        self.triton_file = bool(self.kernels)
        # Functions whose bodies the value operators look at.
        self.scoped = self.kernels if self.triton_file else [f for f in functions if not _is_nested(f, tree)]
        # Helper kernels that build indices (``rows, cols = _block_indices(...)``): their results are indices.
        self.index_helpers = {
            f.name for f in self.kernels if any(self.is_tl_call(n, "arange") for n in _walk_body(f))
        }

    def is_tl_call(self, node: ast.AST, *names: str) -> bool:
        if not isinstance(node, ast.Call):
            return False
        dotted = _dotted(node.func)
        head, _, attr = dotted.rpartition(".")
        return head in self.tl and attr in names

    def is_torch_call(self, node: ast.AST, *names: str) -> bool:
        if not isinstance(node, ast.Call):
            return False
        dotted = _dotted(node.func)
        return dotted in {f"torch.{n}" for n in names}


def _is_nested(fn: ast.AST, tree: ast.Module) -> bool:
    """Whether ``fn`` is defined inside another function (its body is walked with the outer one)."""
    for outer in ast.walk(tree):
        if outer is fn or not isinstance(outer, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if any(inner is fn for inner in ast.walk(outer)):
            return True
    return False


def _walk_body(fn: ast.FunctionDef) -> Iterator[ast.AST]:
    for stmt in fn.body:
        yield from ast.walk(stmt)


def _mutant(node: ast.AST, operator: str, before: str, after: str, edits) -> Mutant:
    return Mutant(
        file="",
        line=node.lineno,
        col=node.col_offset,
        operator=operator,
        description=f"{_short(before)}  ->  {_short(after)}",
        edits=tuple(edits),
    )


# ----------------------------------------------------------------------------------------------------------
# operators
# ----------------------------------------------------------------------------------------------------------


def _index_names(ctx: _Context, fn: ast.FunctionDef) -> set[str]:
    """Names whose value is built from ``tl.arange`` (or ``torch.arange``): offsets, rows, columns.

    A loaded value is data, not an index, so the arguments of ``tl.load`` are not followed."""

    def uses_index(expr: ast.AST, names: set[str]) -> bool:
        stack = [expr]
        while stack:
            node = stack.pop()
            if ctx.is_tl_call(node, "load"):
                continue
            if ctx.is_tl_call(node, "arange") or ctx.is_torch_call(node, "arange"):
                return True
            if isinstance(node, ast.Call) and _dotted(node.func) in ctx.index_helpers:
                return True
            if isinstance(node, ast.Name) and node.id in names:
                return True
            stack.extend(ast.iter_child_nodes(node))
        return False

    names: set[str] = set()
    while True:
        grown = set(names)
        for node in _walk_body(fn):
            if isinstance(node, ast.Assign) and uses_index(node.value, names):
                grown.update(n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name))
        if grown == names:
            return names
        names = grown


_FLIP = {ast.Lt: ("<", "<="), ast.LtE: ("<=", "<"), ast.Gt: (">", ">="), ast.GtE: (">=", ">")}


def mask_compare(ctx: _Context) -> Iterator[Mutant]:
    """A bound check of an ``arange``-based index off by one: ``<`` <-> ``<=``, ``>`` <-> ``>=``."""
    for fn in ctx.scoped:
        index_names = _index_names(ctx, fn)
        for node in _walk_body(fn):
            if not isinstance(node, ast.Compare):
                continue
            operands = [node.left, *node.comparators]
            if not any(
                (isinstance(n, ast.Name) and n.id in index_names)
                or ctx.is_tl_call(n, "arange")
                or ctx.is_torch_call(n, "arange")
                for operand in operands
                for n in ast.walk(operand)
            ):
                continue
            for op, left, right in zip(node.ops, operands, operands[1:]):
                if type(op) not in _FLIP:
                    continue
                old, new = _FLIP[type(op)]
                start, end = ctx.src.span(left)[1], ctx.src.span(right)[0]
                between = ctx.src.data[start:end].decode()
                match = re.search(re.escape(old) + r"(?!=)", between)
                if match is None:
                    continue
                text = ctx.src.text(node)
                at = start + len(between[: match.start()].encode())
                edit = Edit(at, at + len(old), new)
                mutated = text.replace(old, new, 1) if text.count(old) == 1 else f"{old} -> {new}"
                yield _mutant(node, "mask_compare", text, mutated, [edit])


def _is_zero(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and node.value == 0


def load_other(ctx: _Context) -> Iterator[Mutant]:
    """The fill value of a masked load swapped: ``other=0`` <-> ``other=-inf``."""
    for fn in ctx.scoped:
        for node in _walk_body(fn):
            if not ctx.is_tl_call(node, "load"):
                continue
            for kw in node.keywords:
                if kw.arg != "other":
                    continue
                old = ctx.src.text(kw.value)
                new = 'float("-inf")' if _is_zero(kw.value) else "0.0"
                start, end = ctx.src.span(kw.value)
                yield _mutant(kw.value, "load_other", f"other={old}", f"other={new}", [Edit(start, end, new)])


_TL_REDUCTIONS = ("sum", "max", "min", "argmax", "argmin", "reduce", "cumsum", "cumprod", "xor_sum")
_TORCH_REDUCTIONS = (
    "sum",
    "mean",
    "amax",
    "amin",
    "max",
    "min",
    "logsumexp",
    "softmax",
    "log_softmax",
    "cumsum",
)


def _other_axis(value: int) -> int:
    return {0: 1, 1: 0, -1: 0}.get(value, 0)


def reduction_axis(ctx: _Context) -> Iterator[Mutant]:
    """A reduction over the wrong axis: 0 <-> 1, -1 -> 0."""
    for fn in ctx.scoped:
        for node in _walk_body(fn):
            if not isinstance(node, ast.Call):
                continue
            if ctx.is_tl_call(node, *_TL_REDUCTIONS):
                keyword, position = "axis", 1
            elif not ctx.triton_file and (
                ctx.is_torch_call(node, *_TORCH_REDUCTIONS)
                or (isinstance(node.func, ast.Attribute) and node.func.attr in _TORCH_REDUCTIONS)
            ):
                keyword, position = "dim", 1 if ctx.is_torch_call(node, *_TORCH_REDUCTIONS) else 0
            else:
                continue
            axis_node = next((kw.value for kw in node.keywords if kw.arg == keyword), None)
            if axis_node is None and len(node.args) > position:
                axis_node = node.args[position]
            if axis_node is None:
                continue
            value = axis_node
            negative = isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.USub)
            if negative:
                value = value.operand
            if not (isinstance(value, ast.Constant) and type(value.value) is int):
                continue
            old = -value.value if negative else value.value
            new = str(_other_axis(old))
            start, end = ctx.src.span(axis_node)
            text = ctx.src.text(node)
            yield _mutant(node, "reduction_axis", text, f"{keyword} {old} -> {new}", [Edit(start, end, new)])


def _store_values(ctx: _Context, fn: ast.FunctionDef) -> list[ast.AST]:
    """The value expressions a function writes out: ``tl.store``'s value, or what it returns (a jit helper
    returns to a kernel; a PyTorch function to its caller)."""
    values = []
    for node in _walk_body(fn):
        if ctx.is_tl_call(node, "store"):
            value = next((kw.value for kw in node.keywords if kw.arg == "value"), None)
            if value is None and len(node.args) > 1:
                value = node.args[1]
            if value is not None:
                values.append(value)
        elif isinstance(node, ast.Return) and node.value is not None:
            values.append(node.value)  # a jit helper's result feeds its caller's stores
    return values


def _feeding_expressions(ctx: _Context, fn: ast.FunctionDef) -> list[ast.AST]:
    """Every expression whose value flows into a stored value: the stored expressions themselves and the
    right-hand sides of the assignments to the names they use, transitively (addresses, i.e. the
    arguments of ``tl.load``, are not followed)."""
    assignments: dict[str, list[ast.AST]] = {}
    for node in _walk_body(fn):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        assignments.setdefault(name.id, []).append(node.value)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)) and isinstance(node.target, ast.Name):
            if node.value is not None:
                assignments.setdefault(node.target.id, []).append(node.value)

    seen_names: set[str] = set()
    exprs: list[ast.AST] = []
    queue = list(_store_values(ctx, fn))
    while queue:
        expr = queue.pop(0)
        if any(expr is e for e in exprs):
            continue
        exprs.append(expr)
        stack = [expr]
        while stack:
            node = stack.pop()
            if ctx.is_tl_call(node, "load"):
                continue
            if isinstance(node, ast.Name) and node.id not in seen_names:
                seen_names.add(node.id)
                queue.extend(assignments.get(node.id, []))
            stack.extend(ast.iter_child_nodes(node))
    return exprs


def _calls_to_skip(ctx: _Context, node: ast.AST) -> bool:
    return ctx.is_tl_call(node, "load", "arange", "program_id", "num_programs")


def drop_term(ctx: _Context) -> Iterator[Mutant]:
    """A term missing from a sum that feeds a store: ``a + b`` -> ``a`` (or ``b``), ``a - b`` -> ``a``."""
    for fn in ctx.scoped:
        seen: set[int] = set()
        for expr in _feeding_expressions(ctx, fn):
            stack = [expr]
            while stack:
                node = stack.pop()
                if _calls_to_skip(ctx, node) or id(node) in seen:
                    continue
                seen.add(id(node))
                stack.extend(ast.iter_child_nodes(node))
                if not (isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub))):
                    continue
                start, end = ctx.src.span(node)
                text = ctx.src.text(node)
                kept = [("left", node.left)] + (
                    [("right", node.right)] if isinstance(node.op, ast.Add) else []
                )
                for _side, operand in kept:
                    new = f"({ctx.src.text(operand)})"
                    yield _mutant(node, "drop_term", text, new, [Edit(start, end, new)])


def _is_fp32(ctx: _Context, node: ast.AST) -> bool:
    dotted = _dotted(node)
    head, _, attr = dotted.rpartition(".")
    return attr == "float32" and (head in ctx.tl or head == "torch")


def drop_upcast(ctx: _Context) -> Iterator[Mutant]:
    """An fp32 upcast removed, so the math runs in the input's dtype: ``x.to(tl.float32)`` -> ``x``
    (and ``.float()`` in PyTorch code)."""
    for fn in ctx.scoped:
        for node in _walk_body(fn):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            attr = node.func.attr
            is_to = attr == "to" and len(node.args) >= 1 and _is_fp32(ctx, node.args[0])
            is_to = is_to or (
                attr == "to" and any(kw.arg == "dtype" and _is_fp32(ctx, kw.value) for kw in node.keywords)
            )
            is_float = attr == "float" and not node.args and not ctx.triton_file
            if not (is_to or is_float):
                continue
            start, end = ctx.src.span(node)
            new = f"({ctx.src.text(node.func.value)})"
            yield _mutant(node, "drop_upcast", ctx.src.text(node), new, [Edit(start, end, new)])


def swap_where(ctx: _Context) -> Iterator[Mutant]:
    """The branches of a ``where`` swapped: ``where(c, a, b)`` -> ``where(c, b, a)``."""
    for fn in ctx.scoped:
        for node in _walk_body(fn):
            if not (ctx.is_tl_call(node, "where") or ctx.is_torch_call(node, "where")) or len(node.args) != 3:
                continue
            _, a, b = node.args
            (a0, a1), (b0, b1) = ctx.src.span(a), ctx.src.span(b)
            ta, tb = ctx.src.text(a), ctx.src.text(b)
            edits = [Edit(a0, a1, tb), Edit(b0, b1, ta)]
            yield _mutant(node, "swap_where", f"where(.., {ta}, {tb})", f"where(.., {tb}, {ta})", edits)


def stride_to_row_length(ctx: _Context) -> Iterator[Mutant]:
    """A kernel launch passing the row length where a row stride belongs: ``x.stride(0)`` ->
    ``x.shape[-1]`` (right for a contiguous tensor only)."""
    for node in ast.walk(ctx.tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Subscript)):
            continue  # kernel[grid](...)
        for arg in [*node.args, *(kw.value for kw in node.keywords)]:
            if not (
                isinstance(arg, ast.Call)
                and isinstance(arg.func, ast.Attribute)
                and arg.func.attr == "stride"
            ):
                continue
            if len(arg.args) != 1:
                continue
            dim = arg.args[0]
            if isinstance(dim, ast.UnaryOp) and isinstance(dim.op, ast.USub):
                continue  # stride(-1) is the element stride, not a row stride
            start, end = ctx.src.span(arg)
            new = f"{ctx.src.text(arg.func.value)}.shape[-1]"
            yield _mutant(arg, "stride_to_row_length", ctx.src.text(arg), new, [Edit(start, end, new)])


_TUNING = re.compile(r"BLOCK|WARP|STAGE|GROUP|num_", re.IGNORECASE)


def constexpr_ignored(ctx: _Context) -> Iterator[Mutant]:
    """An option (a ``tl.constexpr`` parameter that is not a tuning size) ignored in one kernel: each
    ``if`` on it forced to ``False`` (never honoured) and to ``True`` (always taken)."""
    for fn in ctx.kernels:
        options = set()
        for arg in [*fn.args.args, *fn.args.kwonlyargs]:
            annotation = _dotted(arg.annotation) if arg.annotation is not None else ""
            if annotation.rpartition(".")[2] == "constexpr" and not _TUNING.search(arg.arg):
                options.add(arg.arg)
        if not options:
            continue
        for node in _walk_body(fn):
            if not isinstance(node, ast.If):
                continue
            used = {n.id for n in ast.walk(node.test) if isinstance(n, ast.Name)} & options
            if not used:
                continue
            start, end = ctx.src.span(node.test)
            text = ctx.src.text(node.test)
            for forced in ("False", "True"):
                yield _mutant(
                    node.test,
                    "constexpr_ignored",
                    f"if {text}:",
                    f"if {forced}:",
                    [Edit(start, end, forced)],
                )


OPERATORS: dict[str, Callable[[_Context], Iterator[Mutant]]] = {
    "mask_compare": mask_compare,
    "load_other": load_other,
    "reduction_axis": reduction_axis,
    "drop_term": drop_term,
    "drop_upcast": drop_upcast,
    "swap_where": swap_where,
    "stride_to_row_length": stride_to_row_length,
    "constexpr_ignored": constexpr_ignored,
}


def generate_mutants(source: bytes | str, file: str, operators: list[str] | None = None) -> list[Mutant]:
    """All mutants of one file's source, sorted by line; ``file`` is recorded as the mutants' path.

    Raises ``SyntaxError`` when the source does not parse and ``KeyError`` for an unknown operator."""
    data = source.encode() if isinstance(source, str) else source
    tree = ast.parse(data, filename=file)
    ctx = _Context(_Source(data), tree)
    names = list(OPERATORS) if operators is None else operators
    mutants: list[Mutant] = []
    seen: set[tuple] = set()
    for name in names:
        for m in OPERATORS[name](ctx):
            key = (m.operator, m.edits)
            if key in seen:  # the same edit reached twice (e.g. a term feeding two stores)
                continue
            seen.add(key)
            mutants.append(m)
    mutants.sort(key=lambda m: (m.line, m.col, list(OPERATORS).index(m.operator)))
    counts: dict[tuple[int, str], int] = {}
    numbered = []
    for m in mutants:
        k = counts.get((m.line, m.operator), 0)
        counts[(m.line, m.operator)] = k + 1
        numbered.append(
            Mutant(file=file, line=m.line, col=m.col, operator=m.operator, description=m.description,
                   edits=m.edits, index=k)
        )  # fmt: skip
    return numbered

"""Cross-compiles a Triton kernel for a Hopper GPU on a machine without one, to check code properties
(vectorized loads) that the CPU interpreter cannot show. Triton's NVIDIA backend (in its Linux wheels)
is all it needs; the test skips where it is absent. The compile runs in a child process with the
interpreter off (under TRITON_INTERPRET=1 every ``@triton.jit`` function is an interpreted one, which
Triton's compiler does not take)."""

from __future__ import annotations

import collections
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

_REPO = Path(__file__).resolve().parents[2]


def ptx_stats(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each spec, counts from its kernel's PTX, all compiled in one child process: ``loads`` and
    ``stores`` (Counters of global memory instructions with their qualifiers: ``...v4.b32`` moves 16
    bytes per thread) and ``ex2`` (exponentials: ``ex2.approx`` instructions). A spec: ``module`` and
    ``kernel`` (its name), ``args`` (the non-constexpr arguments' Triton types: "*bf16", "i64"...),
    ``constexprs``, ``aligned`` (the arguments Triton's launcher would mark divisible by 16: pointers
    16-byte aligned, integers multiples of 16), ``num_warps`` and ``capability`` (default 90:
    H100/H200)."""
    pythonpath = os.pathsep.join(p for p in (str(_REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": pythonpath}
    proc = subprocess.run(
        [sys.executable, __file__, json.dumps(specs)], env=env, capture_output=True, text=True, timeout=600
    )
    if proc.returncode == 3:
        pytest.skip(proc.stdout.strip())
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return [
        {
            "loads": collections.Counter(r["loads"]),
            "stores": collections.Counter(r["stores"]),
            "ex2": r["ex2"],
        }
        for r in results
    ]


def vector_count(ops: collections.Counter) -> int:
    """How many of ``ops`` move 16 bytes per thread."""
    return sum(n for op, n in ops.items() if op.endswith(".v4.b32"))


def _compile(spec: dict[str, Any]) -> dict[str, Any]:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = getattr(importlib.import_module(spec["module"]), spec["kernel"])
    consts = spec["constexprs"]
    signature = {n: ("constexpr" if n in consts else spec["args"][n]) for n in kernel.arg_names}
    attrs = {(kernel.arg_names.index(n),): [["tt.divisibility", 16]] for n in spec["aligned"]}
    source = ASTSource(fn=kernel, signature=signature, constexprs=consts, attrs=attrs)
    capability = spec.get("capability", 90)
    try:
        compiled = triton.compile(
            source, target=GPUTarget("cuda", capability, 32), options={"num_warps": spec["num_warps"]}
        )
    except RuntimeError as exc:  # a triton without the NVIDIA backend or its ptxas
        if "backend" in str(exc).lower() or "ptxas" in str(exc).lower():
            print(f"cannot cross-compile for sm_{capability}: {exc}")
            sys.exit(3)
        raise
    ptx = compiled.asm["ptx"]
    return {
        "loads": collections.Counter(re.findall(r"ld\.global[\w.:]*", ptx)),
        "stores": collections.Counter(re.findall(r"st\.global[\w.:]*", ptx)),
        "ex2": len(re.findall(r"\bex2\.approx", ptx)),
    }


if __name__ == "__main__":
    try:
        import triton.backends.compiler  # noqa: F401
        import triton.compiler  # noqa: F401
        from triton.backends import backends
    except ImportError as exc:
        print(f"cannot cross-compile: {exc}")
        sys.exit(3)
    if "nvidia" not in backends:
        print(f"cannot cross-compile: this triton has no NVIDIA backend (it has {sorted(backends)})")
        sys.exit(3)
    print(json.dumps([_compile(spec) for spec in json.loads(sys.argv[1])]))

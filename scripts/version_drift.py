"""Print the installed versions of the packages a constraints file pins, and where they differ.

``python scripts/version_drift.py constraints/known-good.txt``: CI installs the newest releases our
ranges admit; this says which of them differ from the last set that was green (informational: exit 0).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys

from packaging.requirements import Requirement


def pinned(path: str) -> dict[str, str]:
    """``name -> version`` for every ``name==version`` line of a constraints file."""
    out = {}
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            req = Requirement(line)
            (spec,) = req.specifier
            out[req.name] = spec.version
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("constraints", help="a pip constraints file of name==version lines")
    args = parser.parse_args(argv)
    drift = []
    for name, version in sorted(pinned(args.constraints).items()):
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = "not installed"
        if installed.split("+")[0] != version:
            drift.append(f"  {name}: {installed} (known good: {version})")
    core = ", ".join(f"{n} {importlib.metadata.version(n)}" for n in ("torch", "triton", "transformers"))
    print(f"installed: {core}")
    print("drift from " + args.constraints + (":\n" + "\n".join(drift) if drift else ": none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The "peer" arm of the benchmarks: liger-kernel 0.8.5 (the reference release), run in a child process
whose ``sys.path`` puts a folder holding that release's ``liger_kernel`` package (an unzipped wheel)
ahead of this repository. Shared by ``distill.py`` and ``sweep.py``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent


def add_peer_path_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--peer-path",
        default=os.environ.get("LIGER_PEER_PATH", str(_REPO / ".peer" / "liger085")),
        help="folder holding liger-kernel 0.8.5's liger_kernel package (default $LIGER_PEER_PATH or .peer/liger085)",
    )


def child_env(peer_path: str | None) -> tuple[dict[str, str] | None, str]:
    """(environment for a child process, "") with this repository on PYTHONPATH, and ``peer_path`` ahead of
    it when given; (None, why) when ``peer_path`` holds no ``liger_kernel`` package."""
    env = dict(os.environ)
    path = [str(_REPO)]
    if peer_path is not None:
        peer = Path(peer_path).resolve()
        if not (peer / "liger_kernel" / "__init__.py").is_file():
            return None, f"n/a: no liger_kernel package in {peer}"
        path.insert(0, str(peer))  # ahead of the repository: `import liger_kernel` finds the peer
    env["PYTHONPATH"] = os.pathsep.join(path + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env, ""


def peer_version(peer_path: str) -> str:
    """The release's version, from its ``liger_kernel-<version>.dist-info`` folder."""
    metas = sorted(Path(peer_path).glob("liger_kernel-*.dist-info"))
    return metas[0].name.removeprefix("liger_kernel-").removesuffix(".dist-info") if metas else "unknown"


def import_peer(peer_path: str) -> str:
    """In the child: imports ``liger_kernel`` and checks it is the peer's (``sys.path`` must already start
    with ``peer_path``); returns its version. Raises ImportError otherwise."""
    import liger_kernel

    if not Path(liger_kernel.__file__).resolve().is_relative_to(Path(peer_path).resolve()):
        raise ImportError(f"liger_kernel came from {liger_kernel.__file__}, not the peer path")
    return getattr(liger_kernel, "__version__", "") or peer_version(peer_path)

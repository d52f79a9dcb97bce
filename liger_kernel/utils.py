"""Device and version helpers under the names Liger Kernel 0.8 gives them (``liger_kernel.utils``).

Training frameworks and Liger Kernel's own test suite import these; they depend only on torch
(transformers and peft are imported when a function needs them, never at import time).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import torch


def is_peft_available() -> bool:
    """Whether ``peft`` is installed (checked without importing it)."""
    return importlib.util.find_spec("peft") is not None


def is_npu_available() -> bool:
    """Whether an Ascend NPU is usable (``torch_npu`` installed and a device present)."""
    if importlib.util.find_spec("torch_npu") is None:
        return False
    try:
        import torch_npu  # noqa: F401

        return bool(torch.npu.is_available())
    except Exception:  # a broken torch_npu install means no NPU, not a crash at import of the caller
        return False


def _xpu_available() -> bool:
    return hasattr(torch, "xpu") and torch.xpu.is_available()


def infer_device() -> str:
    """The accelerator type to put tensors on: "cuda" (NVIDIA and ROCm), "npu", "xpu", else "cpu"."""
    if torch.cuda.is_available():
        return "cuda"
    if is_npu_available():
        return "npu"
    if _xpu_available():
        return "xpu"
    return "cpu"


def infer_comm_backend() -> str:
    """The ``torch.distributed`` backend for this machine: nccl, hccl (NPU), xccl (XPU), mpi or gloo."""
    dist = torch.distributed
    if dist.is_nccl_available() and torch.cuda.is_available():
        return "nccl"
    if is_npu_available():
        return "hccl"
    xccl = getattr(dist.distributed_c10d, "is_xccl_available", None)
    if xccl is not None and xccl() and _xpu_available():
        return "xccl"
    if dist.is_mpi_available():
        return "mpi"
    if dist.is_gloo_available():
        return "gloo"
    raise RuntimeError("no torch.distributed backend is available (tried nccl, hccl, xccl, mpi, gloo)")


def infer_device_arch(device_id: int = 0) -> str:
    """A name for the device's architecture: "sm_<major><minor>" (NVIDIA), the gfx target (ROCm), else
    the device type of ``infer_device()`` ("npu", "xpu", "cpu")."""
    device = infer_device()
    if device != "cuda":
        return device
    if torch.version.hip:
        name = getattr(torch.cuda.get_device_properties(device_id), "gcnArchName", "")
        return name.split(":")[0] or device
    major, minor = torch.cuda.get_device_capability(device_id)
    return f"sm_{major}{minor}"


def get_total_gpu_memory() -> int:
    """Total memory of device 0 of ``infer_device()`` in GiB (whole GiB, rounded down)."""
    device = infer_device()
    if device == "cpu":
        raise RuntimeError("get_total_gpu_memory needs a GPU (cuda, npu or xpu); none is available")
    return getattr(torch, device).get_device_properties(0).total_memory // 2**30


def transformers_version_dispatch(
    required_version: str,
    before_fn: Callable[..., Any],
    after_fn: Callable[..., Any],
    before_args: tuple = (),
    after_args: tuple = (),
    before_kwargs: dict | None = None,
    after_kwargs: dict | None = None,
) -> Any:
    """``before_fn(*before_args, **before_kwargs)`` when the installed transformers is older than
    ``required_version``, else ``after_fn(*after_args, **after_kwargs)``."""
    from packaging.version import Version
    from transformers import __version__ as transformers_version

    if Version(transformers_version) < Version(required_version):
        return before_fn(*before_args, **(before_kwargs or {}))
    return after_fn(*after_args, **(after_kwargs or {}))


__all__ = [
    "get_total_gpu_memory",
    "infer_comm_backend",
    "infer_device",
    "infer_device_arch",
    "is_npu_available",
    "is_peft_available",
    "transformers_version_dispatch",
]

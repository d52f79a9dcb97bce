"""Device resolution and Triton interpreter switch."""

from __future__ import annotations

import os

import torch

__all__ = ["set_interpreter_if_no_gpu", "resolve_device"]


def resolve_device(device_option: str = "auto") -> str:
    """Resolve a ``--liger-device`` value to a torch device string.

    ``"auto"`` gives ``"cuda"`` when ``torch.cuda.is_available()`` and ``"cpu"`` otherwise; any
    other value must parse as a ``torch.device`` and is returned as given (normalised).

    Raises:
        ValueError: for a string torch cannot parse as a device.
    """
    option = (device_option or "auto").strip()
    if option == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return str(torch.device(option))
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"liger_testing: invalid device {device_option!r}: {exc}") from exc


def set_interpreter_if_no_gpu(device_option: str = "auto") -> str:
    """Resolve the test device and turn on the Triton interpreter when it is the CPU.

    When the resolved device is ``cpu`` this sets ``os.environ["TRITON_INTERPRET"] = "1"``. Triton
    reads that variable when ``@triton.jit`` decorates a function, so this must run before any module
    defining kernels is imported; the pytest plugin calls it from ``pytest_load_initial_conftests``
    (before the rootdir ``conftest.py`` files are imported) and again in ``pytest_configure``.

    Returns:
        The resolved device string (``"cuda"``, ``"cpu"``, ``"cuda:1"``, ...).
    """
    device = resolve_device(device_option)
    if torch.device(device).type == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    return device

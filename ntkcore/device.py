"""Device and dtype, resolved in one place.

Every function of ``ntkcore`` that creates tensors takes ``device=`` and ``dtype=`` arguments and passes them
through :func:`resolve`. When ``device`` is ``None`` the environment variable ``NTKCORE_DEVICE`` decides
(``cpu``, ``cuda``, ``cuda:N`` or ``auto``); when that is unset too, the device is the CPU. Theory runs in
float64 by default; training loops may ask for float32.

>>> from ntkcore import device
>>> device.resolve("cpu")
(device(type='cpu'), torch.float64)
"""
from __future__ import annotations

import os

import torch

ENV_VAR = "NTKCORE_DEVICE"
DEFAULT_DTYPE = torch.float64

_DTYPES = {
    "float64": torch.float64, "double": torch.float64,
    "float32": torch.float32, "float": torch.float32,
}
_ACCEPTED = "'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'"


def cuda_available() -> bool:
    return torch.cuda.is_available()


def resolve_device(device=None) -> torch.device:
    """Return the ``torch.device`` named by ``device``, or by ``$NTKCORE_DEVICE`` when ``device`` is None.

    ``"auto"`` picks CUDA when available, else the CPU. Asking for CUDA where there is none raises a
    ValueError that says how to fall back.
    """
    source = "device"
    if device is None:
        device = os.environ.get(ENV_VAR, "").strip() or "cpu"
        source = f"${ENV_VAR}"
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        name = device.strip().lower()
        if name == "auto":
            return torch.device("cuda") if cuda_available() else torch.device("cpu")
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise ValueError(f"{source}={device!r} is not a device; accepted: {_ACCEPTED}") from None
    else:
        raise ValueError(f"{source} must be a string or torch.device ({_ACCEPTED}), got {type(device).__name__}")
    if dev.type == "cuda" and not cuda_available():
        raise ValueError(
            f"{source}={str(device)!r} asks for CUDA, but this torch build sees no CUDA device "
            f"(torch {torch.__version__}). Use 'cpu', or 'auto' to fall back to the CPU."
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"{source}={str(device)!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"{source}={str(device)!r} asks for MPS, which is not available here; use 'cpu'")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{source}={str(device)!r} is not supported; accepted: {_ACCEPTED}")
    return dev


def resolve_dtype(dtype=None) -> torch.dtype:
    """Return a floating ``torch.dtype``; ``None`` means float64 (the default for theory)."""
    if dtype is None:
        return DEFAULT_DTYPE
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype={dtype!r} is not accepted; accepted: {sorted(_DTYPES)}")
        return _DTYPES[dtype]
    if isinstance(dtype, torch.dtype) and dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
        return dtype
    try:  # numpy dtypes and types
        import numpy as np

        name = np.dtype(dtype).name
        if name in _DTYPES:
            return _DTYPES[name]
    except TypeError:
        pass
    raise ValueError(f"dtype={dtype!r} is not a floating dtype; accepted: torch.float64, torch.float32, 'float64', 'float32'")


def resolve(device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """Resolve both at once: ``(torch.device, torch.dtype)``."""
    return resolve_device(device), resolve_dtype(dtype)


def _cgroup_limit() -> int | None:
    """The memory limit of this process's control group (containers), or None where there is none or it is unknown."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            return int(text)
    return None


def memory_bytes(device=None) -> int | None:
    """Total memory of ``device`` in bytes: the GPU's memory for CUDA, else the machine's physical memory (capped by
    a container's memory limit); None where it cannot be determined. Sizes that cannot fit are refused up front
    (``ntkcore._checks.check_memory``) instead of swapping or being killed."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        return int(torch.cuda.get_device_properties(dev).total_memory)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None
    limit = _cgroup_limit()
    return total if limit is None else min(total, limit)


def available_devices() -> list[str]:
    """Devices usable here, CPU first: ``['cpu']`` or ``['cpu', 'cuda']`` (for tests and benchmarks)."""
    return ["cpu"] + (["cuda"] if cuda_available() else [])


def describe(device=None) -> str:
    """One line for a chapter's first cell: the device in use, and the torch build."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        return f"ntkcore on {dev} ({name}), torch {torch.__version__}"
    return f"ntkcore on cpu ({torch.get_num_threads()} threads), torch {torch.__version__}"

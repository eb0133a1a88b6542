"""Argument checks shared by every module: bad input fails at the boundary with a ValueError that names the
argument and what is accepted, never deep inside with a shape error."""
from __future__ import annotations

import numbers

import numpy as np
import torch

from .device import resolve


def as_tensor(x, name: str, *, ndim=None, device=None, dtype=None, finite=True) -> torch.Tensor:
    """Convert ``x`` (numpy array, tensor or nested list) to a floating tensor and check it.

    Tensors keep their device and floating dtype unless ``device``/``dtype`` are given; numpy input becomes a
    float64 tensor on the resolved device. ``ndim`` may be an int or a tuple of accepted ranks.
    """
    if isinstance(x, torch.Tensor):
        t = x
        if not t.is_floating_point():
            t = t.to(resolve(None, dtype)[1])
        if device is not None or dtype is not None:
            dev, dt = resolve(device if device is not None else t.device, dtype if dtype is not None else t.dtype)
            t = t.to(device=dev, dtype=dt)
    else:
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be an array of numbers, got {type(x).__name__}") from None
        dev, dt = resolve(device, dtype)
        t = torch.as_tensor(arr, device=dev, dtype=dt)
    if ndim is not None:
        accepted = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if t.ndim not in accepted:
            raise ValueError(f"{name} must have {' or '.join(map(str, accepted))} dimension(s), got shape {tuple(t.shape)}")
    if finite and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return t


def check_real(value, name: str, *, low=None, high=None, low_open=False, high_open=False) -> float:
    """A finite real number in [low, high] (open ends where asked)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    v = float(value)
    if low is not None and (v < low or (low_open and v == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (v > high or (high_open and v == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value!r}")
    return v


def check_int(value, name: str, *, low=None, high=None) -> int:
    """An integer in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if low is not None and v < low:
        raise ValueError(f"{name} must be >= {low}, got {v}")
    if high is not None and v > high:
        raise ValueError(f"{name} must be <= {high}, got {v}")
    return v


def check_choice(value, name: str, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not known; accepted: {', '.join(map(repr, choices))}")
    return value


def generator(seed, device="cpu") -> torch.Generator:
    """A seeded ``torch.Generator``; ``seed`` may be an int or an existing generator (returned as is)."""
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator(device=device)
    g.manual_seed(check_int(seed, "seed", low=0))
    return g

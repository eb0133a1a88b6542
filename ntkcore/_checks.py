"""The one vocabulary of argument checks, shared by every module: bad input fails at the boundary with a ValueError
that names the argument and what is accepted, never deep inside with a shape error.

* numbers: :func:`check_real`, :func:`check_int`, :func:`check_choice`;
* arrays: :func:`as_tensor` (any array of numbers, finite), :func:`batch` (inputs with a batch axis first),
  :func:`inputs` (a pair ``x1``, ``x2`` of inputs of the same per-example shape), :func:`labels` (one per input),
  :func:`times` (time points ≥ 0), :func:`square` (kernel matrices);
* models: :func:`trainable_parameters`;
* randomness: :func:`generator` (every random draw takes a seed or a generator).
"""
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
    # one sum decides for most inputs (a finite sum means finite entries); the full check only when it is not
    if finite and t.numel() and not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return t


def batch(x, name: str, *, like: torch.Tensor | None = None, ndim=None, min_ndim: int = 1, device=None, dtype=None,
          nonempty: bool = True, same_device: bool = False) -> torch.Tensor:
    """Inputs with the batch axis first: :func:`as_tensor`, on ``like``'s device and in its dtype when given, with
    ``ndim`` (an int or a tuple) or at least ``min_ndim`` dimensions and, if ``nonempty``, at least one example.
    ``same_device`` rejects a tensor on another device than ``like`` (a model's parameters) instead of moving it."""
    if like is not None:
        if same_device and isinstance(x, torch.Tensor) and x.device != like.device:
            raise ValueError(f"{name} is on {x.device} but the model's parameters are on {like.device}; "
                             f"move one of them (e.g. {name}.to({str(like.device)!r}))")
        device, dtype = like.device, like.dtype
    t = as_tensor(x, name, ndim=ndim, device=device, dtype=dtype)
    if t.ndim < min_ndim or (nonempty and t.shape[0] == 0):
        raise ValueError(f"{name} must be a batch of inputs with shape (n, ...), n ≥ 1, got shape {tuple(t.shape)}")
    return t


def inputs(x1, x2=None, *, ndim=2, device=None, dtype=None, nonempty: bool = False, names=("x1", "x2"),
           feature: str | None = None):
    """A pair of input batches ``(x1, x2)``: ``x2`` None stays None; ``x2`` follows ``x1``'s device and dtype and
    must have its per-example shape (``feature`` names it in the error; default "feature dimension" for ``ndim=2``).
    ``nonempty`` also requires at least one example and one feature."""
    t1 = batch(x1, names[0], ndim=ndim, device=device, dtype=dtype, nonempty=False)
    if nonempty and (t1.shape[0] == 0 or t1[0].numel() == 0):
        raise ValueError(f"{names[0]} must be non-empty, got shape {tuple(t1.shape)}")
    if x2 is None:
        return t1, None
    t2 = batch(x2, names[1], ndim=ndim, like=t1, nonempty=False)
    if t2.shape[1:] != t1.shape[1:]:
        what = feature or ("feature dimension" if t1.ndim == 2 else "per-example shape")
        raise ValueError(f"{names[1]} must have the {what} of {names[0]} ({', '.join(map(str, t1.shape[1:]))}), got "
                         f"shape {tuple(t2.shape)}")
    if nonempty and t2.shape[0] == 0:
        raise ValueError(f"{names[1]} must be non-empty, got shape {tuple(t2.shape)}")
    return t1, t2


def labels(y, n: int, *, like: torch.Tensor, name: str = "y", ndim=1, of: str = "training input") -> torch.Tensor:
    """Labels or targets with one row per input (``n`` of them) and, if they have more than one axis, at least one
    column, on ``like``'s device and in its dtype."""
    t = as_tensor(y, name, ndim=ndim, device=like.device, dtype=like.dtype)
    if t.shape[0] != n:
        raise ValueError(f"{name} must have {n} rows, one per {of}, got shape {tuple(t.shape)}")
    if t.ndim > 1 and t[0].numel() == 0:
        raise ValueError(f"{name} must have at least one column (output), got shape {tuple(t.shape)}")
    return t


def times(t, name: str, *, like: torch.Tensor | None = None, nonempty: bool = False, increasing: bool = False,
          from_zero: bool = False) -> torch.Tensor:
    """Time points ``≥ 0`` (a number or a 1-D array) as a 1-D tensor on ``like``'s device and in its dtype;
    ``increasing`` requires strictly increasing times, ``from_zero`` a grid whose first time is 0."""
    kw = {} if like is None else {"device": like.device, "dtype": like.dtype}
    t = as_tensor(t, name, ndim=(0, 1), **kw).reshape(-1)
    if nonempty and t.numel() == 0:
        raise ValueError(f"{name} must hold at least one time")
    if bool((t < 0).any()):
        raise ValueError(f"{name} must be >= 0 (times since the start of training), got min {float(t.min())}")
    if increasing and bool((t[1:] <= t[:-1]).any()):
        raise ValueError(f"{name} must be strictly increasing")
    if from_zero and (t.numel() == 0 or float(t[0]) != 0.0):
        raise ValueError(f"{name} must start at 0")
    return t


def square(k, name: str, *, like: torch.Tensor | None = None, symmetric: bool = False,
           nonempty: bool = False) -> torch.Tensor:
    """A square ``(n, n)`` matrix; ``symmetric`` also requires ``K = Kᵀ`` up to rounding (a kernel matrix)."""
    kw = {} if like is None else {"device": like.device, "dtype": like.dtype}
    k = as_tensor(k, name, ndim=2, **kw)
    if k.shape[0] != k.shape[1] or (nonempty and k.shape[0] == 0):
        at_least = " with n >= 1" if nonempty else ""
        raise ValueError(f"{name} must be a square (n, n) kernel matrix{at_least}, got shape {tuple(k.shape)}")
    if symmetric:
        scale = k.abs().max().clamp_min(torch.finfo(k.dtype).tiny) if k.numel() else 1.0
        if k.numel() and not bool(((k - k.T).abs() <= 1e3 * torch.finfo(k.dtype).eps * scale).all()):
            raise ValueError(f"{name} must be symmetric (a kernel matrix); max |K - K^T| = "
                             f"{(k - k.T).abs().max():.3g}")
    return k


def trainable_parameters(model) -> dict:
    """The trainable parameters (``requires_grad=True``) of a ``torch.nn.Module`` by name; a ValueError for anything
    else, or for a model with none (its NTK would be zero)."""
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True); its NTK would be zero")
    return params


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

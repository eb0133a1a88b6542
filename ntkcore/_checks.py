"""The one vocabulary of argument checks, shared by every module: bad input fails at the boundary with a ValueError
that names the argument and what is accepted, never deep inside with a shape error.

* numbers: :func:`check_real`, :func:`check_variance`, :func:`check_int`, :func:`check_bool`, :func:`check_choice`, :func:`check_depth`;
* arrays: :func:`as_tensor` (any array of real numbers, finite), :func:`batch` (inputs with a batch axis first),
  :func:`inputs` (a pair ``x1``, ``x2`` of inputs of the same per-example shape), :func:`labels` (one per input),
  :func:`class_labels` (integer classes), :func:`times` (time points ≥ 0), :func:`square` (kernel matrices),
  :func:`as_numpy` (for the functions that compute in numpy);
* models: :func:`trainable_parameters`, :func:`model_input` (the fast check in a model's forward);
* sizes: :func:`check_memory` (what a call allocates must fit in the device's memory), :data:`MAX_INT`;
* results: :func:`finite_result` (a result that overflows is a ValueError, never inf or NaN);
* randomness: :func:`generator` (every random draw takes a seed or a generator).

Policy for mixed inputs
-----------------------
One policy holds for every public function of :mod:`ntkcore`:

1. **Real numbers only.** An array argument is a numpy array, a torch tensor or a nested list of numbers, of
   bool, integer or floating dtype. Strings and bytes (numeric strings such as ``"1"`` too), complex numbers,
   object arrays and None raise a ValueError naming the argument (``x must be an array of real numbers ...``);
   nothing is parsed or cast to real with a warning. Hyper-parameters are Python real numbers (:func:`check_real`,
   :func:`check_int`): bool and str are rejected, numpy scalars of real dtype are accepted. The variances of the
   kernels (a layer's ``weight_var``, ``bias_var``; the NDK's ``sigma0_sq``, ``sigma_sq``) may also be 0-d floating
   tensors, so that the kernels can be differentiated with respect to them (:func:`check_variance`).
2. **One reference per call.** Each function has a reference array: its first array argument (``x1``, the kernel
   matrix, the training inputs) or, for functions of a model, the model's parameters. The reference keeps a
   tensor's device and floating dtype; numpy input, lists and integer or bool tensors become float64 on the
   default device (:func:`ntkcore.device.resolve`).
3. **No silent moves, no silent casts.** Every other array argument is checked against the reference (``like=``
   of the helpers below): a tensor on another device raises a ValueError naming both devices and suggesting
   ``.to(device)``; a floating tensor of another floating dtype raises a ValueError naming both dtypes and
   suggesting ``.to(dtype)``. Numpy arrays, lists and integer or bool tensors carry no floating dtype of their own:
   they are converted to the reference's device and dtype. So do time points (:func:`times`: ``times``, ``tau``,
   ``t1``, ...): they are coordinates, not data, and a grid from ``torch.linspace`` is float32 unless asked
   otherwise; a tensor of times must still be on the reference's device.
4. **Explicit conversions are not mixes.** An explicit ``device=`` or ``dtype=`` argument of a function (passed
   on to the helpers) overrides: every array of the call is converted to it. Functions documented to compute their
   theory in float64 whatever the input (:mod:`ntkcore.ndk`, :mod:`ntkcore.drift`) pass ``dtype=torch.float64``,
   and :func:`ntkcore.langevin.simulate` converts to its ``dtype`` (float32 by default).

Sizes are bounded where a request could otherwise run without end or exhaust memory: depths (numbers of layers) are at
most :data:`MAX_DEPTH`, and a model or simulation whose parameters and buffers would not fit in the device's memory
(:func:`ntkcore.device.memory_bytes`) is refused before anything is allocated (:func:`check_memory`).
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from .device import memory_bytes, resolve

MAX_DEPTH = 1000
"""Largest number of layers (``depth``, ``L``, blocks) any function accepts. The kernels' cost grows linearly in the
depth, and a deep network's kernel has converged to its fixed point long before (book appendix "Closed-form kernels
and conventions"); deeper requests are almost always a typo, and ``10**6`` layers would run for hours."""

_INTEGER_DTYPES = tuple(getattr(torch, n) for n in ("bool", "uint8", "int8", "int16", "int32", "int64", "uint16",
                                                    "uint32", "uint64") if hasattr(torch, n))
_FLOATING_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
_TORCH_NUMPY = tuple(np.dtype(n) for n in ("float64", "float32", "float16", "int64", "int32", "int16", "int8",
                                           "uint8", "bool"))
_REAL = "bool, integer or floating dtype"


# ---------------------------------------------------------------------------------------------------------------
# Arrays
# ---------------------------------------------------------------------------------------------------------------

def _not_real(name: str, what: str) -> ValueError:
    return ValueError(f"{name} must be an array of real numbers (a numpy array, torch tensor or nested list of "
                      f"{_REAL}), got {what}")


def _real_tensor(x: torch.Tensor, name: str) -> None:
    if x.dtype not in _FLOATING_DTYPES and x.dtype not in _INTEGER_DTYPES:
        raise _not_real(name, f"a tensor of dtype {x.dtype}")


def _real_numpy(x, name: str) -> np.ndarray:
    """``x`` (anything but a tensor) as a numpy array of a real dtype, without parsing strings."""
    if x is None or isinstance(x, (str, bytes)):
        raise _not_real(name, repr(x) if x is None or len(x) < 40 else type(x).__name__)
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError, RuntimeError) as err:  # ragged lists, tensors that need grad or live on a GPU
        raise _not_real(name, f"{type(x).__name__} that numpy cannot read as one array ({err})") from None
    if arr.dtype.kind not in "biuf":
        raise _not_real(name, f"an array of dtype {arr.dtype}")
    return arr


def _phrase(like_name: str, verb: str) -> str:
    """``like_name`` with ``verb`` ("is" or "has") agreeing with it ("the model's parameters are")."""
    plural = like_name.endswith("s")
    return f"{like_name} {({'is': 'are', 'has': 'have'} if plural else {}).get(verb, verb)}"


def _check_against(t: torch.Tensor, name: str, like: torch.Tensor, like_name: str | None, device, dtype) -> None:
    """Rule 3 of the module docstring: ``t`` (a tensor argument) against the reference ``like``."""
    ref = like_name or "the reference array of this call"
    if device is None and t.device != like.device:
        raise ValueError(f"{name} is on {t.device} but {_phrase(ref, 'is')} on {like.device}; move it with "
                         f"{name}.to({str(like.device)!r}) (ntkcore never moves arrays between devices silently)")
    if dtype is None and t.is_floating_point() and t.dtype != like.dtype:
        raise ValueError(f"{name} has dtype {t.dtype} but {_phrase(ref, 'has')} dtype {like.dtype}; convert it with "
                         f"{name}.to({like.dtype}) (ntkcore never mixes floating dtypes silently)")


def as_tensor(x, name: str, *, ndim=None, like: torch.Tensor | None = None, like_name: str | None = None,
              device=None, dtype=None, finite: bool = True) -> torch.Tensor:
    """Convert ``x`` (numpy array, tensor or nested list of real numbers) to a floating tensor and check it.

    Without ``like``, ``x`` is the reference of its call: a tensor keeps its device and floating dtype (an integer or
    bool tensor becomes float64), numpy input becomes a float64 tensor on the default device. With ``like`` (the
    reference, named ``like_name`` in errors) a tensor must be on ``like``'s device and, if floating, have its dtype;
    anything else is converted to them (module docstring, "Policy for mixed inputs"). An explicit ``device``/
    ``dtype`` overrides both: ``x`` is converted to it. ``ndim`` may be an int or a tuple of accepted ranks;
    ``finite`` rejects NaN and inf.
    """
    if isinstance(x, torch.Tensor):
        _real_tensor(x, name)
        if like is not None:
            _check_against(x, name, like, like_name, device, dtype)
        if x.device.type == "meta":
            raise ValueError(f"{name} is a tensor on the meta device, which holds no values")
        floating = x.is_floating_point()
        dev = x.device if device is None else resolve(device, None)[0]
        dt = dtype if dtype is not None else (x.dtype if floating and like is None else
                                              like.dtype if like is not None else None)
        t = x.to(device=dev, dtype=resolve(None, dt)[1])
    else:
        arr = _real_numpy(x, name)
        dev = device if device is not None else (like.device if like is not None else None)
        dt = dtype if dtype is not None else (like.dtype if like is not None else None)
        dev, dt = resolve(dev, dt)
        t = torch.as_tensor(arr if arr.dtype in _TORCH_NUMPY else arr.astype(np.float64), device=dev, dtype=dt)
    if ndim is not None:
        accepted = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if t.ndim not in accepted:
            raise ValueError(f"{name} must have {' or '.join(map(str, accepted))} dimension(s), got shape {tuple(t.shape)}")
    # one sum decides for most inputs (a finite sum means finite entries); the full check only when it is not
    if finite and t.numel() and not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return t


def as_numpy(x, name: str, *, dtype=np.float64, finite: bool = True) -> np.ndarray:
    """``x`` (numpy array, tensor on any device or nested list of real numbers) as a numpy array, for the functions
    that compute in numpy (statistics, preprocessing, label noise). ``dtype=None`` keeps the array's real dtype
    (for integer classes); ``finite`` rejects NaN and inf."""
    if isinstance(x, torch.Tensor):
        _real_tensor(x, name)
        if x.device.type == "meta":
            raise ValueError(f"{name} is a tensor on the meta device, which holds no values")
        arr = x.detach().cpu().numpy()
    else:
        arr = _real_numpy(x, name)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    if finite and arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def batch(x, name: str, *, like: torch.Tensor | None = None, like_name: str | None = None, ndim=None,
          min_ndim: int = 1, device=None, dtype=None, nonempty: bool = True, same_device: bool = False) -> torch.Tensor:
    """Inputs with the batch axis first: :func:`as_tensor` against the reference ``like`` when given, with ``ndim``
    (an int or a tuple) or at least ``min_ndim`` dimensions and, if ``nonempty``, at least one example.
    ``same_device`` (kept for older calls; a device mismatch is always an error now) names the reference "the
    model's parameters" in errors."""
    if like is not None and same_device and like_name is None:
        like_name = "the model's parameters"
    t = as_tensor(x, name, ndim=ndim, like=like, like_name=like_name, device=device, dtype=dtype)
    if t.ndim < min_ndim or (nonempty and t.shape[0] == 0):
        raise ValueError(f"{name} must be a batch of inputs with shape (n, ...), n ≥ 1, got shape {tuple(t.shape)}")
    return t


def inputs(x1, x2=None, *, ndim=2, device=None, dtype=None, nonempty: bool = False, names=("x1", "x2"),
           feature: str | None = None):
    """A pair of input batches ``(x1, x2)``: ``x1`` is the reference, ``x2`` (None stays None) must be on its device,
    in its floating dtype (or be converted by an explicit ``device``/``dtype``) and have its per-example shape
    (``feature`` names it in the error; default "feature dimension" for ``ndim=2``). Examples must hold at least one
    number (``d ≥ 1`` features: a kernel of zero-dimensional inputs is a division by zero); ``nonempty`` also
    requires at least one example in each batch."""
    what = feature or ("feature dimension" if ndim == 2 else "per-example shape")
    t1 = batch(x1, names[0], ndim=ndim, device=device, dtype=dtype, nonempty=False)
    if nonempty and t1.shape[0] == 0:
        raise ValueError(f"{names[0]} must be non-empty, got shape {tuple(t1.shape)}")
    if math.prod(t1.shape[1:]) == 0:
        raise ValueError(f"{names[0]} must have a {what} of at least 1 (examples of at least one number), got shape "
                         f"{tuple(t1.shape)}")
    if x2 is None:
        return t1, None
    t2 = batch(x2, names[1], ndim=ndim, like=t1, like_name=names[0], device=device, dtype=dtype, nonempty=False)
    if t2.shape[1:] != t1.shape[1:]:
        raise ValueError(f"{names[1]} must have the {what} of {names[0]} ({', '.join(map(str, t1.shape[1:]))}), got "
                         f"shape {tuple(t2.shape)}")
    if nonempty and t2.shape[0] == 0:
        raise ValueError(f"{names[1]} must be non-empty, got shape {tuple(t2.shape)}")
    return t1, t2


def labels(y, n: int, *, like: torch.Tensor, name: str = "y", ndim=1, of: str = "training input",
           like_name: str | None = None, device=None, dtype=None) -> torch.Tensor:
    """Labels or targets with one row per input (``n`` of them) and, if they have more than one axis, at least one
    column, checked against the reference ``like`` (or converted by an explicit ``device``/``dtype``)."""
    t = as_tensor(y, name, ndim=ndim, like=like, like_name=like_name, device=device, dtype=dtype)
    if t.shape[0] != n:
        raise ValueError(f"{name} must have {n} rows, one per {of}, got shape {tuple(t.shape)}")
    if t.ndim > 1 and t[0].numel() == 0:
        raise ValueError(f"{name} must have at least one column (output), got shape {tuple(t.shape)}")
    return t


def whole_numbers(arr: np.ndarray) -> bool:
    """Whether every entry of the numeric array ``arr`` is a whole number that fits an int64 index (``|v| <=``
    :data:`MAX_INT`), so that it can be cast to int64 exactly, without a warning."""
    if arr.dtype.kind == "b" or not arr.size:
        return arr.dtype.kind != "b"
    if arr.dtype.kind in "iu":
        return int(arr.max()) <= MAX_INT and int(arr.min()) >= -MAX_INT
    if arr.dtype.kind != "f" or not np.all(np.isfinite(arr)):
        return False
    return bool(np.all(np.mod(arr, 1) == 0)) and float(np.abs(arr).max()) < 2.0**63


def class_labels(y, name: str, n: int, *, like: torch.Tensor | None = None, like_name: str | None = None,
                 of: str = "input") -> torch.Tensor:
    """Integer classes ``0..C−1``, one per input (``n``), as a ``torch.long`` tensor on ``like``'s device. A tensor
    ``y`` must be on that device; floats are accepted when they hold whole numbers."""
    if isinstance(y, torch.Tensor) and like is not None:
        _check_against(y, name, like, like_name, None, torch.long)  # classes: no floating dtype to match
    raw = as_numpy(y, name, dtype=None)
    if raw.ndim != 1 or raw.dtype.kind == "b":
        raise ValueError(f"{name} must be a 1-d array of integer classes 0..C-1, got shape {raw.shape} and dtype "
                         f"{raw.dtype}")
    if raw.shape[0] != n:
        raise ValueError(f"{name} has {raw.shape[0]} examples but there are {n} {of}s")
    if not whole_numbers(raw) or (raw.size and raw.min() < 0):
        raise ValueError(f"{name} must hold integer classes 0..C-1 (whole numbers up to {MAX_INT})")
    return torch.as_tensor(raw.astype(np.int64), device=None if like is None else like.device)


def times(t, name: str, *, like: torch.Tensor | None = None, like_name: str | None = None, device=None, dtype=None,
          nonempty: bool = False, increasing: bool = False, from_zero: bool = False) -> torch.Tensor:
    """Time points ``≥ 0`` (a number or a 1-D array) as a 1-D tensor on the device of the reference ``like`` (a tensor
    must be there already, unless ``device`` is given) and in its dtype, or in ``dtype``: times carry no floating
    dtype of their own (module docstring, rule 3). ``increasing`` requires strictly increasing times, ``from_zero``
    a grid whose first time is 0."""
    if dtype is None and like is not None:
        dtype = like.dtype
    t = as_tensor(t, name, ndim=(0, 1), like=like, like_name=like_name, device=device, dtype=dtype).reshape(-1)
    if nonempty and t.numel() == 0:
        raise ValueError(f"{name} must hold at least one time")
    if bool((t < 0).any()):
        raise ValueError(f"{name} must be >= 0 (times since the start of training), got min {float(t.min())}")
    if increasing and bool((t[1:] <= t[:-1]).any()):
        raise ValueError(f"{name} must be strictly increasing")
    if from_zero and (t.numel() == 0 or float(t[0]) != 0.0):
        raise ValueError(f"{name} must start at 0")
    return t


def square(k, name: str, *, like: torch.Tensor | None = None, like_name: str | None = None, symmetric: bool = False,
           nonempty: bool = False) -> torch.Tensor:
    """A square ``(n, n)`` matrix; ``symmetric`` also requires ``K = Kᵀ`` up to rounding (a kernel matrix)."""
    k = as_tensor(k, name, ndim=2, like=like, like_name=like_name)
    if k.shape[0] != k.shape[1] or (nonempty and k.shape[0] == 0):
        at_least = " with n >= 1" if nonempty else ""
        raise ValueError(f"{name} must be a square (n, n) kernel matrix{at_least}, got shape {tuple(k.shape)}")
    if symmetric:
        scale = k.abs().max().clamp_min(torch.finfo(k.dtype).tiny) if k.numel() else 1.0
        if k.numel() and not bool(((k - k.T).abs() <= 1e3 * torch.finfo(k.dtype).eps * scale).all()):
            raise ValueError(f"{name} must be symmetric (a kernel matrix); max |K - K^T| = "
                             f"{(k - k.T).abs().max():.3g}")
    return k


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------

def trainable_parameters(model) -> dict:
    """The trainable parameters (``requires_grad=True``) of a ``torch.nn.Module`` by name; a ValueError for anything
    else, or for a model with none (its NTK would be zero)."""
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True); its NTK would be zero")
    return params


def model_input(x, in_features, ref: torch.Tensor | None, name: str = "x") -> None:
    """The check in a model's forward, attribute comparisons only (no pass over the data): ``x`` a tensor on the
    device of the parameter ``ref`` and, if floating, in its dtype (no check without parameters, ``ref`` None).
    ``in_features`` an int: shape ``(..., in_features)``; a tuple, the shape of one example (None: any size):
    shape ``(..., *in_features)``; None: any shape. A model with a known input shape takes floating input only."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor (the model's input), got {type(x).__name__}")
    if isinstance(in_features, tuple):
        tail = x.shape[x.ndim - len(in_features):] if x.ndim >= len(in_features) else None
        if tail is None or any(s is not None and s != d for s, d in zip(in_features, tail)):
            example = ", ".join("N" if s is None else str(s) for s in in_features)
            one = f"({example},)" if len(in_features) == 1 else f"({example})"
            raise ValueError(f"{name} must have shape (n, {example}) (a batch of inputs of shape {one}), got "
                             f"shape {tuple(x.shape)}")
    elif in_features is not None and (x.ndim == 0 or x.shape[-1] != in_features):
        raise ValueError(f"{name} must have shape (n, {in_features}) ({in_features} input features), got shape "
                         f"{tuple(x.shape)}")
    if ref is None:
        return
    _check_against(x, name, ref, "the model's parameters", None, None)
    if in_features is not None and not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor of dtype {ref.dtype} (the model's parameters), got "
                         f"{x.dtype}; convert it with {name}.to({ref.dtype})")


# ---------------------------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------------------------

def check_real(value, name: str, *, low=None, high=None, low_open=False, high_open=False) -> float:
    """A finite real number in [low, high] (open ends where asked): a Python or numpy real number, not bool or str."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    try:
        v = float(value)
    except OverflowError:  # an int beyond the float range
        raise ValueError(f"{name} must be a finite real number, got an integer with {len(str(value))} digits") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    if low is not None and (v < low or (low_open and v == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (v > high or (high_open and v == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value!r}")
    return v


def check_variance(value, name: str, *, positive: bool = False):
    """A variance ``≥ 0`` (``> 0`` with ``positive``): a real number (:func:`check_real`) or a 0-d floating tensor,
    kept as it is so that autograd follows it (the kernels are then differentiable with respect to it, e.g. to fit
    ``weight_var`` by maximizing a marginal likelihood). Like a number, such a tensor takes the dtype and device of
    the kernel."""
    if not isinstance(value, torch.Tensor):
        return check_real(value, name, low=0.0, low_open=positive)
    if value.ndim != 0 or value.dtype not in _FLOATING_DTYPES:
        raise ValueError(f"{name} must be a finite real number {'> 0' if positive else '>= 0'} or a 0-d floating "
                         f"tensor, got a tensor of shape {tuple(value.shape)} and dtype {value.dtype}")
    v = float(value.detach())
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}, got {v!r}")
    return value


MAX_INT = 2**63 - 1
"""Largest integer any argument may be (a 64-bit index, the limit of torch and numpy sizes): larger integers, which
no size, count or seed needs, are refused before they overflow inside torch or numpy."""


def check_int(value, name: str, *, low=None, high=None) -> int:
    """An integer in [low, high] (and ``|value| ≤`` :data:`MAX_INT`): a Python or numpy integer, not bool."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if low is not None and v < low:
        raise ValueError(f"{name} must be >= {low}, got {_short(v)}")
    high = MAX_INT if high is None else min(high, MAX_INT)
    if v > high or v < -MAX_INT:
        raise ValueError(f"{name} must be <= {high}, got {_short(v)}")
    return v


def _short(v: int) -> str:
    """An integer for a message: in full, or its number of digits when it is huge."""
    text = str(v)
    return text if len(text) <= 30 else f"an integer with {len(text.lstrip('-'))} digits"


def all_finite(t: torch.Tensor) -> bool:
    """Whether every entry of ``t`` is finite. A sum is one fast pass, finite only if every entry is (inf and NaN
    propagate); only a sum that overflows needs the entrywise test."""
    d = t.detach()
    return not d.numel() or bool(torch.isfinite(d.sum())) or bool(torch.isfinite(d).all())


def finite_result(t: torch.Tensor, what: str, arguments: str) -> torch.Tensor:
    """``t`` if every entry is finite; else a ValueError: with finite arguments, only overflow (a value beyond the
    largest float of the dtype) makes a result infinite, and ``inf · 0`` then spreads NaN. ``what`` names the result
    and ``arguments`` the arguments to rescale."""
    if all_finite(t):
        return t
    raise ValueError(f"the {what} is not representable in {t.dtype}: it exceeds the largest {t.dtype} "
                     f"({torch.finfo(t.dtype).max:.3g}) for these arguments; rescale {arguments} (they are too "
                     f"large in magnitude)")


def check_depth(value, name: str = "depth", *, low: int = 0) -> int:
    """A number of layers in ``[low, MAX_DEPTH]`` (see :data:`MAX_DEPTH`)."""
    v = check_int(value, name, low=low)
    if v > MAX_DEPTH:
        raise ValueError(f"{name} must be <= {MAX_DEPTH} (the largest depth ntkcore accepts), got {v}")
    return v


def check_bool(value, name: str) -> bool:
    """True or False (numpy bools too); anything else, even a truthy string, is an error."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(value, name: str, choices):
    """One of ``choices``, compared by type and value (so that ``1`` is not ``True`` and an array is not compared
    entry by entry); returns the matching choice."""
    for choice in choices:
        if isinstance(value, type(choice)) and value == choice:
            return choice
    raise ValueError(f"{name}={value!r} is not known; accepted: {', '.join(map(repr, choices))}")


# ---------------------------------------------------------------------------------------------------------------
# Sizes and randomness
# ---------------------------------------------------------------------------------------------------------------

def check_memory(n_bytes: int, what: str, device) -> None:
    """Refuse a request whose ``n_bytes`` would not fit in the memory of ``device`` (:func:`ntkcore.device.memory_bytes`;
    no check where it is unknown). ``what`` names the request in the error."""
    limit = memory_bytes(device)
    if limit is not None and n_bytes > limit:
        raise ValueError(f"{what} would need {n_bytes / 2**30:.3g} GiB, more than the {limit / 2**30:.3g} GiB of "
                         f"memory of {device}; ask for a smaller size")


def generator(seed, device="cpu") -> torch.Generator:
    """A seeded ``torch.Generator``; ``seed`` may be an int or an existing generator (returned as is)."""
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator(device=device)
    g.manual_seed(check_int(seed, "seed", low=0, high=2**64 - 1))
    return g

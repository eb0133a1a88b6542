"""Gradient-descent training loops: plain, RDI and AUX, with the MSE or cross-entropy loss.

The three training rules of Hu, Li and Yu (2020) for learning with noisy labels (book chapter 5, *Noisy labels: RDI and
AUX as kernel ridge regression*). With per-example loss ``ℓ`` (``ℓ(u, y) = ½‖u − y‖²`` for ``"mse"``, the softmax
cross-entropy for ``"cross_entropy"``) and trainable parameters ``w``:

* ``"plain"``: ``L(w) = Σ_i ℓ(f(w, x_i), ỹ_i)``;
* ``"rdi"`` (regularization by the distance to initialization): ``L(w) = Σ_i ℓ(f(w, x_i), ỹ_i) + (λ/2) ‖w − w(0)‖²``;
* ``"aux"`` (one auxiliary variable per training example): ``L(w, b) = Σ_i ℓ(f(w, x_i) + √λ b_i, ỹ_i)`` with
  ``b_i ∈ R^O`` (O outputs), ``b(0) = 0``, trained together with ``w`` and not used at test time.

Losses are *sums* over examples, as in the lecture: plain full-batch gradient descent with step ``lr`` on the MSE
loss is then the Euler discretization of ``du/dt = −H(u − y)`` with time ``t = lr · step`` (book Chapter 3).
In the kernel regime both RDI and AUX converge to kernel ridge regression ``f(x) = k(x, X)(H + λI)⁻¹ỹ`` (applied to
the residual ``ỹ − f(w(0), X)`` when the initial outputs are not zero): for AUX the Jacobian with respect to
``(w, b)`` is ``[J, √λ I]``, so the tangent kernel of the training outputs is ``H + λI``.

:func:`fit` trains any ``torch.nn.Module`` (its parameters with ``requires_grad=True``) in place on the model's
device and dtype, records the loss and user-defined quantities on a grid of steps, and optionally stops early on a
validation set, restoring the best-validation parameters. It returns a :class:`TrainResult`. :class:`Centered`
wraps a model so that its outputs start at zero, as the kernel-regime formulas assume.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._checks import (as_numpy, as_tensor, batch, check_choice, check_int, check_real, class_labels, generator,
                      trainable_parameters)

LOSSES = ("mse", "cross_entropy")
METHODS = ("plain", "rdi", "aux")
OPTIMIZERS = ("gd", "sgd_momentum", "adam")
MONITORS = ("auto", "val_accuracy", "val_loss")


class Centered(nn.Module):
    """``g(x; w) = f(x; w) − f(x; w(0))``: a model minus its own initial function, so its outputs start at zero.

    The kernel-regime formulas assume ``u(0) = 0`` (book Chapter 3: ``f_t(x) = k(x, X)H⁻¹(I − e^{−Ht})y``;
    Chapter 5: ``f(x) = k(x, X)(H + λI)⁻¹ỹ``). A wide network's initial outputs are an O(1) random function
    instead; subtracting a frozen copy of the network at initialization removes it without changing the tangent
    kernel (the copy has no trainable parameters), so ``g`` trains exactly like ``f`` but from ``g(·; w(0)) = 0``.
    The wrapped model (:attr:`model`) is trained; the frozen copy (:attr:`initial`) costs one extra forward pass
    (without gradients) per new input. Its outputs for the last ``cache_size`` input tensors are kept, keyed by the
    tensor object and its in-place version counter, so full-batch training on a fixed tensor evaluates it once.
    The frozen copy runs in eval mode (deterministic); do not change its parameters. Shapes as the wrapped model.
    """

    def __init__(self, model: nn.Module, *, cache_size: int = 4):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.initial = copy.deepcopy(model).requires_grad_(False).eval()
        self.cache_size = check_int(cache_size, "cache_size", low=0)
        self._cache: list[tuple[torch.Tensor, int, torch.Tensor]] = []

    def train(self, mode: bool = True):
        """Switch the wrapped model's mode; the frozen initial copy stays in eval mode."""
        super().train(mode)
        self.initial.eval()
        return self

    def initial_output(self, x: torch.Tensor) -> torch.Tensor:
        """``f(x; w(0))`` (no gradient), from the cache when ``x`` is a tensor seen recently and not modified."""
        for t, version, out in self._cache:
            if t is x and t._version == version:
                return out
        with torch.no_grad():
            out = self.initial(x)
        if self.cache_size:
            self._cache = [(x, x._version, out)] + self._cache[: self.cache_size - 1]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) - self.initial_output(x)


@dataclass
class TrainResult:
    """What :func:`fit` measured, one entry per recorded step (R recorded steps).

    steps          (R,) int, recorded step indices (step k = parameters after k updates; 0 = initialization)
    times          (R,) float, ``lr · steps`` (gradient-flow time for ``optimizer="gd"``)
    train_loss     (R,) the objective that is minimized (data loss, plus the RDI penalty, with AUX variables added to
                   the outputs), summed over the training set
    data_loss      (R,) the network's own loss ``Σ_i ℓ(f(w, x_i), ỹ_i)`` on the training set (no penalty, no AUX)
    train_accuracy (R,) accuracy of ``f(w, ·)`` on the training labels, or None for real-valued MSE targets
    val_loss       (R,) ``Σ_j ℓ(f(w, x_j), y_j)`` on the validation set, or None without one
    val_accuracy   (R,) accuracy on the validation set, or None (no validation set, or real-valued MSE targets)
    records        dict name -> array (R, ...) of the values of ``record[name](model)``
    best_step      step with the best validation score (None without a validation set); the model holds the
                   parameters of this step when ``early_stopping=True``
    stopped_step   the last step trained (``steps`` unless early stopping ran out of patience)
    aux            (n, O) final AUX variables b (method "aux"), else None
    """

    steps: np.ndarray
    times: np.ndarray
    train_loss: np.ndarray
    data_loss: np.ndarray
    train_accuracy: np.ndarray | None
    val_loss: np.ndarray | None
    val_accuracy: np.ndarray | None
    records: dict = field(default_factory=dict)
    best_step: int | None = None
    stopped_step: int = 0
    aux: np.ndarray | None = None


# ------------------------------------------------------------------------------------------------------- helpers
def default_record_steps(steps: int, num: int = 50) -> np.ndarray:
    """A geometric grid of about ``num`` step indices from 1 to ``steps``, plus 0 (sorted, unique, int)."""
    steps = check_int(steps, "steps", low=0)
    num = check_int(num, "num", low=1)
    if steps == 0:
        return np.zeros(1, dtype=np.int64)
    grid = np.unique(np.round(np.geomspace(1, steps, num)).astype(np.int64))
    return np.concatenate([[0], grid])


def _record_steps(record_steps, steps: int) -> np.ndarray:
    if record_steps is None:
        return default_record_steps(steps)
    try:
        arr = np.asarray(list(record_steps))
    except TypeError:
        raise ValueError(f"record_steps must be an iterable of step indices, got {type(record_steps).__name__}") from None
    if arr.size == 0 or arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise ValueError("record_steps must be a non-empty iterable of integer step indices")
    if arr.min() < 0 or arr.max() > steps:
        raise ValueError(f"record_steps must lie in 0..steps={steps}, got {arr.min()}..{arr.max()}")
    return np.unique(arr.astype(np.int64))


def _reference_parameter(model) -> torch.Tensor:
    return next(iter(trainable_parameters(model).values()))


_PARAMS = "the model's parameters"


def _inputs(x, name: str, ref: torch.Tensor) -> torch.Tensor:
    """``x`` as a checked tensor, shape (n, ...), n ≥ 1: a tensor on the model's device and (if floating) in its
    dtype, or numpy converted to them (the policy of :mod:`ntkcore._checks`)."""
    return batch(x, name, like=ref, like_name=_PARAMS, min_ndim=2)


def _targets(y, name: str, loss: str, n: int, ref: torch.Tensor) -> torch.Tensor:
    """Targets checked against the loss: floats (n,) or (n, O) for MSE, integer classes (n,) for cross-entropy."""
    if loss == "cross_entropy":
        return class_labels(y, name, n, like=ref, like_name=_PARAMS, of="input")
    t = as_tensor(y, name, ndim=(1, 2), like=ref, like_name=_PARAMS)
    if t.shape[0] != n:
        raise ValueError(f"{name} has {t.shape[0]} examples but the inputs have {n}")
    return t


def _first_outputs(model: nn.Module, x: torch.Tensor, name: str) -> torch.Tensor:
    """``model(x)``, with a shape or dtype error of torch turned into a ValueError naming ``x`` (the inputs do not
    fit the model); the networks of :mod:`ntkcore.models` check their input themselves."""
    try:
        return model(x)
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as err:
        raise ValueError(f"{name} of shape {tuple(x.shape)} does not fit the model: {err}") from None


def _outputs(out: torch.Tensor, y: torch.Tensor, loss: str, name: str) -> torch.Tensor:
    """The model's outputs shaped like the targets (an (n, 1) output matches (n,) MSE targets); ValueError else."""
    if loss == "mse":
        if y.ndim == 1 and out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        if out.shape != y.shape:
            raise ValueError(f"the model's outputs have shape {tuple(out.shape)} but {name} has shape "
                             f"{tuple(y.shape)}; for loss='mse' they must match ((n, 1) outputs match (n,) targets)")
        return out
    if out.ndim != 2 or out.shape[0] != y.shape[0]:
        raise ValueError(f"for loss='cross_entropy' the model must output logits of shape (n, C), got "
                         f"{tuple(out.shape)} for {y.shape[0]} examples")
    if int(y.max()) >= out.shape[1]:
        raise ValueError(f"{name} holds class {int(y.max())} but the model outputs only {out.shape[1]} logits")
    return out


def per_example_loss(outputs: torch.Tensor, targets: torch.Tensor, loss: str) -> torch.Tensor:
    """Per-example loss ``ℓ``, shape (n,): ``½‖u_i − y_i‖²`` for ``"mse"`` (outputs and targets of equal shape,
    (n,) or (n, O)), softmax cross-entropy ``−log softmax(u_i)[y_i]`` for ``"cross_entropy"`` (logits (n, C),
    integer targets (n,)). The training objectives of book Chapter 5 sum it over examples."""
    loss = check_choice(loss, "loss", LOSSES)
    if loss == "mse":
        diff = (outputs - targets).reshape(outputs.shape[0], -1)
        return 0.5 * (diff ** 2).sum(dim=1)
    return F.cross_entropy(outputs, targets, reduction="none")


def accuracy(outputs: torch.Tensor, targets: torch.Tensor, loss: str) -> float | None:
    """Fraction of correct classifications, or None for targets that are not classes.

    Cross-entropy: ``argmax`` of the logits against integer classes. MSE with (n, O ≥ 2) targets (one-hot, possibly
    centred): ``argmax`` of outputs against ``argmax`` of targets. MSE with (n,) targets: the sign against ±1 labels
    (None when the targets are not all ±1)."""
    loss = check_choice(loss, "loss", LOSSES)
    if loss == "cross_entropy":
        return float((outputs.argmax(dim=1) == targets).double().mean())
    if targets.ndim == 2 and targets.shape[1] >= 2:
        return float((outputs.argmax(dim=1) == targets.argmax(dim=1)).double().mean())
    t = targets.reshape(-1)
    if not bool((t.abs() == 1).all()):
        return None
    return float((torch.sign(outputs.reshape(-1)) == t).double().mean())


def _values(v, name: str) -> np.ndarray:
    if isinstance(v, torch.Tensor) and v.is_floating_point():
        return v.detach().cpu().numpy().copy()
    return np.array(as_numpy(v, f"the value of record[{name!r}]", finite=False))


@contextlib.contextmanager
def _evaluating(model: nn.Module):
    """No gradients and eval mode (dropout off), restoring the model's mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _make_optimizer(name: str, params, lr: float, momentum: float):
    if name == "gd":
        return torch.optim.SGD(params, lr=lr)
    if name == "sgd_momentum":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    return torch.optim.Adam(params, lr=lr)


# ----------------------------------------------------------------------------------------------------------- fit
def fit(model: nn.Module, x, y, *, loss: str = "mse", method: str = "plain", ridge: float = 0.0,
        lr: float = 1e-2, steps: int = 1000, optimizer: str = "gd", momentum: float = 0.9, batch_size=None,
        record_steps=None, record=None, x_val=None, y_val=None, early_stopping: bool = False, patience=None,
        monitor: str = "auto", seed=0, progress: bool = False) -> TrainResult:
    """Train ``model`` in place by gradient descent on the plain, RDI or AUX objective (book Chapter 5).

    Parameters
    ----------
    model : any ``torch.nn.Module``; its parameters with ``requires_grad=True`` are trained, on their device and
        in their dtype (inputs and targets are moved there).
    x : (n, ...) training inputs. y : MSE: floats (n,) or (n, O) matching the model's outputs ((n, 1) outputs match
        (n,) targets); cross-entropy: integer classes (n,) in 0..C−1 for (n, C) logits. Tensors must be on the
        model's device and, when floating, in its dtype; numpy arrays are converted (the policy for mixed inputs of
        :mod:`ntkcore._checks`). Inputs that do not fit the model raise a ValueError naming ``x``.
    loss : ``"mse"`` (``Σ_i ½‖f(x_i) − y_i‖²``) or ``"cross_entropy"`` (``Σ_i CE(f(x_i), y_i)``).
    method : ``"plain"``, ``"rdi"`` (adds ``ridge/2 · ‖w − w(0)‖²``) or ``"aux"`` (adds ``√ridge · b_i`` to the
        output of example i, with trainable ``b`` (n, O), ``b(0) = 0``; b is not used at test time).
    ridge : λ ≥ 0 for ``"rdi"``/``"aux"``; must be 0 for ``"plain"``.
    lr, steps : step size > 0 and number of updates ≥ 0.
    optimizer : ``"gd"`` (plain (S)GD, the default), ``"sgd_momentum"`` (heavy ball, ``momentum``) or ``"adam"``.
    batch_size : None for full-batch updates (the default); an int for minibatches drawn from a seeded permutation
        of the training set in every epoch (one step = one minibatch; AUX variables of absent examples get no
        gradient).
    record_steps : step indices in 0..steps at which to record; default :func:`default_record_steps` (geometric,
        with 0 and ``steps``). Early stopping checks the validation set at these steps only.
    record : dict name -> callable(model) returning a tensor or number, evaluated at the recorded steps (in eval
        mode, without gradients), e.g. outputs on a test set.
    x_val, y_val : optional validation set (targets in the format of ``y``): records its loss and accuracy.
    early_stopping : if True (needs a validation set), the model ends with the parameters of the best recorded
        validation score; with ``patience`` (an int ≥ 1) training also stops after that many consecutive recorded
        steps without improvement.
    monitor : ``"val_accuracy"``, ``"val_loss"`` or ``"auto"`` (accuracy when the targets are classes, else loss).
    seed : int or ``torch.Generator``: orders the minibatches and seeds any randomness inside the model (dropout),
        without touching torch's global random state. Full-batch gradient descent itself is deterministic.
    progress : show a tqdm progress bar.

    Returns
    -------
    :class:`TrainResult`.
    """
    loss = check_choice(loss, "loss", LOSSES)
    method = check_choice(method, "method", METHODS)
    optimizer = check_choice(optimizer, "optimizer", OPTIMIZERS)
    monitor = check_choice(monitor, "monitor", MONITORS)
    ridge = check_real(ridge, "ridge", low=0.0)
    if method == "plain" and ridge != 0.0:
        raise ValueError(f"ridge={ridge!r} is only used by method='rdi' or method='aux'; use ridge=0 with 'plain'")
    lr = check_real(lr, "lr", low=0.0, low_open=True)
    momentum = check_real(momentum, "momentum", low=0.0, high=1.0, high_open=True)
    steps = check_int(steps, "steps", low=0)
    if early_stopping not in (True, False):
        raise ValueError(f"early_stopping must be True or False, got {early_stopping!r}")
    if patience is not None:
        patience = check_int(patience, "patience", low=1)
    if record is None:
        record = {}
    if not isinstance(record, dict) or not all(isinstance(k, str) and callable(f) for k, f in record.items()):
        raise ValueError("record must be a dict mapping names (str) to callables model -> tensor or number")

    ref = _reference_parameter(model)
    x = _inputs(x, "x", ref)
    n = x.shape[0]
    y = _targets(y, "y", loss, n, ref)
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", low=1, high=n)
    has_val = x_val is not None or y_val is not None
    if has_val:
        if x_val is None or y_val is None:
            raise ValueError("give both x_val and y_val (or neither)")
        x_val = _inputs(x_val, "x_val", ref)
        if x_val.shape[1:] != x.shape[1:]:
            raise ValueError(f"x_val has examples of shape {tuple(x_val.shape[1:])}, x of {tuple(x.shape[1:])}")
        y_val = _targets(y_val, "y_val", loss, x_val.shape[0], ref)
        if loss == "mse" and y_val.shape[1:] != y.shape[1:]:
            raise ValueError(f"y_val has targets of shape {tuple(y_val.shape[1:])}, y of {tuple(y.shape[1:])}")
    if early_stopping and not has_val:
        raise ValueError("early_stopping=True needs a validation set (x_val, y_val)")
    if patience is not None and not early_stopping:
        raise ValueError("patience is only used with early_stopping=True")
    rec_steps = _record_steps(record_steps, steps)

    params = [p for p in model.parameters() if p.requires_grad]
    w0 = [p.detach().clone() for p in params] if method == "rdi" else None
    with _evaluating(model):
        raw0 = _first_outputs(model, x, "x")
        out0 = _outputs(raw0, y, loss, "y")
        squeeze = out0.ndim < raw0.ndim  # (n, 1) outputs for (n,) MSE targets
        if has_val:
            _outputs(_first_outputs(model, x_val, "x_val"), y_val, loss, "y_val")
    b = None
    if method == "aux":
        b = torch.zeros(out0.shape, dtype=ref.dtype, device=ref.device, requires_grad=True)
    sqrt_ridge = math.sqrt(ridge)
    opt = _make_optimizer(optimizer, params + ([b] if b is not None else []), lr, momentum)

    is_class = accuracy(out0, y, loss) is not None
    if monitor == "auto":
        monitor = "val_accuracy" if is_class else "val_loss"
    if monitor == "val_accuracy" and has_val and not is_class:
        raise ValueError("monitor='val_accuracy' needs class targets (cross-entropy, (n, O ≥ 2) or ±1 MSE targets)")

    def objective(out, idx=None):
        """The minimized objective on the examples ``idx`` (all when None) given their outputs ``out``."""
        yy = y if idx is None else y[idx]
        if b is not None:
            out = out + sqrt_ridge * (b if idx is None else b[idx])
        total = per_example_loss(out, yy, loss).sum()
        if w0 is not None:
            total = total + 0.5 * ridge * sum(((p - p0) ** 2).sum() for p, p0 in zip(params, w0))
        return total

    gen = generator(seed)
    rows = {"train_loss": [], "data_loss": [], "train_accuracy": [], "val_loss": [], "val_accuracy": []}
    recs = {name: [] for name in record}
    recorded: list[int] = []
    best_score, best_step, best_state, stale = None, None, None, 0

    def snapshot():
        return copy.deepcopy(model.state_dict()), (None if b is None else b.detach().clone())

    def measure(step: int) -> bool:
        """Record everything at ``step``; returns True when early stopping has run out of patience."""
        nonlocal best_score, best_step, best_state, stale
        with _evaluating(model):
            out = _outputs(model(x), y, loss, "y")
            rows["train_loss"].append(float(objective(out)))
            if not math.isfinite(rows["train_loss"][-1]):
                raise FloatingPointError(f"the training objective became {rows['train_loss'][-1]} at step {step}; "
                                         f"lower lr (now {lr})")
            rows["data_loss"].append(float(per_example_loss(out, y, loss).sum()))
            rows["train_accuracy"].append(accuracy(out, y, loss))
            if has_val:
                out_v = _outputs(model(x_val), y_val, loss, "y_val")
                rows["val_loss"].append(float(per_example_loss(out_v, y_val, loss).sum()))
                rows["val_accuracy"].append(accuracy(out_v, y_val, loss))
            for name, fn in record.items():
                recs[name].append(_values(fn(model), name))
        recorded.append(step)
        if not has_val:
            return False
        score = rows["val_accuracy"][-1] if monitor == "val_accuracy" else -rows["val_loss"][-1]
        if best_score is None or score > best_score:
            best_score, best_step, stale = score, step, 0
            if early_stopping:
                best_state = snapshot()
            return False
        stale += 1
        return patience is not None and stale >= patience

    rec_set = set(rec_steps.tolist())
    order = None
    cursor = 0
    # torch.manual_seed below seeds every CUDA device too; fork them all so the global state is left untouched.
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    model.train()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=gen)))
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=steps, desc=f"{method} {loss}")
        step = 0
        while True:
            if step in rec_set and measure(step):
                break
            if step == steps:
                break
            if batch_size is None:
                idx, xb = None, x
            else:
                if order is None or cursor + batch_size > n:
                    order, cursor = torch.randperm(n, generator=gen).to(ref.device), 0
                idx = order[cursor:cursor + batch_size]
                cursor += batch_size
                xb = x[idx]
            opt.zero_grad(set_to_none=True)
            out = model(xb)
            objective(out[:, 0] if squeeze else out, idx).backward()
            opt.step()
            step += 1
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()

    if early_stopping and best_state is not None:
        state, b_best = best_state
        model.load_state_dict(state)
        if b is not None:
            with torch.no_grad():
                b.copy_(b_best)
    steps_arr = np.asarray(recorded, dtype=np.int64)

    def column(name):
        vals = rows[name]
        if not vals or any(v is None for v in vals):
            return None
        return np.asarray(vals, dtype=np.float64)

    return TrainResult(
        steps=steps_arr,
        times=lr * steps_arr.astype(np.float64),
        train_loss=column("train_loss"),
        data_loss=column("data_loss"),
        train_accuracy=column("train_accuracy"),
        val_loss=column("val_loss"),
        val_accuracy=column("val_accuracy"),
        records={name: np.stack(v) for name, v in recs.items()},
        best_step=best_step,
        stopped_step=step,
        aux=None if b is None else b.detach().cpu().numpy().copy(),
    )

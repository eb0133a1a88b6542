"""Tests of ntkcore.train: gradient descent against closed forms, the RDI/AUX fixed points against ridge regression,
cross-entropy, early stopping, determinism and input checks."""
import numpy as np
import pytest
import torch
from torch import nn

from ntkcore import models, train
from ntkcore.device import available_devices

DEVICES = available_devices()


def linear_problem(n=6, d=10, outputs=1, seed=0, device="cpu"):
    """A bias-free linear model f(x) = x·w (its NTK Gram matrix is H = X Xᵀ) and random data; n < d so H is
    invertible."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, d, generator=g, dtype=torch.float64) / d ** 0.5).to(device)
    x_test = (torch.randn(4, d, generator=g, dtype=torch.float64) / d ** 0.5).to(device)
    y = torch.randn(n, outputs, generator=g, dtype=torch.float64).to(device)
    model = nn.Linear(d, outputs, bias=False, dtype=torch.float64).to(device)
    with torch.no_grad():
        model.weight.copy_(torch.randn(outputs, d, generator=g, dtype=torch.float64))
    return model, x, y[:, 0] if outputs == 1 else y, x_test


@pytest.mark.parametrize("device", DEVICES)
def test_plain_gd_matches_discrete_closed_form(device):
    model, x, y, x_test = linear_problem(device=device)
    lr, steps = 0.3, 40
    u0 = model(x)[:, 0].detach()
    f0_test = model(x_test)[:, 0].detach()
    res = train.fit(model, x, y, lr=lr, steps=steps, record_steps=range(0, steps + 1, 5),
                    record={"test": lambda m: m(x_test)[:, 0]})
    # Closed form (book Chapter 3, discrete GD): u_k − y = (I − ηH)^k (u_0 − y), and on test inputs
    # f_k(x) = f_0(x) + k(x, X) H⁻¹ (I − (I − ηH)^k)(y − u_0) with k(x, X) = x Xᵀ.
    h = x @ x.T
    evals, evecs = torch.linalg.eigh(h)
    assert float(lr * evals.max()) < 2.0
    for r, k in enumerate(res.steps):
        decay = evecs @ torch.diag((1 - lr * evals) ** int(k)) @ evecs.T
        resid = decay @ (u0 - y)
        assert res.train_loss[r] == pytest.approx(0.5 * float(resid @ resid), rel=1e-10, abs=1e-14)
        expected = f0_test + x_test @ x.T @ torch.linalg.solve(h, (torch.eye(len(y), dtype=h.dtype, device=device)
                                                                    - decay) @ (y - u0))
        np.testing.assert_allclose(res.records["test"][r], expected.cpu().numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.times, lr * res.steps)
    assert res.data_loss is not None and np.allclose(res.data_loss, res.train_loss)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["rdi", "aux"])
@pytest.mark.parametrize("outputs", [1, 3])
def test_rdi_and_aux_converge_to_kernel_ridge(device, method, outputs):
    model, x, y, x_test = linear_problem(outputs=outputs, seed=1, device=device)
    ridge = 0.5
    y2 = y.reshape(len(x), -1)
    u0 = model(x).detach()
    f0_test = model(x_test).detach()
    lr = 0.4
    h = x @ x.T
    # GD is stable (lr·(λ_max + λ) < 2) and contracts every mode by at least 1 − lr·λ = 0.8 per step
    assert float(lr * (torch.linalg.eigvalsh(h).max() + ridge)) < 2.0
    res = train.fit(model, x, y, method=method, ridge=ridge, lr=lr, steps=250,
                    record={"test": lambda m: m(x_test)})
    # Fixed point (book Chapter 5): f(x) = f_0(x) + k(x, X)(H + λI)⁻¹(ỹ − u_0), H = X Xᵀ.
    coef = torch.linalg.solve(h + ridge * torch.eye(len(x), dtype=h.dtype, device=device), y2 - u0)
    expected = f0_test + x_test @ x.T @ coef
    np.testing.assert_allclose(res.records["test"][-1], expected.cpu().numpy(), rtol=1e-9, atol=1e-11)
    u_final = model(x).detach()
    if method == "aux":
        # the AUX variables absorb the residual: u + √λ b = ỹ, i.e. √λ b = λ (H + λI)⁻¹ (ỹ − u_0)
        assert res.aux.shape == tuple(y.shape)  # one b_i per example, shaped like the targets
        np.testing.assert_allclose(ridge ** 0.5 * res.aux.reshape(coef.shape), (ridge * coef).cpu().numpy(),
                                   rtol=1e-8, atol=1e-11)
        np.testing.assert_allclose(res.train_loss[-1], 0.0, atol=1e-16)
    else:
        assert res.aux is None
        # RDI minimum: ½‖u − ỹ‖² + (λ/2)‖w − w0‖², with w − w0 = Xᵀ coef
        expected_obj = 0.5 * float(((u_final - y2) ** 2).sum()) + 0.5 * ridge * float(((x.T @ coef) ** 2).sum())
        assert res.train_loss[-1] == pytest.approx(expected_obj, rel=1e-9)


def test_rdi_and_aux_objectives_at_initialization_match_their_definitions():
    model, x, y, _ = linear_problem(seed=2)
    u0 = model(x)[:, 0].detach()
    plain = 0.5 * float(((u0 - y) ** 2).sum())
    for method in ("rdi", "aux"):
        res = train.fit(model, x, y, method=method, ridge=2.0, lr=0.1, steps=0)
        # w = w(0) and b = 0: both objectives equal the plain loss at step 0
        assert res.steps.tolist() == [0]
        assert res.train_loss[0] == pytest.approx(plain, rel=1e-12)


def test_aux_and_rdi_paths_coincide_for_a_linear_model():
    """For f linear in w, w − w(0) = Xᵀa stays in the row space and AUX keeps √λ b = λ a, so both rules update a by
    a ← a − η((u − ỹ) + λ a): their outputs agree at every step (the chapter's remark after Theorem 5)."""
    results = {}
    for method in ("rdi", "aux"):
        model, x, y, x_test = linear_problem(seed=3)
        results[method] = train.fit(model, x, y, method=method, ridge=0.5, lr=0.4, steps=30,
                                    record_steps=[1, 5, 30], record={"test": lambda m, xt=x_test: m(xt)})
    np.testing.assert_allclose(results["rdi"].records["test"], results["aux"].records["test"], rtol=1e-10,
                               atol=1e-12)
    moved = np.abs(results["rdi"].records["test"][-1] - results["rdi"].records["test"][0]).max()
    assert moved > 1e-2  # the comparison is not between two frozen models


def classification_problem(seed=0, n=60, classes=3):
    g = torch.Generator().manual_seed(seed)
    centers = 2.0 * torch.randn(classes, 5, generator=g, dtype=torch.float64)
    labels = torch.arange(n) % classes
    x = centers[labels] + torch.randn(n, 5, generator=g, dtype=torch.float64)
    return x, labels


@pytest.mark.parametrize("method,ridge", [("plain", 0.0), ("rdi", 0.1), ("aux", 0.1)])
def test_cross_entropy_decreases_and_learns(method, ridge):
    x, labels = classification_problem()
    model = models.MLP(5, 64, 1, 3, seed=0)
    res = train.fit(model, x, labels.numpy(), loss="cross_entropy", method=method, ridge=ridge, lr=0.02,
                    steps=60, record_steps=range(0, 61, 5))
    assert np.all(np.diff(res.train_loss) < 0)
    assert res.train_loss[-1] < 0.5 * res.train_loss[0]
    assert res.train_accuracy[-1] > 0.9


def test_multiclass_mse_accuracy_is_argmax():
    x, labels = classification_problem(seed=1)
    onehot = torch.nn.functional.one_hot(labels, 3).double() - 1.0 / 3
    model = models.MLP(5, 64, 1, 3, seed=1)
    res = train.fit(model, x, onehot, lr=0.005, steps=100, record_steps=[100])
    acc = float((model(x).argmax(1) == labels).double().mean())
    assert res.train_accuracy[-1] == pytest.approx(acc)


def test_signed_mse_accuracy_and_real_targets():
    model, x, y, _ = linear_problem(seed=4)
    signs = torch.sign(y)
    initial = float((torch.sign(model(x)[:, 0]) == signs).double().mean())
    res = train.fit(model, x, signs, lr=0.2, steps=10, record_steps=[0, 10])
    assert res.train_accuracy[0] == pytest.approx(initial)
    assert res.train_accuracy[-1] == pytest.approx(float((torch.sign(model(x)[:, 0]) == signs).double().mean()))
    res_real = train.fit(model, x, y, lr=0.2, steps=1)
    assert res_real.train_accuracy is None


def overshoot_problem():
    """Two coordinates learned at different speeds: the validation output x_val·w = w1 − w2 rises and falls again,
    so the validation loss against target 0.3 is smallest in mid-training."""
    x = torch.tensor([[1.0, 0.0], [0.0, 0.3]], dtype=torch.float64)
    y = torch.tensor([1.0, 0.3], dtype=torch.float64)  # w* = (1, 1)
    x_val = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    y_val = torch.tensor([0.3], dtype=torch.float64)
    model = nn.Linear(2, 1, bias=False, dtype=torch.float64)
    with torch.no_grad():
        model.weight.zero_()
    return model, x, y, x_val, y_val


def test_early_stopping_restores_best_validation_parameters():
    model, x, y, x_val, y_val = overshoot_problem()
    res = train.fit(model, x, y, lr=0.5, steps=300, record_steps=range(301), x_val=x_val, y_val=y_val,
                    early_stopping=True, record={"w": lambda m: m.weight[0].clone()})
    best = int(np.argmin(res.val_loss))
    assert res.best_step == res.steps[best]
    assert 0 < res.best_step < 300  # the minimum is in mid-training, so restoring matters
    np.testing.assert_array_equal(model.weight[0].detach().numpy(), res.records["w"][best])
    val_now = 0.5 * float(((model(x_val)[:, 0] - y_val) ** 2).sum().detach())
    assert val_now == pytest.approx(res.val_loss.min(), rel=1e-12)
    assert val_now < res.val_loss[-1]  # better than the last iterate


def test_early_stopping_patience_stops_training():
    model, x, y, x_val, y_val = overshoot_problem()
    res = train.fit(model, x, y, lr=0.5, steps=300, record_steps=range(301), x_val=x_val, y_val=y_val,
                    early_stopping=True, patience=5)
    assert res.stopped_step == res.best_step + 5
    assert res.steps[-1] == res.stopped_step and len(res.steps) == res.stopped_step + 1


def test_without_early_stopping_the_last_parameters_stay():
    model, x, y, x_val, y_val = overshoot_problem()
    res = train.fit(model, x, y, lr=0.5, steps=300, record_steps=range(301), x_val=x_val, y_val=y_val,
                    record={"w": lambda m: m.weight[0].clone()})
    assert 0 < res.best_step < 300
    np.testing.assert_array_equal(model.weight[0].detach().numpy(), res.records["w"][-1])


def test_early_stopping_on_accuracy_with_cross_entropy():
    x, labels = classification_problem(seed=2)
    model = models.MLP(5, 32, 1, 3, seed=2)
    res = train.fit(model, x[:40], labels[:40], loss="cross_entropy", lr=0.02, steps=60,
                    record_steps=range(0, 61, 3), x_val=x[40:], y_val=labels[40:], early_stopping=True)
    assert res.val_accuracy is not None and res.best_step == res.steps[int(np.argmax(res.val_accuracy))]
    acc = float((model(x[40:]).argmax(1) == labels[40:]).double().mean())
    assert acc == pytest.approx(res.val_accuracy.max())


@pytest.mark.parametrize("batch_size", [None, 16])
def test_deterministic_given_seed(batch_size):
    x, labels = classification_problem(seed=3)

    def run(seed):
        model = nn.Sequential(nn.Linear(5, 32, dtype=torch.float64), nn.Dropout(0.3), nn.ReLU(),
                              nn.Linear(32, 3, dtype=torch.float64))
        torch.nn.init.normal_(model[0].weight, generator=torch.Generator().manual_seed(0))
        torch.nn.init.normal_(model[3].weight, generator=torch.Generator().manual_seed(1))
        torch.nn.init.zeros_(model[0].bias), torch.nn.init.zeros_(model[3].bias)
        state = torch.random.get_rng_state()
        train.fit(model, x, labels, loss="cross_entropy", method="aux", ridge=0.1, lr=0.01, steps=10,
                  batch_size=batch_size, seed=seed)
        assert torch.equal(state, torch.random.get_rng_state())  # the global random state is untouched
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)  # the seed drives dropout (and the minibatch order)


def test_minibatch_sgd_with_full_batch_size_equals_gd():
    model_a, x, y, _ = linear_problem(seed=5)
    model_b, _, _, _ = linear_problem(seed=5)
    train.fit(model_a, x, y, lr=0.1, steps=20)
    train.fit(model_b, x, y, lr=0.1, steps=20, batch_size=len(x))
    torch.testing.assert_close(model_a.weight, model_b.weight, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam"])
def test_other_optimizers_reduce_the_loss(optimizer):
    model, x, y, _ = linear_problem(seed=6)
    ridge = 0.1
    u0 = model(x)[:, 0].detach()
    h = x @ x.T
    coef = torch.linalg.solve(h + ridge * torch.eye(len(x), dtype=h.dtype), y - u0)
    u_star = u0 + h @ coef
    best = 0.5 * float(((u_star - y) ** 2).sum()) + 0.5 * ridge * float(coef @ h @ coef)  # the RDI minimum
    res = train.fit(model, x, y, method="rdi", ridge=ridge, lr=0.05, steps=100, optimizer=optimizer)
    assert np.all(res.train_loss >= best - 1e-12)
    assert res.train_loss[-1] - best < 0.05 * (res.train_loss[0] - best)


def test_float32_model_and_tensors_follow_the_model():
    model = models.MLP(5, 16, 1, 1, seed=0, dtype=torch.float32)
    x, labels = classification_problem(seed=4)
    res = train.fit(model, x.numpy(), (labels.double() - 1).numpy(), lr=0.01, steps=5,
                    record={"out": lambda m: m(torch.zeros(2, 5))})
    assert res.records["out"].dtype == np.float32 and res.records["out"].shape[0] == len(res.steps)


def test_default_record_steps_is_geometric_with_ends():
    s = train.default_record_steps(1000)
    assert s[0] == 0 and s[1] == 1 and s[-1] == 1000 and np.all(np.diff(s) > 0)
    assert train.default_record_steps(0).tolist() == [0]


def test_progress_bar_runs():
    model, x, y, _ = linear_problem(seed=7)
    res = train.fit(model, x, y, lr=0.1, steps=3, progress=True)
    assert res.stopped_step == 3


def test_diverging_step_size_raises():
    model, x, y, _ = linear_problem(seed=8)
    with pytest.raises(FloatingPointError, match="lr"):
        train.fit(model, x * 1e3, y, lr=10.0, steps=200)


@pytest.mark.parametrize("kwargs,match", [
    (dict(loss="hinge"), "loss"),
    (dict(method="dropout"), "method"),
    (dict(method="rdi", ridge=-1.0), "ridge"),
    (dict(method="plain", ridge=0.1), "ridge"),
    (dict(lr=0.0), "lr"),
    (dict(lr=-0.1), "lr"),
    (dict(steps=-1), "steps"),
    (dict(steps=2.5), "steps"),
    (dict(optimizer="lbfgs"), "optimizer"),
    (dict(monitor="train_loss"), "monitor"),
    (dict(record_steps=[0, 99]), "record_steps"),
    (dict(record_steps=[]), "record_steps"),
    (dict(record={"a": 3}), "record"),
    (dict(early_stopping=True), "validation"),
    (dict(patience=3), "patience"),
    (dict(batch_size=0), "batch_size"),
    (dict(x_val=np.zeros((2, 10))), "x_val and y_val"),
    (dict(x_val=np.zeros((2, 9)), y_val=np.zeros(2)), "x_val"),
    (dict(x_val=np.zeros((2, 10)), y_val=np.zeros(3)), "y_val"),
    (dict(x_val=np.zeros((2, 10)), y_val=np.zeros((2, 2))), "y_val"),
])
def test_bad_arguments_raise(kwargs, match):
    model, x, y, _ = linear_problem()
    kwargs.setdefault("steps", 2)
    with pytest.raises(ValueError, match=match):
        train.fit(model, x, y, **kwargs)


def test_bad_data_raise():
    model, x, y, _ = linear_problem()
    with pytest.raises(ValueError, match="y has 5 examples"):
        train.fit(model, x, y[:5], steps=1)
    with pytest.raises(ValueError, match="shape"):
        train.fit(model, x, torch.zeros(len(x), 2, dtype=torch.float64), steps=1)
    with pytest.raises(ValueError, match="x contains NaN"):
        train.fit(model, torch.full_like(x, float("nan")), y, steps=1)
    with pytest.raises(ValueError, match="x must"):
        train.fit(model, x[0], y, steps=1)
    with pytest.raises(ValueError, match="model"):
        train.fit("not a model", x, y, steps=1)
    frozen = nn.Linear(10, 1).requires_grad_(False)
    with pytest.raises(ValueError, match="trainable"):
        train.fit(frozen, x, y, steps=1)
    x_c, labels = classification_problem()
    clf = models.MLP(5, 8, 1, 3, seed=0)
    with pytest.raises(ValueError, match="integer class"):
        train.fit(clf, x_c, labels.double() + 0.5, loss="cross_entropy", steps=1)
    with pytest.raises(ValueError, match="class 5"):
        train.fit(clf, x_c, labels + 3, loss="cross_entropy", steps=1)
    with pytest.raises(ValueError, match="1-d"):
        train.fit(clf, x_c, torch.nn.functional.one_hot(labels, 3), loss="cross_entropy", steps=1)
    with pytest.raises(ValueError, match="val_accuracy"):
        train.fit(model, x, y, x_val=x, y_val=y, monitor="val_accuracy", steps=1)


def test_centered_model_starts_at_zero_and_keeps_the_tangent_kernel():
    from ntkcore import empirical

    x, _ = classification_problem(seed=5, n=12)
    net = models.MLP(5, 32, 1, 2, seed=3)
    centered = train.Centered(net)
    assert torch.equal(centered(x), torch.zeros(12, 2, dtype=torch.float64))
    torch.testing.assert_close(empirical.ntk(centered, x, method="jacobian"), empirical.ntk(net, x, method="jacobian"))
    f0 = net(x).detach()
    res = train.fit(centered, x, torch.ones(12, 2, dtype=torch.float64), lr=0.01, steps=5)
    # the wrapped network is what trains; the centred output is its change since initialization
    torch.testing.assert_close(centered(x), net(x) - f0)
    assert res.train_loss[-1] < res.train_loss[0]
    with pytest.raises(ValueError, match="model"):
        train.Centered("net")


def test_centered_cache_follows_in_place_changes_and_new_inputs():
    x, _ = classification_problem(seed=6, n=10)
    net = models.MLP(5, 16, 1, 1, seed=4)
    centered = train.Centered(net, cache_size=1)
    f0 = net(x).detach()
    with torch.no_grad():
        net[0].weight.mul_(1.5)  # train the wrapped model a little (in place)
    expected = net(x).detach() - f0
    torch.testing.assert_close(centered(x), expected)
    torch.testing.assert_close(centered(x), expected)  # second call: from the cache
    x2 = x.clone()
    with torch.no_grad():
        x2[0] += 1.0  # an in-place change of an input invalidates its cached initial output
        centered(x2)
        x2[1] += 1.0
        torch.testing.assert_close(centered(x2), net(x2) - centered.initial(x2))  # the frozen copy holds w(0)
    centered.train()
    assert not centered.initial.training and centered.model.training


def test_inputs_that_do_not_fit_the_model_are_value_errors():
    """A wrong feature dimension names x and the expected shape instead of failing inside torch."""
    y = np.ones(4)
    with pytest.raises(ValueError, match=r"x must have shape \(n, 5\) \(5 input features\), got shape \(4, 3\)"):
        train.fit(models.MLP(5, 8, 1, seed=0), np.ones((4, 3)), y, steps=1)
    with pytest.raises(ValueError, match=r"x of shape \(4, 3\) does not fit the model"):
        train.fit(nn.Linear(5, 1, dtype=torch.float64), np.ones((4, 3)), y, steps=1)
    with pytest.raises(ValueError, match="y must be an array of real numbers"):
        train.fit(models.MLP(3, 4, 1, 2, seed=0), np.ones((4, 3)), ["0", "1", "0", "1"], loss="cross_entropy",
                  steps=1)

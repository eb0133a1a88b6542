"""Kernel distance and velocity, straight paths between networks, the parent–child experiment (ntkcore.motion), and
the linearization around a later snapshot (ntkcore.models.linearize with a state)."""
import copy
import math

import numpy as np
import pytest
import torch

from ntkcore import empirical, models, motion, train


def _psd(n, seed, rank=None):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, rank or n, generator=g, dtype=torch.float64)
    return a @ a.T


def _classes(n=40, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()


def test_distance_ignores_scale_and_is_symmetric():
    k1, k2 = _psd(7, 0), _psd(7, 1)
    assert motion.kernel_distance(k1, 3.7 * k1) == pytest.approx(0.0, abs=1e-15)
    assert motion.kernel_distance(k1, k2) == motion.kernel_distance(k2, k1)
    assert motion.kernel_distance(k1, -k1) == pytest.approx(2.0, abs=1e-15)


@pytest.mark.parametrize("n", [1, 2, 5, 50])
def test_distance_between_identity_and_ones(n):
    """⟨I, 11ᵀ⟩ = n, ‖I‖ = √n, ‖11ᵀ‖ = n, so S = 1 − 1/√n."""
    s = motion.kernel_distance(np.eye(n), np.ones((n, n)))
    assert s == pytest.approx(1.0 - 1.0 / math.sqrt(n), abs=1e-15)


def test_distance_of_psd_matrices_lies_in_unit_interval():
    values = [motion.kernel_distance(_psd(6, s, rank=1 + s % 3), _psd(6, 100 + s, rank=1 + s % 2)) for s in range(60)]
    assert min(values) >= 0.0 and max(values) <= 1.0
    # rank-one kernels of orthogonal vectors are Frobenius-orthogonal: the largest distance a PSD pair can have
    u, v = np.eye(4)[0], np.eye(4)[1]
    assert motion.kernel_distance(np.outer(u, u), np.outer(v, v)) == 1.0


def test_distance_accepts_numpy_tensors_and_output_blocks():
    k1, k2 = _psd(4, 2), _psd(4, 3)
    expected = 1 - float((k1 * k2).sum() / (k1.norm() * k2.norm()))
    assert motion.kernel_distance(k1.numpy(), k2.float()) == pytest.approx(expected, rel=1e-6)
    blocks = torch.einsum("ij,ab->ijab", k1, torch.eye(3, dtype=torch.float64))
    assert motion.kernel_distance(blocks, blocks * 2) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("k1, k2, match", [
    (np.eye(3), np.eye(4), "same shape"),
    (np.zeros((3, 3)), np.eye(3), "k1 must have a finite, nonzero"),
    (np.eye(3), np.full((3, 3), np.nan), "k2 contains NaN"),
    (np.ones(3), np.ones(3), "at least 2-dimensional"),
])
def test_distance_rejects_bad_kernels(k1, k2, match):
    with pytest.raises(ValueError, match=match):
        motion.kernel_distance(k1, k2)


def test_velocity_is_distance_over_gap():
    ks = [_psd(5, s) for s in range(4)]
    t = np.array([0.0, 0.5, 1.5, 4.0])
    v = motion.kernel_velocity(ks, t)
    expected = [motion.kernel_distance(ks[i], ks[i + 1]) / (t[i + 1] - t[i]) for i in range(3)]
    np.testing.assert_allclose(v, expected, rtol=1e-15)
    np.testing.assert_allclose(motion.kernel_velocity(torch.stack(ks), t), expected, rtol=1e-15)


@pytest.mark.parametrize("times, match", [([0, 1, 1], "strictly increasing"), ([0, 1], "T ≥ 2 kernels and T times")])
def test_velocity_rejects_bad_times(times, match):
    with pytest.raises(ValueError, match=match):
        motion.kernel_velocity([np.eye(2)] * 3, times)


def test_linearized_model_keeps_its_kernel_along_training():
    """The tangent kernel of f_lin is J(θ0)J(θ0)ᵀ whatever θ: S ≡ 0 while f_lin trains (and its outputs change)."""
    x, y = _classes()
    net = models.MLP(5, 32, 2, 3, seed=0)
    lin = models.linearize(net)
    probe = x[:12]
    k0 = empirical.ntk(lin, probe, trace_outputs=True)
    np.testing.assert_allclose(k0, empirical.ntk(net, probe, trace_outputs=True), rtol=1e-12, atol=1e-12)
    res = train.fit(lin, x, y, loss="cross_entropy", lr=0.05, steps=40, batch_size=8, record_steps=[0, 10, 40],
                    record={"k": lambda m: empirical.ntk(m, probe, trace_outputs=True)})
    assert res.train_loss[-1] < 0.8 * res.train_loss[0]
    assert [motion.kernel_distance(k0, k) for k in res.records["k"]] == pytest.approx([0, 0, 0], abs=1e-14)


def test_linearize_around_a_snapshot():
    x, y = _classes()
    net = models.MLP(5, 16, 1, 3, seed=1)
    state0 = copy.deepcopy(net.state_dict())
    train.fit(net, x, y, loss="cross_entropy", lr=0.05, steps=30)
    lin = models.linearize(net, state0)        # around the initial parameters, although net has moved
    fresh = models.MLP(5, 16, 1, 3, seed=1)
    torch.testing.assert_close(lin(x), fresh(x).detach(), rtol=0, atol=0)
    assert not torch.equal(models.linearize(net)(x), lin(x))
    with pytest.raises(ValueError, match="state must be a state_dict of model"):
        models.linearize(net, models.MLP(5, 8, 1, 3, seed=0).state_dict())


def test_interpolate_ends_and_midpoint():
    a, b = models.MLP(5, 8, 1, 2, seed=0), models.MLP(5, 8, 1, 2, seed=1)
    for alpha, ref in [(0.0, a), (1.0, b)]:
        for p, q in zip(motion.interpolate(a, b, alpha).parameters(), ref.parameters()):
            assert torch.equal(p, q)
    mid = motion.interpolate(a, b, 0.5)
    for p, pa, pb in zip(mid.parameters(), a.parameters(), b.parameters()):
        torch.testing.assert_close(p, (pa + pb) / 2, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="same architecture"):
        motion.interpolate(a, models.MLP(5, 9, 1, 2, seed=1), 0.5)
    with pytest.raises(ValueError, match="alpha"):
        motion.interpolate(a, b, float("nan"))


def test_no_barrier_for_a_convex_loss():
    """A model without hidden layers has a cross-entropy convex in its parameters: the loss lies below the chord."""
    x, y = _classes()
    a, b = models.MLP(5, 1, 0, 3, seed=0), models.MLP(5, 1, 0, 3, seed=1)
    train.fit(a, x, y, loss="cross_entropy", lr=0.02, steps=20)
    res = motion.barrier(a, b, x, y)
    assert 0.0 <= res.loss_barrier <= 1e-12
    assert res.loss[0] == pytest.approx(motion.barrier(a, a, x, y).loss[7])


def test_permuted_copy_has_a_barrier():
    """Permuting the hidden units gives the same function (no difference at the endpoints) at another point of
    parameter space; the straight path between the two passes through worse networks."""
    x, y = _classes(n=60)
    a = models.MLP(5, 16, 1, 3, seed=2)
    train.fit(a, x, y, loss="cross_entropy", lr=0.05, steps=200)
    b = copy.deepcopy(a)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        b[0].weight.copy_(a[0].weight[perm])
        b[2].weight.copy_(a[2].weight[:, perm])
    res = motion.barrier(a, b, x, y, alphas=np.linspace(0, 1, 11))
    assert res.loss[0] == pytest.approx(res.loss[-1], rel=1e-12) and res.error[0] == res.error[-1]
    assert res.loss_barrier > 0.1 and res.loss_barrier == pytest.approx(res.loss.max() - res.loss[0], rel=1e-12)


def test_barrier_with_square_loss_on_signed_labels():
    """MSE with ±1 targets of shape (n,) and (n, 1) outputs: the targets are checked and matched as in train.fit."""
    x, y = _classes()
    y_pm = torch.where(y > 0, 1.0, -1.0).double()
    a, b = models.MLP(5, 8, 1, 1, seed=0), models.MLP(5, 8, 1, 1, seed=1)
    res = motion.barrier(a, b, x, y_pm, loss="mse", alphas=[0.0, 0.5, 1.0])
    expected = 0.5 * ((a(x)[:, 0] - y_pm) ** 2).mean()
    assert res.loss[0] == pytest.approx(float(expected), rel=1e-12)
    with pytest.raises(ValueError, match="y has 3 examples"):
        motion.barrier(a, b, x, y_pm[:3], loss="mse")


def test_barrier_rejects_bad_alphas_and_labels():
    x, y = _classes()
    a = models.MLP(5, 4, 1, 3, seed=0)
    with pytest.raises(ValueError, match="alphas must increase strictly from 0 to 1"):
        motion.barrier(a, a, x, y, alphas=[0.0, 0.5])
    with pytest.raises(ValueError, match="loss"):
        motion.barrier(a, a, x, y, loss="hinge")


def test_spawned_children_differ_only_by_their_minibatches():
    x, y = _classes()
    parent = models.MLP(5, 16, 1, 3, seed=3)
    before = copy.deepcopy(parent.state_dict())
    kwargs = dict(loss="cross_entropy", lr=0.05, steps=15, batch_size=8)
    c1, c2 = motion.spawn(parent, x, y, seeds=(1, 2), **kwargs)
    assert all(torch.equal(before[k], v) for k, v in parent.state_dict().items())
    assert not torch.equal(c1[0].weight, c2[0].weight)
    same = copy.deepcopy(parent)
    train.fit(same, x, y, seed=1, **kwargs)
    assert all(torch.equal(p, q) for p, q in zip(same.parameters(), c1.parameters()))


@pytest.mark.parametrize("kwargs, match", [
    (dict(seeds=(1, 1), batch_size=8), "distinct seeds"),
    (dict(seeds=(1, 2)), "needs minibatches"),
    (dict(seeds=(1, 2), batch_size=8, seed=3), "seeds="),
])
def test_spawn_rejects_bad_arguments(kwargs, match):
    x, y = _classes()
    with pytest.raises(ValueError, match=match):
        motion.spawn(models.MLP(5, 4, 1, 3, seed=0), x, y, loss="cross_entropy", steps=1, **kwargs)

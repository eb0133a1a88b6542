"""Tests of ntkcore.distributed on a distributed.LocalCluster of 2 worker processes on 127.0.0.1, started and stopped
here: the distributed kernels equal the in-memory ones, the solves equal the in-memory solve, a worker killed in the
middle of a computation leaves the result intact, and a worker's memory stays under the stated bound for a matrix
larger than that bound."""
from __future__ import annotations

import os
import signal
import time
import types

import numpy as np
import pytest
import torch

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
import dask.array as da  # noqa: E402

from ntkcore import distributed as nd  # noqa: E402
from ntkcore import kernels, predict  # noqa: E402

TOL = 1e-12  # float64: the blocks are the in-memory call on blocks of examples, equal up to rounding


@pytest.fixture(scope="module")
def client():
    # the scheduler keeps every transition (for the story of a block run twice; by default the last 1000)
    with dask.config.set({"distributed.admin.low-level-log-length": 100_000}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                     dashboard_address="127.0.0.1:0") as cluster, distributed.Client(cluster) as c:
        yield c


def _vectors(n, d=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def _images(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 2, 5, 5))


def _close(a, b, tol=TOL):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= tol * np.abs(b).max(), np.abs(a - b).max()


# ---------------------------------------------------------------------------------------------------------------
# The kernel matrix
# ---------------------------------------------------------------------------------------------------------------

CASES = {
    "fc": (kernels.fc_network(2), _vectors(90), _vectors(41, seed=1), 25),
    "cntk": (kernels.cntk_network(2, gap=True), _images(23), _images(9, seed=1), 7),
}


@pytest.mark.parametrize("symmetric", [True, False], ids=["symmetric", "cross"])
@pytest.mark.parametrize("case", CASES)
def test_kernel_equals_the_in_memory_kernel(client, case, symmetric):
    net, x1, x2, chunk = CASES[case]
    x2 = None if symmetric else x2
    for get in ("ntk", "nngp"):
        k = nd.kernel_matrix(net, x1, x2, get=get, chunk=chunk)
        assert k.chunks[0][0] == chunk and k.numblocks[0] > 2  # blocks of unequal size at the end
        expected = getattr(net.kernel(torch.from_numpy(x1), None if x2 is None else torch.from_numpy(x2), get=get),
                           get)
        result = k.compute()
        _close(result, expected.numpy())
        if symmetric:
            assert np.array_equal(result, result.T)


def test_only_the_upper_triangle_of_blocks_is_computed(client):
    net, x, _, chunk = CASES["fc"]
    k = nd.kernel_matrix(net, x, chunk=chunk)  # 4 x 4 blocks: 10 computed, 6 mirrored
    tasks = dict(k.__dask_graph__())
    blocks = [key for key in tasks if isinstance(key, tuple) and key[0] == k.name]
    mirrors = [key for key in blocks if tasks[key].func is nd._mirror]
    assert len(blocks) == 16 and len(mirrors) == 6 and all(i > j for _, i, j in mirrors)


def test_empirical_ntk_of_a_torch_model(client):
    x = _vectors(30, d=4)
    for outputs in (1, 2):
        model = kernels.fc_network(1, width=16, out_features=outputs).module((4,), seed=0)
        k = nd.kernel_matrix(model, x, chunk=8).compute()
        from ntkcore import empirical

        _close(k, empirical.ntk(model, torch.from_numpy(x)).numpy())
        assert k.shape == ((30, 30) if outputs == 1 else (30, 30, 2, 2))


def test_graph_network_takes_features_and_adjacency(client):
    g = np.random.default_rng(2)
    x = g.standard_normal((12, 4, 3))
    a = (g.random((12, 4, 4)) < 0.5).astype(np.float64) + np.eye(4)
    net = kernels.gntk_network(1, 1)
    k = nd.kernel_matrix(net, (x, a), chunk=5).compute()
    _close(k, net.kernel(torch.from_numpy(x), adjacency=torch.from_numpy(a)).ntk.numpy())


def _graphs(n, seed):
    """``n`` graphs of 2 to 6 nodes: lists of features ``(N_i, 3)`` and adjacencies ``(N_i, N_i)``."""
    g = np.random.default_rng(seed)
    sizes = g.integers(2, 7, n)
    return ([g.standard_normal((m, 3)) for m in sizes],
            [(g.random((m, m)) < 0.5).astype(np.float64) + np.eye(m) for m in sizes])


@pytest.mark.parametrize("symmetric", [True, False], ids=["symmetric", "cross"])
def test_graphs_of_different_sizes_as_lists(client, symmetric):
    """Padded with their numbers of nodes and cut back to lists in each block: the in-memory kernel of the lists
    (padding without the numbers of nodes would count the padding as nodes)."""
    net = kernels.gntk_network(1, 1)
    (x1, a1), (x2, a2) = _graphs(17, seed=3), _graphs(6, seed=4)
    k = nd.kernel_matrix(net, (x1, a1), None if symmetric else (x2, a2), chunk=5).compute()
    t1, b1 = [torch.from_numpy(x) for x in x1], [torch.from_numpy(a) for a in a1]
    if symmetric:
        expected = net.kernel(t1, adjacency=b1).ntk
    else:
        expected = net.kernel(t1, [torch.from_numpy(x) for x in x2],
                              adjacency=(b1, [torch.from_numpy(a) for a in a2])).ntk
    _close(k, expected.numpy())
    with pytest.raises(ValueError, match=r"x1\[1\] must be a list of one \(N_i, N_i\) array per graph of x1\[0\]"):
        nd.kernel_matrix(net, (x1, a1[:-1]))
    with pytest.raises(ValueError, match=r"x2 of a network of ntkcore.layers must be .* got a tuple of 3"):
        nd.kernel_matrix(net, (x1, a1), (x2, a2, x2))


def test_cg_on_graphs_of_different_sizes(client):
    """CG's landmark columns are a kernel on the parts of the operator (three for graph lists), not on new inputs."""
    net = kernels.gntk_network(1, 1)
    (x1, a1), (x2, a2) = _graphs(17, seed=3), _graphs(6, seed=4)
    y = np.random.default_rng(5).standard_normal(17)
    fit = nd.kernel_ridge(net, (x1, a1), y, (x2, a2), ridge=1.0, solver="cg", chunk=5, tol=1e-12, landmarks=8)
    t1, b1 = [torch.from_numpy(x) for x in x1], [torch.from_numpy(a) for a in a1]
    t2, b2 = [torch.from_numpy(x) for x in x2], [torch.from_numpy(a) for a in a2]
    expected = predict.kernel_ridge(net.kernel(t2, t1, adjacency=(b2, b1)).ntk, net.kernel(t1, adjacency=b1).ntk,
                                    y, 1.0)
    _close(fit.prediction, expected.numpy(), tol=1e-9)


def test_inputs_from_dask_and_npy_files_and_writing_to_npy(client, tmp_path):
    net, x, x2, _ = CASES["fc"]
    expected = net.kernel(torch.from_numpy(x), torch.from_numpy(x2)).ntk.numpy()
    np.save(tmp_path / "x2.npy", x2)
    k = nd.kernel_matrix(net, da.from_array(x, chunks=13), str(tmp_path / "x2.npy"), chunk=20)
    _close(k.compute(), expected)
    _close(np.load(nd.to_npy(k, tmp_path / "k.npy")), expected)  # dask.array.store
    op = nd.KernelOperator(net, x, chunk=20)
    written = np.load(nd.to_npy(op, tmp_path / "kk.npy"))  # each task writes its block and the mirror image
    _close(written, net.kernel(torch.from_numpy(x)).ntk.numpy())
    assert np.array_equal(written, written.T)


@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_runs_on_the_active_scheduler(client, scheduler):
    net, x, _, chunk = CASES["fc"]
    with dask.config.set(scheduler=scheduler):
        k = nd.kernel_matrix(net, x, chunk=chunk).compute()
    _close(k, net.kernel(torch.from_numpy(x)).ntk.numpy())


def test_products_equal_the_in_memory_products(client):
    net, x, x2, chunk = CASES["fc"]
    v = np.random.default_rng(3).standard_normal((90, 2))
    k = net.kernel(torch.from_numpy(x)).ntk.numpy()
    _close(nd.KernelOperator(net, x, chunk=chunk) @ v, k @ v)
    kx = net.kernel(torch.from_numpy(x2), torch.from_numpy(x)).ntk.numpy()
    _close(nd.KernelOperator(net, x2, x, chunk=chunk) @ v[:, 0], kx @ v[:, 0])


# ---------------------------------------------------------------------------------------------------------------
# Kernel regression
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_solve_equals_the_in_memory_solve(client, solver):
    net, x, x_test, chunk = CASES["fc"]
    y = np.random.default_rng(4).standard_normal((90, 2))
    ridge = 1.0
    fit = nd.kernel_ridge(net, x, y, x_test, ridge=ridge, solver=solver, chunk=chunk, tol=1e-12, landmarks=90)
    k = net.kernel(torch.from_numpy(x)).ntk
    expected = predict.kernel_ridge(net.kernel(torch.from_numpy(x_test), torch.from_numpy(x)).ntk, k, y, ridge)
    _close(fit.prediction, expected.numpy(), tol=1e-9)
    true_residual = np.linalg.norm(y - (k.numpy() + ridge * np.eye(90)) @ fit.solution.coef, axis=0).max()
    assert fit.solution.residual <= 1e-12 and true_residual <= 1e-9 * np.linalg.norm(y, axis=0).min()
    assert (fit.solution.iterations == 0) == (solver == "cholesky")


def _indefinite(b=20):
    """[[I, 2I], [2I, I]]: positive diagonal blocks, eigenvalues -1 and 3."""
    eye = np.eye(b)
    return da.from_array(np.block([[eye, 2 * eye], [2 * eye, eye]]), chunks=b)


def test_a_matrix_that_is_not_positive_definite_fails_clearly(client):
    y = np.concatenate([np.ones(20), -np.ones(20)])  # the eigenvector of -1
    with pytest.raises(ValueError, match=r"not positive definite \(smallest eigenvalue -1\)"):
        nd.solve_cholesky(_indefinite(), y)
    with pytest.raises(ValueError, match=r"CG found a direction p with .* = -1 <= 0"):
        nd.solve_cg(_indefinite(), y, landmarks=0)
    with pytest.raises(ValueError, match=r"the kernel between its 40 landmark examples has smallest eigenvalue -1"):
        nd.solve_cg(_indefinite(), y, landmarks=40)


def test_the_nystrom_preconditioner_cuts_the_iterations():
    """The claim of solve_cg's docstring: with landmarks a fifth of the examples, three- to fivefold fewer
    iterations on the NTK of a fully connected network (here 1000 examples)."""
    net = kernels.fc_network(2)
    x, y = _vectors(1000, seed=8), _vectors(1000, d=1, seed=9)[:, 0]
    k = net.kernel(torch.from_numpy(x)).ntk.numpy()
    plain = nd.solve_cg(k, y, ridge=0.1, landmarks=0)
    preconditioned = nd.solve_cg(k, y, ridge=0.1, landmarks=200)
    _close(preconditioned.coef, plain.coef, tol=1e-6)
    assert 3 <= plain.iterations / preconditioned.iterations <= 5, (plain.iterations, preconditioned.iterations)


def test_cg_fails_clearly_when_it_stalls():
    g = np.random.default_rng(10)
    q = np.linalg.qr(g.standard_normal((40, 40)))[0]
    a = (q * np.logspace(0, 10, 40)) @ q.T  # condition number 1e10: rounding keeps the residual near 1e-7
    y = g.standard_normal(40)
    with pytest.raises(ValueError, match=r"CG stalled: the relative residual [\d.]+e-0[67] stays above the tolerance "
                                         r"1e-08 after \d+ iterations and 2 restarts"):
        nd.solve_cg((a + a.T) / 2, y, landmarks=0, max_iterations=10_000)
    with pytest.raises(ValueError, match=r"CG stalled: relative residual .* after max_iterations=2"):
        nd.solve_cg((a + a.T) / 2, y, landmarks=0, max_iterations=2)


# ---------------------------------------------------------------------------------------------------------------
# Faults and memory
# ---------------------------------------------------------------------------------------------------------------

def _executing(dask_worker):
    return [ts.key for ts in dask_worker.state.executing]


def _times_processing(dask_scheduler, key):
    return sum(1 for t in dask_scheduler.story(key) if t[0] == key and t[2] == "processing")


def test_a_killed_worker_does_not_corrupt_the_result(client):
    net = kernels.cntk_network(2)
    x = np.random.default_rng(6).standard_normal((60, 2, 8, 8))
    k = nd.kernel_matrix(net, x, chunk=15)  # 10 blocks computed, each about a tenth of a second
    future = client.compute(k)
    victim = key = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline:
        for address, keys in client.run(_executing).items():
            running = [k_ for k_ in keys if isinstance(k_, tuple) and k_[0] == k.name]
            if running and victim is None:
                victim, key = address, running[0]
    assert victim is not None and not future.done()
    pid = client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)  # in the middle of the block `key`
    result = future.result(timeout=120)
    _close(result, net.kernel(torch.from_numpy(x)).ntk.numpy())
    assert np.array_equal(result, result.T)
    assert client.run_on_scheduler(_times_processing, key=key) >= 2  # Dask ran the block again elsewhere
    assert pid not in client.run(os.getpid).values()


def _warm_up():
    """Import what the tiles need, and compute one, on this worker (not counted in its memory growth)."""
    kernels.fc_network(2).kernel(torch.ones(4, 3, dtype=torch.float64))


def test_memory_per_worker_stays_under_the_bound(client, tmp_path):
    client.wait_for_workers(2, timeout=120)  # the nanny restarts a killed worker
    net = kernels.fc_network(2)
    x = _vectors(6000, d=32, seed=7)
    client.run(_warm_up)
    op = nd.KernelOperator(net, x, chunk=500, max_memory=2**23)
    bound = op.worker_memory(threads=1)
    matrix = 6000 ** 2 * 8
    assert matrix > 4 * bound  # each worker writes half of the matrix, more than twice its bound
    with nd.peak_memory(client) as memory:
        written = nd.to_npy(op, tmp_path / "k.npy")
    growth = [g for _, g in memory.values()]
    assert len(growth) == 2 and max(growth) <= bound, (growth, bound)
    k = np.load(written, mmap_mode="r")
    _close(k[:500, -500:], net.kernel(torch.from_numpy(x[:500]), torch.from_numpy(x[-500:])).ntk.numpy())
    _close(k[-500:, :500], k[:500, -500:].T)


@pytest.mark.parametrize("kernel_keeps_it", [True, False], ids=["high-water mark", "sampled"])
def test_peak_memory_catches_a_short_allocation(monkeypatch, tmp_path, kernel_keeps_it):
    """Both ways of measuring, in this process: the kernel's high-water mark (Linux), and the sampling thread where
    the mark cannot be reset. An allocation of 64 MiB freed at once still counts."""
    if not kernel_keeps_it:
        monkeypatch.setattr(nd, "_CLEAR_REFS", str(tmp_path / "missing" / "clear_refs"))
    elif not nd._reset_high_water_mark():
        pytest.skip("the kernel keeps no resettable high-water mark here")
    worker = types.SimpleNamespace()
    nd._start_peak(worker, interval=0.001)
    assert (worker.ntkcore_memory["thread"] is None) == kernel_keeps_it
    size = 64 * 2**20
    block = np.ones(size // 8)
    time.sleep(0.01)  # the sampler's turn
    del block
    peak, growth = nd._stop_peak(worker)
    # the rest of the process's resident memory moves too, by a few hundred kB (the allocator, Python's objects)
    assert size - 2**20 <= growth < 2 * size and peak >= growth


# ---------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------

def test_bad_input_is_a_value_error_naming_it(client, tmp_path):
    net, x, _, _ = CASES["fc"]
    model = kernels.fc_network(1, width=4).module((8,), seed=0)
    with pytest.raises(ValueError, match="net must be a network of ntkcore.layers"):
        nd.kernel_matrix("fc", x)
    with pytest.raises(ValueError, match=r"get \(a torch model gives its empirical NTK\)='nngp' is not known"):
        nd.kernel_matrix(model, x, get="nngp")
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        nd.kernel_matrix(net, x, chunk=0)
    with pytest.raises(ValueError, match="x2 must have the feature dimension of x1"):
        nd.kernel_matrix(net, x, _vectors(5, d=3))
    with pytest.raises(ValueError, match="x1 names the file .* not a readable .npy array"):
        nd.kernel_matrix(net, str(tmp_path / "missing.npy"))
    with pytest.raises(ValueError, match="x1 must hold at least one example"):
        nd.kernel_matrix(net, x[:0])
    bad = x.copy()
    bad[-1, 0] = np.nan
    with pytest.raises(ValueError, match="x1 contains NaN or inf"):  # an array in memory: checked up front
        nd.kernel_matrix(net, bad)
    with pytest.raises(ValueError, match=r"contains NaN or inf \(in the block of rows \d+:\d+ of x1 and"):
        nd.kernel_matrix(net, da.from_array(bad), chunk=25).compute()  # lazy: found in the block that reads it
    with pytest.raises(ValueError, match=r"y must have 90 rows"):
        nd.kernel_ridge(net, x, np.ones(89), x[:3])
    with pytest.raises(ValueError, match="solver='lu' is not known"):
        nd.kernel_ridge(net, x, np.ones(90), x[:3], solver="lu")
    with pytest.raises(ValueError, match="products need a matrix"):
        nd.KernelOperator(kernels.fc_network(1, width=4, out_features=2).module((8,), seed=0), x) @ np.ones(90)

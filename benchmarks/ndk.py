"""Benchmark of ntkcore.ndk and ntkcore.langevin (issue 6).

1. Mean-predictor solver (NDK paper Eqs. 14-15) on digits 0 vs 1 (scikit-learn's 8×8 digits; P training and P
   test images, each scaled to norm √N0 so that q⁰(x, x) = x·x/N0 = 1), L = 2, ReLU, T = 0.01, σ² = σ0² = 1,
   horizon 10 σ²/T: the grid is refined (``resolution`` doubled) until the solver's error estimate is below
   ``rtol`` times the largest prediction; the time, the grid size and the number of time pairs at which the kernel
   was evaluated (against all pairs of the grid, what a quadrature with the kernel at every node would need) of
   each attempt are reported.
2. Long horizons (issue 14): the same solver with σ²/T = 1 (T = σ² = σ0² = 1) over horizons of hundreds of σ²/T,
   where the far-field cut (``mean_predictor(truncate=True)``, the default) keeps the cost linear in the horizon and
   the memory bounded. Each horizon runs in a fresh process (peak memory: ``resource.getrusage`` ``ru_maxrss``), with
   one torch thread; reported: wall and CPU time, peak memory, kernel time pairs, the history one step reads, the
   error estimate; with ``--uncut`` also the solver without the cut (cost ∝ G², memory growing with the grid).
3. Langevin ensemble: runs benchmarks/langevin.py (E = 100 networks advanced together as batched tensors vs a
   Python loop over 100 single networks, the same Euler-Maruyama steps, over several widths).

    python benchmarks/ndk.py                    # P = 100; all parts (horizons 200, 400, 1000, 2000 with P = 20)
    python benchmarks/ndk.py --part solver --verify
    python benchmarks/ndk.py --part horizon --uncut --horizons 200 400
    python benchmarks/ndk.py --quick            # P = 20, small widths, horizons 50, 100, 200 with P = 4 (a minute)
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from ntkcore import ndk


def digits_01(P, seed=0):
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = d.target <= 1
    x = d.data[keep].astype(np.float64)
    y = np.where(d.target[keep] == 0, 1.0, -1.0)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    x = x / np.linalg.norm(x, axis=1, keepdims=True) * math.sqrt(x.shape[1])  # q0(x, x) = 1
    t = torch.as_tensor
    return t(x[:P]), t(y[:P]), t(x[P:2 * P]), t(y[P:2 * P])


HYPER = dict(L=2, activation="relu", sigma0_sq=1.0, sigma_sq=1.0, T=0.01)


def bench_solver(P, rtol, max_resolution, start_resolution=0.5):
    x, y, xt, _ = digits_01(P)
    hyper = HYPER
    rows, res = [], start_resolution
    while True:
        start = time.perf_counter()
        sol = ndk.mean_predictor(x, y, xt, 10 * hyper["sigma_sq"] / hyper["T"], resolution=res, **hyper)
        elapsed = time.perf_counter() - start
        scale = max(sol.train.abs().max().item(), sol.test.abs().max().item())
        rel = sol.error_estimate / scale
        g = sol.times.numel()
        rows.append((res, g, 2 * g - 1, sol.kernel_pairs, elapsed, rel))
        print(f"  resolution {res:g}: {g} points, {sol.kernel_pairs} kernel time pairs, {elapsed:.1f} s, "
              f"relative error {rel:.1e}", flush=True)
        if rel <= rtol or res >= max_resolution:
            return rows, sol
        res *= 2


def verify(P, sol):
    """Max difference between ``sol`` and the solution on its grid with every step halved (whose own error is about
    four times smaller), relative to the largest prediction: a check of the error estimate."""
    x, y, xt, _ = digits_01(P)
    t = sol.times
    fine = torch.empty(2 * t.numel() - 1, dtype=t.dtype)
    fine[0::2], fine[1::2] = t, 0.5 * (t[1:] + t[:-1])
    start = time.perf_counter()
    ref = ndk.mean_predictor(x, y, xt, times=fine, **HYPER)
    elapsed = time.perf_counter() - start
    diff = max((sol.train - ref.train[0::2]).abs().max().item(), (sol.test - ref.test[0::2]).abs().max().item())
    return diff / max(ref.train.abs().max().item(), ref.test.abs().max().item()), elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (a few seconds)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--rtol", type=float, default=1e-3, help="target relative error of the solver")
    parser.add_argument("--verify", action="store_true",
                        help="also solve on the final grid with every step halved and report the difference")
    parser.add_argument("--part", choices=("all", "solver", "horizon", "langevin"), default="all", help="what to run")
    parser.add_argument("--horizons", type=float, nargs="+", help="horizons of the long-horizon part")
    parser.add_argument("--uncut", action="store_true", help="long horizons: also without the far-field cut")
    parser.add_argument("--one-horizon", nargs=4, help=argparse.SUPPRESS)  # t_max P truncate save: one run
    args = parser.parse_args()
    if args.one_horizon:
        return one_horizon(float(args.one_horizon[0]), int(args.one_horizon[1]), args.one_horizon[2] == "1",
                           args.one_horizon[3])
    torch.set_num_threads(args.threads)
    P = 20 if args.quick else 100

    if args.part in ("all", "solver"):
        solver_table(P, args)
    if args.part in ("all", "horizon"):
        horizon_table(args)
    if args.part in ("all", "langevin"):  # benchmarks/langevin.py, over several widths
        import importlib

        langevin_bench = importlib.import_module("langevin")  # this folder's langevin.py, not ntkcore.langevin
        langevin_bench.main(["--threads", str(args.threads)] + (["--quick"] if args.quick else []))


def solver_table(P, args):
    rows, sol = bench_solver(P, args.rtol, max_resolution=4 if args.quick else 16)
    print(f"## Mean-predictor solver: digits 0/1, P = {P} train + {P} test, L = 2, ReLU, T = 0.01, "
          f"σ² = σ0² = 1, t ∈ [0, 1000], {args.threads} threads\n")
    print("| resolution | grid points (coarse / refined) | kernel time pairs | all pairs of the refined grid "
          "| time (s) | relative error estimate |")
    print("|---:|---:|---:|---:|---:|---:|")
    for res, g, gf, pairs, el, rel in rows:
        print(f"| {res:g} | {g} / {gf} | {pairs} | {gf * (gf + 1) // 2} | {el:.1f} | {rel:.1e} |")
    if args.verify:
        diff, el = verify(P, sol)
        print(f"\ncheck: the solution on the grid with every step halved ({el:.1f} s) differs by {diff:.1e} "
              "(relative) from the returned one")
    acc = ((sol.test[-1] > 0) == (digits_01(P)[3] > 0)).double().mean().item()
    print(f"\ntest accuracy of the mean predictor at t = 1000: {acc:.3f}\n")


LONG = dict(L=2, activation="relu", sigma0_sq=1.0, sigma_sq=1.0, T=1.0)


def one_horizon(t_max, P, truncate, save):
    """One long-horizon solve in this (fresh) process; prints a JSON line and, unless ``save`` is "-", writes the
    solution (times, train, test) to the .npz file ``save``. Also runs with an ntkcore from before the far-field cut
    (``PYTHONPATH=<that checkout>``), whose solver always reads the whole history."""
    torch.set_num_threads(1)
    x, y, xt, _ = digits_01(P)
    has_cut = "truncate" in inspect.signature(ndk.mean_predictor).parameters
    kwargs = dict(truncate=truncate) if has_cut else {}
    start, cpu = time.perf_counter(), time.process_time()
    sol = ndk.mean_predictor(x, y, xt, t_max, **kwargs, **LONG)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    if save != "-":
        np.savez(save, times=sol.times.numpy(), train=sol.train.numpy(), test=sol.test.numpy())
    grid = 2 * sol.times.numel() - 1  # the refined grid the solver runs on
    print(json.dumps(dict(seconds=seconds, cpu=cpu, peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                          grid=grid, pairs=sol.kernel_pairs, history=getattr(sol, "history", grid),
                          estimate=sol.error_estimate, cut=has_cut and truncate, ntkcore=ndk.__file__)))


def _run_horizon(t_max, P, truncate, save="-"):
    out = subprocess.run([sys.executable, __file__, "--one-horizon", str(t_max), str(P), str(int(truncate)), save],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def horizon_table(args):
    """The long-horizon table; with ``--uncut`` each horizon is also solved whole, and the largest difference
    between the two solutions (all times, train and test inputs) is reported against the error estimate."""
    P = 4 if args.quick else 20
    horizons = args.horizons or ((50.0, 100.0, 200.0) if args.quick else (200.0, 400.0, 1000.0, 2000.0))
    print(f"## Long horizons: digits 0/1, P = {P} train + {P} test, L = 2, ReLU, σ²/T = 1 (T = σ² = σ0² = 1), "
          "one thread, a fresh process per run\n")
    print("| far field | t_max | refined grid points | kernel time pairs | history read per step | wall (s) | CPU (s) "
          "| peak memory (MB) | error estimate | max abs(cut − whole) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for t_max in horizons:
            runs = [_run_horizon(t_max, P, True, f"{tmp}/cut.npz")]
            if args.uncut:
                runs.append(_run_horizon(t_max, P, False, f"{tmp}/whole.npz"))
            diff = ""
            if args.uncut and runs[0]["cut"]:
                a, b = np.load(f"{tmp}/cut.npz"), np.load(f"{tmp}/whole.npz")
                diff = f"{max(np.abs(a[k] - b[k]).max() for k in ('train', 'test')):.1e}"
            for r in runs:
                print(f"| {'cut' if r['cut'] else 'whole'} | {t_max:g} | {r['grid']} | {r['pairs']} | {r['history']} "
                      f"| {r['seconds']:.1f} | {r['cpu']:.1f} | {r['peak_mb']:.0f} | {r['estimate']:.1e} "
                      f"| {diff if r['cut'] else ''} |", flush=True)
    print(f"\nntkcore: {runs[0]['ntkcore']}\n")


if __name__ == "__main__":
    main()

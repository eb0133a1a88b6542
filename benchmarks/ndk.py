"""Benchmark of ntkcore.ndk and ntkcore.langevin (issue 6).

1. Mean-predictor solver (NDK paper Eqs. 14-15) on digits 0 vs 1 (scikit-learn's 8×8 digits; P training and P
   test images, each scaled to norm √N0 so that q⁰(x, x) = x·x/N0 = 1), L = 2, ReLU, T = 0.01, σ² = σ0² = 1,
   horizon 10 σ²/T: the grid is refined (``resolution`` doubled) until the solver's error estimate is below
   ``rtol`` times the largest prediction; the time, the grid size and the number of time pairs at which the kernel
   was evaluated (against all pairs of the grid, what a quadrature with the kernel at every node would need) of
   each attempt are reported.
2. Langevin ensemble: runs benchmarks/langevin.py (E = 100 networks advanced together as batched tensors vs a
   Python loop over 100 single networks, the same Euler-Maruyama steps, over several widths).

    python benchmarks/ndk.py                    # P = 100; both parts
    python benchmarks/ndk.py --part solver --verify
    python benchmarks/ndk.py --quick            # P = 20, small widths (seconds)
"""
from __future__ import annotations

import argparse
import math
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
    parser.add_argument("--part", choices=("all", "solver", "langevin"), default="all", help="what to run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    P = 20 if args.quick else 100

    if args.part != "langevin":
        solver_table(P, args)
    if args.part != "solver":  # benchmarks/langevin.py, over several widths
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


if __name__ == "__main__":
    main()

"""Benchmark of ntkcore.ndk and ntkcore.langevin (issue 6).

1. Mean-predictor solver (NDK paper Eqs. 14-15) on digits 0 vs 1 (scikit-learn's 8×8 digits; P training and P
   test images, each scaled to norm √N0 so that q⁰(x, x) = x·x/N0 = 1), L = 2, ReLU, T = 0.01, σ² = σ0² = 1,
   horizon 10 σ²/T: the grid is refined (``resolution`` doubled) until the solver's error estimate is below
   ``rtol`` times the largest prediction; the time and the grid size of each attempt are reported.
2. Langevin ensemble: ``E`` networks advanced together as batched tensors vs a Python loop over ``E`` single
   networks (``n_networks=1``), the same number of Euler-Maruyama steps.

    python benchmarks/ndk.py            # P = 100, E = 100
    python benchmarks/ndk.py --quick    # P = 20, E = 20, fewer steps
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from ntkcore import langevin, ndk


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


def bench_solver(P, rtol, max_resolution):
    x, y, xt, _ = digits_01(P)
    hyper = dict(L=2, activation="relu", sigma0_sq=1.0, sigma_sq=1.0, T=0.01)
    rows, res = [], 1.0
    while True:
        start = time.perf_counter()
        sol = ndk.mean_predictor(x, y, xt, 10 * hyper["sigma_sq"] / hyper["T"], resolution=res, **hyper)
        elapsed = time.perf_counter() - start
        scale = max(sol.train.abs().max().item(), sol.test.abs().max().item())
        rel = sol.error_estimate / scale
        rows.append((res, sol.times.numel(), 2 * sol.times.numel() - 1, elapsed, rel))
        print(f"  resolution {res:g}: {sol.times.numel()} points, {elapsed:.1f} s, relative error {rel:.1e}",
              flush=True)
        if rel <= rtol or res >= max_resolution:
            return rows, sol
        res *= 2


def bench_langevin(P, E, steps, width):
    x, y, xt, _ = digits_01(P)
    kw = dict(L=2, activation="relu", width=width, sigma0_sq=1.0, sigma_sq=1.0, T=0.01, dt=0.01)
    record = [0.0, steps * kw["dt"]]
    start = time.perf_counter()
    langevin.simulate(x, y, xt, record, n_networks=E, seed=0, **kw)
    batched = time.perf_counter() - start
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(E):
        langevin.simulate(x, y, xt, record, n_networks=1, seed=gen, **kw)
    loop = time.perf_counter() - start
    return batched, loop


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (a few seconds)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--rtol", type=float, default=1e-3, help="target relative error of the solver")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    P = 20 if args.quick else 100
    E = 20 if args.quick else 100
    steps = 50 if args.quick else 200

    rows, sol = bench_solver(P, args.rtol, max_resolution=4 if args.quick else 16)
    print(f"## Mean-predictor solver: digits 0/1, P = {P} train + {P} test, L = 2, ReLU, T = 0.01, "
          f"σ² = σ0² = 1, t ∈ [0, 1000], {args.threads} threads\n")
    print("| resolution | grid points (coarse / refined) | time (s) | relative error estimate |")
    print("|---:|---:|---:|---:|")
    for res, g, gf, el, rel in rows:
        print(f"| {res:g} | {g} / {gf} | {el:.1f} | {rel:.1e} |")
    acc = ((sol.test[-1] > 0) == (digits_01(P)[3] > 0)).double().mean().item()
    print(f"\ntest accuracy of the mean predictor at t = 1000: {acc:.3f}\n")

    width = 256
    batched, loop = bench_langevin(P, E, steps, width)
    print(f"## Langevin ensemble: {E} networks, L = 2, width {width}, P = {P} train + {P} test, {steps} steps\n")
    print("| method | time (s) | ms per step | speed-up |")
    print("|---|---:|---:|---:|")
    print(f"| batched ensemble | {batched:.2f} | {1e3 * batched / steps:.1f} | {loop / batched:.1f}× |")
    print(f"| Python loop over networks | {loop:.2f} | {1e3 * loop / steps:.1f} | 1.0× |")


if __name__ == "__main__":
    main()

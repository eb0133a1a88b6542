"""Benchmark of ntkcore.langevin (issue 6): a batched ensemble of E networks against a Python loop over the same
number of single networks, the same Euler-Maruyama steps.

Setting of the issue: digits 0 vs 1 (scikit-learn's 8×8 digits, ``digits_01`` of benchmarks/ndk.py), P = 100
training and 100 test images scaled to norm √N0, L = 2 hidden ReLU layers, T = 0.01, σ² = σ0² = 1, dt = 0.01,
E = 100 networks, float32. The batched run is one ``simulate(..., n_networks=E, seed=0)``; the loop is E calls of
``simulate(..., n_networks=1, seed=gen)`` drawing from one generator. Both record the outputs at t = 0 and at the
end only, so the timings are of the steps. Times are medians of repeats after a warm-up (benchmarks/_timing.py).

What to expect (target of the issue: a speed-up of at least 10×). One step costs
``2·E·P·(2·N·N0 + 3·(L−1)·N² + 2·N)`` floating-point operations (4.6 GFLOP at N = 256) and
``E·(N·N0 + (L−1)·N² + N)`` Gaussian draws (8.2 M at N = 256), in the batched run and in the loop alike. At small
widths the loop is bound by per-call overhead (≈ 20 tensor operations per network and step, a few µs of Python and
dispatch each: ≈ 0.5 ms per network-step on the CPU, whatever the width), which batching removes. At larger widths
both runs are bound by the same arithmetic and the same serial sampling of Gaussian noise (mt19937, ≈ 8 ns per
draw), which batching cannot remove; the speed-up then tends to the ratio of batched to single-network
matrix-product throughput, and the 10× target is out of reach by construction.

Measured on a 2-core CPU (Xeon @ 2.5 GHz, torch 2.13, 2 threads, E = 100, 20 steps): batched / loop ms per step
4.2 / 48 at N = 16 (11×), 9.4 / 68 at N = 32 (7×), 15 / 59 at N = 64 (4×), 42 / 121 at N = 128 (3×),
98 / 225 at N = 256 (2.3×). The 10× target holds only at N ≤ 16 there. On a GPU the loop is bound by kernel-launch
latency (≈ 20 launches per network and step) while the batched ensemble stays arithmetic-bound, so the speed-up is
expected to be far larger there (run with ``--device cuda``).

    python benchmarks/langevin.py                  # widths 16, 32, 64, 128, 256; E = 100; 20 steps; 2 threads
    python benchmarks/langevin.py --quick          # widths 16, 32; 5 steps (a few seconds)
    python benchmarks/langevin.py --device cuda    # on a GPU (synchronised timings)
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _timing import median_time  # noqa: E402
from ndk import digits_01  # noqa: E402

from ntkcore import langevin  # noqa: E402
from ntkcore.device import describe, resolve_device  # noqa: E402

TARGET = 10.0
L, N0 = 2, 64
HYPER = dict(L=L, activation="relu", sigma0_sq=1.0, sigma_sq=1.0, T=0.01, dt=0.01)


def step_cost(P, E, width):
    """(GFLOP, Gaussian draws) of one Euler-Maruyama step of E networks on P inputs."""
    flop = 2 * E * P * (2 * width * N0 + 3 * (L - 1) * width**2 + 2 * width)
    return flop / 1e9, E * (width * N0 + (L - 1) * width**2 + width)


def bench(P, E, steps, width, device, repeats_batched, repeats_loop):
    """Median seconds of the batched ensemble and of the loop over single networks."""
    x, y, xt, _ = (t.to(device) for t in digits_01(P))
    kw = dict(HYPER, width=width, device=device)
    record = [0.0, steps * kw["dt"]]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def batched():
        langevin.simulate(x, y, xt, record, n_networks=E, seed=0, **kw)
        sync()

    def loop():
        gen = torch.Generator(device=device).manual_seed(0)
        for _ in range(E):
            langevin.simulate(x, y, xt, record, n_networks=1, seed=gen, **kw)
        sync()

    return median_time(batched, repeats_batched), median_time(loop, repeats_loop)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="widths 16 and 32, 5 steps (a few seconds)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--widths", type=int, nargs="+", help="hidden widths (default 16 32 64 128 256)")
    parser.add_argument("--networks", type=int, default=100, help="ensemble size E (default 100)")
    parser.add_argument("--steps", type=int, help="Euler-Maruyama steps (default 20; 5 with --quick)")
    parser.add_argument("--P", type=int, default=100, help="training (and test) digits (default 100)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    widths = args.widths or ([16, 32] if args.quick else [16, 32, 64, 128, 256])
    steps = args.steps or (5 if args.quick else 20)
    E, P = args.networks, args.P

    print(f"## Langevin ensemble: batched vs loop — digits 0/1, P = {P} train + {P} test, L = {L}, ReLU, "
          f"T = 0.01, σ² = σ0² = 1, dt = 0.01, E = {E} networks, {steps} steps, float32\n")
    print(f"{describe(device)}; median of repeats after a warm-up\n")
    print("| width N | GFLOP / step | draws / step | batched (s) | loop (s) | batched ms/step | loop ms/step "
          "| batched GFLOP/s | speed-up |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    met = {}
    for width in widths:
        gflop, draws = step_cost(P, E, width)
        cheap = gflop * steps < (200 if device.type == "cuda" else 20)  # a few seconds or less
        t_b, t_l = bench(P, E, steps, width, device, 5 if cheap else 3, 3 if cheap else 1)
        met[width] = t_l / t_b
        print(f"| {width} | {gflop:.2f} | {draws / 1e6:.2f} M | {t_b:.2f} | {t_l:.2f} | {1e3 * t_b / steps:.1f} "
              f"| {1e3 * t_l / steps:.1f} | {gflop * steps / t_b:.0f} | {t_l / t_b:.1f}× |", flush=True)
    ok = [w for w, s in met.items() if s >= TARGET]
    miss = [w for w, s in met.items() if s < TARGET]
    print(f"\ntarget speed-up ≥ {TARGET:g}×: met at widths {ok or 'none'}; not met at widths {miss or 'none'}.")
    if miss and device.type == "cpu":
        print("Where it is not met, the batched run is bound by the floating-point work and the Gaussian draws of "
              "columns 2-3, which the loop performs too and batching cannot reduce; see the module docstring.")


if __name__ == "__main__":
    main()

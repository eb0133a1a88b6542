"""Benchmark: analytic NTK (kernels.fc) against one float32 matrix product ``x @ x.T`` of the same inputs.

The target of issue 3: NTK and NNGP of a network with 2 hidden ReLU layers, d = 784, n = 4000, float32,
``x2=None``, 2 threads, in at most 1.5 times the time of one float32 ``x @ x.T`` (the Gram matrix every
kernel needs). Both are timed in the same run (median of repeats after a warm-up), so the ratio is robust to
the machine's speed. Run from the repository root::

    python benchmarks/kernels.py            # n = 1000, 2000, 4000
    python benchmarks/kernels.py --quick    # n = 500, 1000, fewer repeats

Prints a markdown table. At the end, if benchmarks/empirical.py exists, its ``main(quick)`` runs too.
"""
from __future__ import annotations

import argparse
import importlib.util
import pathlib

import torch
from _timing import median_time

from ntkcore import kernels

D = 784
DEPTH = 2
TARGET = 1.5



def inputs(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g, dtype=torch.float32)
    return x / x.norm(dim=1, keepdim=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and fewer repeats (a smoke test)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes, repeats = ((500, 1000), 3) if args.quick else ((1000, 2000, 4000), 7)

    print(f"kernels.fc: depth={DEPTH} ReLU, d={D}, float32, x2=None, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, median of {repeats}\n")
    print("| n | x @ x.T (s) | kernels.fc NNGP+NTK (s) | ratio |")
    print("|---:|---:|---:|---:|")
    ratio = float("nan")
    for n in sizes:
        x = inputs(n)
        t_mm = median_time(lambda: x @ x.T, repeats)
        t_fc = median_time(lambda: kernels.fc(x, depth=DEPTH, activation="relu"), repeats)
        ratio = t_fc / t_mm
        print(f"| {n} | {t_mm:.4f} | {t_fc:.4f} | {ratio:.2f} |")
    if not args.quick:
        print(f"\ntarget at n={sizes[-1]}: ratio <= {TARGET}: {'met' if ratio <= TARGET else 'NOT met'}")

    # ---- hook: the empirical-NTK benchmark (benchmarks/empirical.py, another module's) runs here if present ----
    empirical = pathlib.Path(__file__).with_name("empirical.py")
    if empirical.exists():
        spec = importlib.util.spec_from_file_location("benchmarks_empirical", empirical)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print()
        module.main(quick=args.quick)


if __name__ == "__main__":
    main()

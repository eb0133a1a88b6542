"""Time the empirical NTK methods of ``ntkcore.empirical.ntk`` against the torch.func baseline, in one run.

Network: ``ntkcore.models.MLP`` 784-512-512-512-10 (three hidden ReLU layers, NTK parameterization, float32, CPU with
two threads); 16 inputs, the full ``(16, 16, 10, 10)`` NTK. The baseline is the textbook torch.func recipe written out
here: per-example Jacobians by ``vmap(jacrev(f))``, then an einsum over parameters. Every method is checked against
the baseline before it is timed. Prints a markdown table (median of repeats after one warm-up call).

Traced (``--part traced``): the mean over outputs of the diagonal blocks (``trace_outputs=True``, Chapter 11's probe
kernels) of the same network, for the layerwise (512 inputs) and Jacobian (64 inputs) methods, each against the same
method's full ``(O, O)`` blocks traced afterwards (what ``trace_outputs=True`` computed before the methods summed the
diagonal blocks themselves).

Scale (``--part scale``): memory and time of ``empirical.ntk`` on a network that is not a plain ``nn.Sequential``
(:class:`ResidualMLP` 64-1024-1024-1 with a skip connection, 1,117,185 parameters, float64), so that the default
method is ``"jacobian"``, over ``n`` inputs (the symmetric ``(n, n)`` NTK). Each call runs in a fresh process; peak
memory is the peak resident set of the call (Linux ``VmHWM``, reset before it), besides what the process held
before. Reported: this ntkcore with its default memory bound (or those of ``--max-memory``) at ``--sizes``; with ``--baseline DIR`` (a checkout
of an older ntkcore, e.g. a git worktree) the same calls there at ``--baseline-sizes``, whose peaks, linear in ``n``,
are extrapolated to the largest of ``--sizes``; and the reuse of blocks: ``--reuse N B`` computes the NTK of N
inputs in blocks of B here with a bound that keeps every block's Jacobian (each prepared once) and, with
``--baseline``, there (blocks recomputed for every row block); ``block preparations`` counts the model's forward
passes (one per vmapped block).

    python benchmarks/empirical.py [--quick]
    python benchmarks/empirical.py --part traced                           # trace_outputs=True
    python benchmarks/empirical.py --part scale                            # n = 2000, default bound
    python benchmarks/empirical.py --part scale --sizes 400 --baseline ../old --baseline-sizes 100 200 300 \
        --reuse 200 25
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
from _timing import median_time
from torch import nn
from torch.func import functional_call, jacrev, vmap

from ntkcore import empirical, models


def baseline_ntk(model: torch.nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Reference: ``Θ_ijab = Σ_p J_iap J_jbp`` with Jacobians from ``vmap(jacrev)``; shape ``(n1, n2, O, O)``."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}

    def f_single(p, x):
        return functional_call(model, p, (x.unsqueeze(0),)).squeeze(0)

    jac = vmap(jacrev(f_single), in_dims=(None, 0))
    j1, j2 = jac(params, x1), jac(params, x2)
    return sum(torch.einsum("iap,jbp->ijab", j1[k].flatten(2), j2[k].flatten(2)) for k in params)



def main(quick: bool = False, threads: int = 2) -> None:
    """Build the network, check every method against the baseline, time them and print the table.

    ``threads``: torch CPU threads (2 by default, the book's reference laptop).
    """
    torch.set_num_threads(threads)
    model = models.MLP(784, 512, 3, 10, activation="relu", seed=0, dtype=torch.float32)
    x = torch.randn(16, 784, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    repeats_fast, repeats_slow = (5, 2) if quick else (50, 5)

    with torch.no_grad():
        reference = baseline_ntk(model, x, x)
    scale = reference.abs().max().item()
    rows = [("baseline: vmap(jacrev) + einsum", median_time(lambda: baseline_ntk(model, x, x), repeats_slow))]
    for method in ("layerwise", "jacobian", "vjp-jvp"):
        result = empirical.ntk(model, x, method=method)
        error = (result - reference).abs().max().item() / scale
        if error > 1e-4:
            raise AssertionError(f"method={method!r} differs from the baseline by {error:.2e} (relative)")
        repeats = repeats_fast if method == "layerwise" else repeats_slow
        rows.append((f"ntkcore {method}", median_time(lambda m=method: empirical.ntk(model, x, method=m), repeats)))
    default = median_time(lambda: empirical.ntk(model, x), repeats_fast)
    rows.insert(1, ("ntkcore default (auto)", default))

    base = rows[0][1]
    print(f"Empirical NTK, MLP 784-512-512-512-10 (NTK param., ReLU, float32), 16 x 16 inputs, 10 x 10 outputs; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of repeats after warm-up\n")
    print("| method | time (ms) | speed-up vs baseline |")
    print("|---|---:|---:|")
    for name, t in rows:
        print(f"| {name} | {1e3 * t:.2f} | {base / t:.1f}x |")
    print(f"\nDefault method: {base / default:.0f}x faster than the baseline (target ≥ 100x).")


def traced(quick: bool = False, threads: int = 2) -> None:
    """Time ``trace_outputs=True`` against the full blocks traced afterwards, per method, and print the table."""
    torch.set_num_threads(threads)
    model = models.MLP(784, 512, 3, 10, activation="relu", seed=0, dtype=torch.float32)
    repeats = 2 if quick else 5
    print(f"Traced empirical NTK, MLP 784-512-512-512-10 (float32), 10 outputs; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| method | inputs | full blocks, then traced (ms) | trace_outputs=True (ms) | speed-up |")
    print("|---|---:|---:|---:|---:|")
    for method, n in (("layerwise", 512), ("jacobian", 64)):   # Jacobians: O·P numbers per input
        x = torch.randn(n, 784, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
        def full(m=method):
            return empirical.ntk(model, x, method=m).diagonal(dim1=2, dim2=3).mean(-1)

        def fused(m=method):
            return empirical.ntk(model, x, method=m, trace_outputs=True)

        error = ((fused() - full()).abs().max() / full().abs().max()).item()
        if error > 1e-4:  # float32 sums over ~10^6 parameters in another order
            raise AssertionError(f"method={method!r}: traced differs from the full blocks by {error:.2e}")
        t_full, t_fused = median_time(full, repeats), median_time(fused, repeats)
        print(f"| {method} | {n} | {1e3 * t_full:.0f} | {1e3 * t_fused:.0f} | {t_full / t_fused:.1f}x |")


class ResidualMLP(nn.Module):
    """``x ↦ out(z + tanh(mid(z)))`` with ``z = tanh(inp(x))``: a skip connection, so not a chain of layers."""

    def __init__(self, d: int = 64, width: int = 1024, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.inp, self.mid, self.out = nn.Linear(d, width), nn.Linear(width, width), nn.Linear(width, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) / max(1, p.shape[-1]) ** 0.5)
        self.double()

    def forward(self, x):
        z = torch.tanh(self.inp(x))
        return self.out(z + torch.tanh(self.mid(z)))


def _status(field: str) -> int:
    """A memory field of /proc/self/status, in bytes."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))


def one_call(n: int, batch_size: int | None, max_memory: int | None, threads: int) -> None:
    """``empirical.ntk(ResidualMLP(), x)`` for n inputs in this (fresh) process; prints a JSON line. Runs with an
    ntkcore without ``max_memory`` too (then it is not passed)."""
    torch.set_num_threads(threads)
    model = ResidualMLP()
    x = torch.randn(n, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    kwargs = dict(batch_size=batch_size)
    if max_memory is not None and "max_memory" in inspect.signature(empirical.ntk).parameters:
        kwargs["max_memory"] = max_memory
    empirical.ntk(model, x[:2], **kwargs)  # warm-up: code pages, thread pools
    forwards = []
    model.register_forward_hook(lambda *args: forwards.append(1))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set (VmHWM)
    start_rss, start = _status("VmRSS"), time.perf_counter()
    k = empirical.ntk(model, x, **kwargs)
    seconds = time.perf_counter() - start
    print(json.dumps(dict(n=n, seconds=seconds, peak_mb=(_status("VmHWM") - start_rss) / 2**20,
                          result_mb=k.numel() * k.element_size() / 2**20, preparations=len(forwards),
                          params=sum(p.numel() for p in model.parameters()), ntkcore=empirical.__file__,
                          checksum=float(k.double().sum()))))


def _call(n, batch_size=None, max_memory=None, ntkcore=None, threads=2) -> dict:
    env = dict(os.environ)
    if ntkcore is not None:
        env["PYTHONPATH"] = os.path.abspath(ntkcore) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, __file__, "--one-call", str(n), str(batch_size or 0), str(max_memory or 0), str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def _row(what, r, bound) -> str:
    return (f"| {what} | {r['n']} | {bound} | {r['preparations']} | {r['seconds']:.1f} | {r['peak_mb']:.0f} "
            f"| {r['result_mb']:.0f} |")


def scale(args) -> None:
    """The scale table (module docstring)."""
    print(f"## empirical.ntk at scale: ResidualMLP 64-1024-1024-1 (1,117,185 parameters, float64, method "
          f"'jacobian'), symmetric (n, n) NTK, {args.threads} threads, a fresh process per call\n")
    print("| ntkcore | n | memory bound | block preparations | wall (s) | peak memory of the call (MB) "
          "| of which the result (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        for mib in args.max_memory or [None]:
            bound = f"{mib} MiB" if mib else f"default ({empirical.DEFAULT_MAX_MEMORY >> 20} MiB)"
            print(_row("this", _call(n, None, mib and mib << 20, threads=args.threads), bound), flush=True)
    if args.baseline:
        base = [_call(n, ntkcore=args.baseline, threads=args.threads) for n in args.baseline_sizes]
        for r in base:
            print(_row("baseline", r, "none"), flush=True)
        if len(base) > 1:
            slope, intercept = np.polyfit([r["n"] for r in base], [r["peak_mb"] for r in base], 1)
            n = max(args.sizes)
            print(f"| baseline, extrapolated (linear fit of its peaks) | {n} | none | | | "
                  f"{slope * n + intercept:.0f} | |")
    if args.reuse:
        n, b = args.reuse
        reuse = _call(n, b, 2**40, threads=args.threads)
        print(_row(f"this, blocks of {b}, every block kept", reuse, "2^40 B (one pass)"), flush=True)
        if args.baseline:
            again = _call(n, b, ntkcore=args.baseline, threads=args.threads)
            print(_row(f"baseline, blocks of {b}, recomputed", again, "none"), flush=True)
            if abs(again["checksum"] - reuse["checksum"]) > 1e-9 * abs(reuse["checksum"]):
                raise AssertionError(f"the two kernels differ: checksums {reuse['checksum']}, {again['checksum']}")
            print(f"\nreuse: {again['seconds'] / reuse['seconds']:.1f}x faster than recomputation "
                  f"({again['preparations']} vs {reuse['preparations']} block preparations)")
    print()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--part", choices=("speed", "traced", "scale"), default="speed", help="what to run")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000], help="scale: numbers of inputs")
    parser.add_argument("--max-memory", type=int, nargs="+", metavar="MiB",
                        help="scale: bounds for this ntkcore (default: its default)")
    parser.add_argument("--baseline", help="scale: a checkout of another ntkcore to compare with")
    parser.add_argument("--baseline-sizes", type=int, nargs="+", default=[100, 200, 300],
                        help="scale: numbers of inputs for the baseline (its memory is not bounded)")
    parser.add_argument("--reuse", type=int, nargs=2, metavar=("N", "B"),
                        help="scale: block reuse, N inputs in blocks of B")
    parser.add_argument("--one-call", type=int, nargs=4, help=argparse.SUPPRESS)  # n batch max_memory threads
    args = parser.parse_args()
    if args.one_call:
        n, b, mem, threads = args.one_call
        one_call(n, b or None, mem or None, threads)
    elif args.part == "scale":
        torch.set_num_threads(args.threads)
        scale(args)
    elif args.part == "traced":
        traced(quick=args.quick, threads=args.threads)
    else:
        main(quick=args.quick, threads=args.threads)

"""Time the empirical NTK methods of ``ntkcore.empirical.ntk`` against the torch.func baseline, in one run.

Network: ``ntkcore.models.MLP`` 784-512-512-512-10 (three hidden ReLU layers, NTK parameterization, float32, CPU with
two threads); 16 inputs, the full ``(16, 16, 10, 10)`` NTK. The baseline is the textbook torch.func recipe written out
here: per-example Jacobians by ``vmap(jacrev(f))``, then an einsum over parameters. Every method is checked against
the baseline before it is timed. Prints a markdown table (median of repeats after one warm-up call).

    python benchmarks/empirical.py [--quick]
"""
from __future__ import annotations

import argparse

import torch
from _timing import median_time
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args()
    main(quick=args.quick, threads=args.threads)

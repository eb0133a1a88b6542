"""Benchmark of ntkcore.layers (issue 12): the CNTK with global average pooling, against a straightforward
implementation and neural-tangents, in one run.

Network: ``kernels.cntk_network(3)``: three 3×3 convolutions ("same" padding, ReLU, σw² = 2), global average pooling
and a dense readout; the full symmetric NTK of n random images (n = 100 and 400; 8×8×1 and 32×32×3; float64
and float32), 2 threads.

* **ntkcore**: ``net.kernel(x)``: tiles of image pairs within a memory bound, the patch sum as a box filter along the
  diagonal of pairs of positions (slice additions), threads over tiles.
* **straightforward**: the same recursion written out pair by pair (:func:`straightforward_cntk`): the covariance
  over all pairs of positions of one pair of images, the 3×3 patch as a loop over its nine shifts of a zero-padded
  copy, the ReLU step in closed form; no tiling over pairs, no threads.
* **neural-tangents 0.6.5** (``stax.serial(Conv, Relu, ...)``, NHWC), when a Python with it is given by
  ``--nt-python`` or the environment variable ``NT_PYTHON`` (an environment built as in
  tests/data/make_nt_layers_reference.py); it runs in a subprocess on the same images, timed as a plain call and as
  a ``jax.jit`` call after compilation (compilation not counted), and its kernel is compared with ours.

Where a full matrix would take minutes (the straightforward code everywhere but the smallest case, ntkcore at 32×32),
the time is measured on a block of rows of the matrix and extrapolated to all ``n(n+1)/2`` pairs, counting the pass
over every image alone (the variances both codes compute first) as one pair per image; the table marks those times
with "~". Every measurement runs in a fresh process, which reports its time and its peak
resident memory above what it held before the call (resource.getrusage). Each result is checked against ntkcore's.

    python benchmarks/layers.py                 # every case of the issue (about 10 minutes on 2 cores)
    python benchmarks/layers.py --quick         # n = 100, 8×8 only
    NT_PYTHON=/tmp/ntvenv/bin/python python benchmarks/layers.py --quick
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import pathlib
import queue as queue_module
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

DEPTH = 3
WEIGHT_VAR = 2.0
EXTRAPOLATE_AFTER_S = 60.0  # estimated seconds beyond which a full matrix is replaced by a block of rows
NT_SCRIPT = pathlib.Path(__file__).with_name("_nt_cntk.py")


def images(n: int, size: int, channels: int, dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(n * 1000 + size)
    return torch.randn(n, channels, size, size, generator=g, dtype=torch.float64).to(dtype)


# ---------------------------------------------------------------------------------------------------------------
# The straightforward implementation
# ---------------------------------------------------------------------------------------------------------------

def _patch_mean(s: torch.Tensor) -> torch.Tensor:
    """σw² · mean over the 3×3 patch along the diagonal of pairs of positions: nine shifted slices of a padded copy."""
    h, w = s.shape[:2]
    p = F.pad(s, (1, 1, 1, 1, 1, 1, 1, 1))
    out = torch.zeros_like(s)
    for a in range(3):
        for b in range(3):
            out += p[a:a + h, b:b + w, a:a + h, b:b + w]
    return out * (WEIGHT_VAR / 9)


def _relu(s, v1, v2):
    """E[relu(u)relu(v)] and E[relu′(u)relu′(v)] in closed form."""
    s1, s2 = v1.sqrt()[:, :, None, None], v2.sqrt()[None, None, :, :]
    c = (s / (s1 * s2)).clamp(-1, 1)
    theta = torch.arccos(c)
    return s1 * s2 * (torch.sin(theta) + (math.pi - theta) * c) / (2 * math.pi), (math.pi - theta) / (2 * math.pi)


def _variances(x: torch.Tensor):
    """Σ(x, x)[p, p] entering every ReLU, for one image ``(C, H, W)``."""
    c, h, w = x.shape
    s = _patch_mean(torch.einsum("chw,cij->hwij", x, x) / c)
    out = []
    for layer in range(DEPTH):
        v = s.reshape(h * w, h * w).diagonal().reshape(h, w)
        out.append(v)
        s = _relu(s, v, v)[0]
        if layer < DEPTH - 1:
            s = _patch_mean(s)
    return out


def straightforward_cntk(x: torch.Tensor, rows=None) -> torch.Tensor:
    """NTK of the CNTK-GAP network, entry by entry (rows ``rows`` of the symmetric matrix; all by default)."""
    n, c, h, w = x.shape
    variances = [_variances(xi) for xi in x]
    rows = range(n) if rows is None else rows
    out = torch.full((n, n), float("nan"), dtype=x.dtype)
    for i in rows:
        for j in range(i, n):
            s = _patch_mean(torch.einsum("chw,cij->hwij", x[i], x[j]) / c)
            t = s.clone()
            for layer in range(DEPTH):
                e, d = _relu(s, variances[i][layer], variances[j][layer])
                t, s = t * d, e
                if layer < DEPTH - 1:
                    s = _patch_mean(s)
                    t = _patch_mean(t) + s
            out[i, j] = out[j, i] = WEIGHT_VAR * (t.mean() + s.mean())
    return out


# ---------------------------------------------------------------------------------------------------------------
# One measurement per process
# ---------------------------------------------------------------------------------------------------------------

def _pairs_in_rows(n: int, rows: int) -> int:
    return sum(n - i for i in range(rows))


def _measure(what: str, n: int, size: int, channels: int, dtype_name: str, rows: int | None, queue) -> None:
    torch.set_num_threads(2)
    from ntkcore import kernels

    dtype = getattr(torch, dtype_name)
    x = images(n, size, channels, dtype)
    net = kernels.cntk_network(DEPTH, weight_var=WEIGHT_VAR)
    net.kernel(x[:4])  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if what == "ntkcore":
        k = net.kernel(x, get="ntk").ntk if rows is None else net.kernel(x[:rows], x, get="ntk").ntk
    else:
        k = straightforward_cntk(x, None if rows is None else range(rows))[: rows or n]
    seconds = time.perf_counter() - start
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # kB on Linux
    queue.put((seconds, peak, k.double().numpy()))


def measure(what, n, size, channels, dtype_name, rows=None):
    """``(seconds for the full matrix, measured or extrapolated; extrapolated?; peak MB; matrix or its rows)``."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(what, n, size, channels, dtype_name, rows, queue))
    proc.start()
    while True:
        try:
            seconds, peak, k = queue.get(timeout=5)
            break
        except queue_module.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"the {what} measurement died (exit code {proc.exitcode}; out of memory?)") \
                    from None
    proc.join()
    if rows is not None:  # both codes first pass over every image once (its variances), about one pair's work
        seconds *= (n * (n + 1) / 2 + n) / (_pairs_in_rows(n, rows) + n + rows)
    return seconds, rows is not None, peak, k


def neural_tangents(python: str, x: torch.Tensor):
    """Time neural-tangents on ``x`` in a subprocess with ``python``; returns (seconds of a plain call, seconds of a
    ``jax.jit`` call after its compilation, NTK) or None."""
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "x.npy"
        np.save(path, x.permute(0, 2, 3, 1).numpy())
        cmd = [python, str(NT_SCRIPT), str(path), str(DEPTH), str(WEIGHT_VAR)]
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
               "TF_CPP_MIN_LOG_LEVEL": "3"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(f"neural-tangents failed: {proc.stderr.strip().splitlines()[-1:]}")
            return None
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        return result["plain"], result["jit"], np.load(pathlib.Path(tmp) / "ntk.npy")


def _rows_for(seconds_per_pair: float, n: int, full: bool) -> int | None:
    if full or seconds_per_pair * n * (n + 1) / 2 < EXTRAPOLATE_AFTER_S:
        return None
    rows = 1
    while rows < n and seconds_per_pair * _pairs_in_rows(n, rows + 1) < EXTRAPOLATE_AFTER_S / 4:
        rows += 1
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 100 and 8×8 only")
    parser.add_argument("--full", action="store_true", help="compute every matrix in full (hours at 32×32)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32], help="image sizes (default 8 32)")
    parser.add_argument("--nt-python", default=os.environ.get("NT_PYTHON"),
                        help="a Python with neural-tangents 0.6.5 (default: $NT_PYTHON)")
    args = parser.parse_args(argv)
    cases = [(100, 8, 1)] if args.quick else [(n, size, 1 if size == 8 else 3) for size in args.sizes
                                              for n in (100, 400)]
    dtypes = ["float64", "float32"]
    print(f"CNTK-GAP, {DEPTH} conv layers (3×3, same, ReLU, σw² = {WEIGHT_VAR}), symmetric NTK, "
          f"torch {torch.__version__}, 2 threads\n")
    print("| n | image | dtype | ntkcore (s) | peak MB | straightforward (s) | ratio | neural-tangents, plain / jit "
          "(s) | ratios |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    per_pair = {}  # rough seconds per pair, to decide where to extrapolate
    for n, size, channels in cases:
        for dtype_name in dtypes:
            key = (size, dtype_name)
            guess = per_pair.get(key, {"ntkcore": 2e-4 if size == 8 else 0.03, "straightforward": 2e-3 if size == 8
                                       else 0.1})
            ours = measure("ntkcore", n, size, channels, dtype_name, _rows_for(guess["ntkcore"], n, args.full))
            plain = measure("straightforward", n, size, channels, dtype_name,
                            _rows_for(guess["straightforward"], n, args.full))
            per_pair[key] = {"ntkcore": ours[0] / (n * (n + 1) / 2), "straightforward": plain[0] / (n * (n + 1) / 2)}
            rows = min(ours[3].shape[0], plain[3].shape[0])
            scale = np.abs(plain[3][:rows]).max()
            agree = np.nanmax(np.abs(ours[3][:rows] - plain[3][:rows])) / scale
            # the straightforward diagonal goes through arccos(1 − ε): it resolves angles to ~√eps only
            assert agree < (1e-7 if dtype_name == "float64" else 1e-4), agree
            nt_cell = "—", "—"
            if args.nt_python and n == 100 and size == 8:
                got = neural_tangents(args.nt_python, images(n, size, channels, getattr(torch, dtype_name)))
                if got is not None:
                    nt_k = got[2]
                    diff = np.abs(nt_k[: ours[3].shape[0]] - ours[3]).max() / np.abs(nt_k).max()
                    assert diff < (1e-7 if dtype_name == "float64" else 1e-3), diff
                    nt_cell = f"{got[0]:.1f} / {got[1]:.2f}", f"{got[0] / ours[0]:.0f}× / {got[1] / ours[0]:.1f}×"
            mark = lambda r: "~" if r[1] else ""  # noqa: E731
            print(f"| {n} | {size}×{size}×{channels} | {dtype_name} | {mark(ours)}{ours[0]:.2f} | {ours[2]:.0f} | "
                  f"{mark(plain)}{plain[0]:.1f} | {plain[0] / ours[0]:.1f}× | {nt_cell[0]} | {nt_cell[1]} |")
    print("\n~ : measured on a block of rows and extrapolated to the full matrix. Ratios: other / ntkcore.")


if __name__ == "__main__":
    main()

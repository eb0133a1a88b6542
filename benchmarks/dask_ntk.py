"""Benchmark: the fully connected NTK on Dask (ntkcore.distributed) against the in-memory path, in the same run.

The target of issue 21: the NTK of a fully connected network (2 hidden ReLU layers, d = 784, float32) at
n = 20,000 and 50,000, computed

* in memory (``kernels.fc_network(2).kernel``), with 1 and with 2 torch threads, each in a fresh process;
* on a ``distributed.LocalCluster`` of 1 and of 2 worker processes with one thread each, every block multiplied by a
  vector in the task that computes it and dropped (``--store none``: the product ``K 1`` of
  :class:`ntkcore.distributed.KernelOperator`, the cost of the kernel and a matrix-vector product) or written to a
  ``.npy`` file (``--store npy``, :meth:`ntkcore.distributed.KernelOperator.to_npy`).

Printed: time per 10⁶ entries of the ``n × n`` matrix, the peak resident memory of each process (the in-memory
process; each worker, sampled every 2 ms) and its growth during the computation, the scaling ratio from 1 to 2
workers (goal ≥ 1.7 on 2 cores) and the per-entry cost of 2 workers against 2 threads in memory (goal ≤ 1.3).
Only ratios of the same run mean anything on a shared machine. Run from the repository root::

    python benchmarks/dask_ntk.py                  # n = 20000 and 50000 (about half an hour on 2 cores)
    python benchmarks/dask_ntk.py --n 10000        # other sizes
    python benchmarks/dask_ntk.py --quick          # n = 3000 in blocks of 1000, a smoke test of a minute
    python benchmarks/dask_ntk.py --device cuda    # in memory and the workers on the GPU (NTKCORE_DEVICE)

An in-memory run whose matrix would not fit in the machine's memory is left out (the table says so).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

D, DEPTH = 784, 2
GOAL_SCALING, GOAL_OVERHEAD = 1.7, 1.3


def inputs(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ------------------------------------------------------------------------------------------------ in memory
def _in_memory(n: int, threads: int, device: str) -> tuple[float, int]:
    """Seconds and peak resident bytes of the in-memory NTK, in this (fresh) process."""
    import torch

    from ntkcore import kernels

    torch.set_num_threads(threads)
    x = torch.from_numpy(inputs(n)).to(device)
    net = kernels.fc_network(DEPTH)
    net.kernel(x[:256], get="ntk")  # warm-up
    start = time.perf_counter()
    k = net.kernel(x, get="ntk").ntk
    if k.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def in_memory(n: int, threads: int, device: str) -> tuple[float, int]:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(_in_memory, n, threads, device).result()


# ------------------------------------------------------------------------------------------------ on Dask
def _warm_up():
    import torch

    from ntkcore import kernels

    kernels.fc_network(DEPTH).kernel(torch.ones(4, 3), get="ntk")


def on_dask(n: int, workers: int, chunk: int, store: str, folder: Path, device: str) -> tuple[float, list, int]:
    """Seconds, ``(peak, growth)`` of each worker's resident memory, and the stated bound per worker."""
    from distributed import Client, LocalCluster

    from ntkcore import distributed as nd
    from ntkcore import kernels

    env = {"NTKCORE_DEVICE": device}
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", env=env) as cluster, Client(cluster) as client:
        client.wait_for_workers(workers)
        client.run(_warm_up)
        np.save(folder / "x.npy", inputs(n))  # the workers read their blocks of inputs from the file
        op = nd.KernelOperator(kernels.fc_network(DEPTH), str(folder / "x.npy"), chunk=chunk)
        with nd.sampled_memory(client) as sampled:
            start = time.perf_counter()
            if store == "npy":
                op.to_npy(folder / f"k{n}.npy")
            else:
                op @ np.ones(n)
            seconds = time.perf_counter() - start
        memory = list(sampled.values())
    return seconds, memory, op.worker_memory(threads=1)


# ------------------------------------------------------------------------------------------------ the table
def fits(n: int) -> bool:
    from ntkcore.device import memory_bytes

    total = memory_bytes("cpu")
    return total is None or 1.5 * n * n * 4 < total


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[20_000, 50_000], help="numbers of examples")
    parser.add_argument("--quick", action="store_true", help="n = 3000 in blocks of 1000 (a smoke test)")
    parser.add_argument("--chunk", type=int, default=2048, help="examples per block (default 2048)")
    parser.add_argument("--store", choices=("none", "npy"), default="none",
                        help="multiply each block by a vector where it is computed (none) or write the matrix (npy)")
    parser.add_argument("--dir", type=Path, default=None, help="folder for --store npy (default: a temporary one)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda: in memory, and NTKCORE_DEVICE of the workers")
    args = parser.parse_args(argv)
    sizes, chunk = ([3000], 1000) if args.quick else (args.n, args.chunk)
    mib = 2**20
    print(f"fully connected NTK: depth={DEPTH} ReLU, d={D}, float32, x2=None, chunk={chunk}, device={args.device}, "
          f"store={args.store}, {os.cpu_count()} CPUs\n")
    print("| n | path | workers / threads | time (s) | s per 10⁶ entries | peak memory per process (MiB) "
          "| growth (MiB) | bound per worker (MiB) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or Path(tmp)
        for n in sizes:
            per = 1e6 / (n * n)
            times = {}
            for threads in (1, 2):
                if not fits(n):
                    print(f"| {n} | in memory | {threads} | - | - | does not fit ({n * n * 4 / 2**30:.1f} GiB) | | |")
                    continue
                seconds, peak = in_memory(n, threads, args.device)
                times[("memory", threads)] = seconds
                print(f"| {n} | in memory | {threads} | {seconds:.1f} | {seconds * per:.4f} | {peak / mib:.0f} | | |")
            for workers in (1, 2):
                seconds, memory, bound = on_dask(n, workers, chunk, args.store, folder, args.device)
                times[("dask", workers)] = seconds
                peaks = " / ".join(f"{p / mib:.0f}" for p, _ in memory)
                growth = " / ".join(f"{g / mib:.0f}" for _, g in memory)
                print(f"| {n} | Dask | {workers} | {seconds:.1f} | {seconds * per:.4f} | {peaks} | {growth} | "
                      f"{bound / mib:.0f} |")
            scaling = times[("dask", 1)] / times[("dask", 2)]
            line = f"\nn={n}: scaling from 1 to 2 workers {scaling:.2f} (goal >= {GOAL_SCALING})"
            if ("memory", 2) in times:
                overhead = times[("dask", 2)] / times[("memory", 2)]
                line += f"; 2 workers / in memory with 2 threads {overhead:.2f} (goal <= {GOAL_OVERHEAD})"
            if ("memory", 1) in times:
                line += f"; 1 worker / in memory with 1 thread {times[('dask', 1)] / times[('memory', 1)]:.2f}"
            print(line + "\n")


if __name__ == "__main__":
    main()

"""Benchmark: the fully connected NTK on Dask (ntkcore.distributed) against the in-memory path, in the same run.

The target of issue 21: the NTK of a fully connected network (2 hidden ReLU layers, d = 784, float32) at
n = 20,000 and 50,000, computed

* in memory (``kernels.fc_network(2).kernel``), with 1 and with 2 torch threads, each in a fresh process;
* on a ``distributed.LocalCluster`` of 1 and of 2 worker processes with one thread each, every block multiplied by a
  vector in the task that computes it and dropped (``--store none``: the product ``K 1`` of
  :class:`ntkcore.distributed.KernelOperator`, the cost of the kernel and a matrix-vector product) or written to a
  ``.npy`` file (``--store npy``, :meth:`ntkcore.distributed.KernelOperator.to_npy`).

Each worker is warmed up first (its imports and torch's first call), as the in-memory process is. The four
configurations run in turn, ``--repeat`` rounds (default 3), and each reports its best time: a slow spell of a
shared machine then slows one round of every configuration rather than one configuration.

Printed: time per 10⁶ entries of the ``n × n`` matrix, the peak resident memory of each process (the in-memory
process; each worker, by ``ntkcore.distributed.peak_memory``) and its growth during the computation, the scaling
ratio from 1 to 2 workers (goal ≥ 1.7 on 2 cores) and the per-entry cost of 2 workers against 2 threads in memory
(goal ≤ 1.3).
Only ratios of the same run mean anything on a shared machine. Run from the repository root::

    python benchmarks/dask_ntk.py                  # n = 20000 and 50000 (about 10 minutes on 2 cores)
    python benchmarks/dask_ntk.py --n 10000        # other sizes
    python benchmarks/dask_ntk.py --quick          # n = 3000 in blocks of 1000, a smoke test of a minute
    python benchmarks/dask_ntk.py --no-trim        # workers that keep freed memory for reuse (see --help)
    python benchmarks/dask_ntk.py --device cuda    # in memory and the workers on the GPU (NTKCORE_DEVICE)

An in-memory run whose matrix would not fit in the machine's memory is left out (the table says so).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import math
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
    """What a worker imports and initializes once, outside the timed computation: torch's first kernel call, and
    dask.array (a third of a second), which a worker imports on its first task that reads a block of an array."""
    import dask.array  # noqa: F401
    import torch

    from ntkcore import distributed, kernels  # noqa: F401

    kernels.fc_network(DEPTH).kernel(torch.ones(4, 3), get="ntk")


def on_dask(n: int, workers: int, chunk: int, store: str, folder: Path, device: str,
            trim: bool = True) -> tuple[float, list, int]:
    """Seconds, ``(peak, growth)`` of each worker's resident memory, and the stated bound per worker. ``trim``: the
    workers return freed memory to the system at once (Dask's default on Linux, ``MALLOC_TRIM_THRESHOLD_``)."""
    import dask
    from distributed import Client, LocalCluster

    from ntkcore import distributed as nd
    from ntkcore import kernels

    options = dict(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                   dashboard_address="127.0.0.1:0", env={"NTKCORE_DEVICE": device})
    unset = {} if trim else {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
    with dask.config.set(unset), LocalCluster(**options) as cluster, Client(cluster) as client:
        client.wait_for_workers(workers)
        client.run(_warm_up)
        np.save(folder / "x.npy", inputs(n))  # the workers read their blocks of inputs from the file
        op = nd.KernelOperator(kernels.fc_network(DEPTH), str(folder / "x.npy"), chunk=chunk)
        with nd.peak_memory(client) as peaks:
            start = time.perf_counter()
            if store == "npy":
                op.to_npy(folder / f"k{n}.npy")
            else:
                op @ np.ones(n)
            seconds = time.perf_counter() - start
        memory = list(peaks.values())
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
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of runs of every configuration; each reports its best time (default 3)")
    parser.add_argument("--no-trim", action="store_true",
                        help="start the workers without MALLOC_TRIM_THRESHOLD_ (Dask sets it on Linux): the allocator "
                             "then reuses freed memory instead of returning it to the system at once")
    parser.add_argument("--device", default="cpu", help="cpu or cuda: in memory, and NTKCORE_DEVICE of the workers")
    args = parser.parse_args(argv)
    sizes, chunk = ([3000], 1000) if args.quick else (args.n, args.chunk)
    print(f"fully connected NTK: depth={DEPTH} ReLU, d={D}, float32, x2=None, chunk={chunk}, device={args.device}, "
          f"store={args.store}, {os.cpu_count()} CPUs, best of {args.repeat} runs"
          f"{', workers without MALLOC_TRIM_THRESHOLD_' if args.no_trim else ''}\n")
    print("| n | path | workers / threads | time (s) | s per 10⁶ entries | peak memory per process (MiB) "
          "| growth (MiB) | bound on the growth per worker (MiB) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            results = measure(n, chunk, args, args.dir or Path(tmp))
            print_rows(n, results)
            print_ratios(n, results)


CONFIGURATIONS = (("memory", 1), ("memory", 2), ("dask", 1), ("dask", 2))


def measure(n: int, chunk: int, args, folder: Path) -> dict:
    """``{(path, workers or threads): (best seconds, [(peak, growth) per process], bound)}``. The configurations
    run in turn, ``args.repeat`` rounds of them, and each keeps its best time and its largest memory: a slow spell
    of a shared machine then touches every configuration, not one."""
    results = {}
    for _ in range(args.repeat):
        for path, count in CONFIGURATIONS:
            if path == "memory":
                if not fits(n):
                    continue
                seconds, peak = in_memory(n, count, args.device)
                memory, bound = [(peak, None)], None
            else:
                seconds, memory, bound = on_dask(n, count, chunk, args.store, folder, args.device, not args.no_trim)
            best, worst, _ = results.get((path, count), (math.inf, memory, bound))
            worst = [tuple(None if a is None else max(a, b) for a, b in zip(m, w)) for m, w in zip(memory, worst)]
            results[(path, count)] = (min(best, seconds), worst, bound)
    return results


def print_rows(n: int, results: dict) -> None:
    per, mib = 1e6 / (n * n), 2**20
    for path, count in CONFIGURATIONS:
        if (path, count) not in results:
            print(f"| {n} | in memory | {count} | - | - | does not fit ({n * n * 4 / 2**30:.1f} GiB) | | |")
            continue
        seconds, memory, bound = results[(path, count)]
        peaks = " / ".join(f"{p / mib:.0f}" for p, _ in memory)
        growth = " / ".join("" if g is None else f"{g / mib:.0f}" for _, g in memory)
        label = "in memory" if path == "memory" else "Dask"
        print(f"| {n} | {label} | {count} | {seconds:.1f} | {seconds * per:.4f} | {peaks} | {growth} | "
              f"{'' if bound is None else f'{bound / mib:.0f}'} |")


def print_ratios(n: int, results: dict) -> None:
    times = {key: value[0] for key, value in results.items()}
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

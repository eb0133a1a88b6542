"""Generate tests/data/nt_reference.npz: NNGP and NTK values from neural-tangents, the reference for kernels.fc.

neural-tangents 0.6.5 (its last release) does not import with current JAX, so this script runs in its own
virtual environment, outside the project's::

    python3 -m venv /tmp/ntvenv
    /tmp/ntvenv/bin/pip install "jax[cpu]==0.4.30" "jaxlib==0.4.30" neural-tangents==0.6.5
    /tmp/ntvenv/bin/python tests/data/make_nt_reference.py

The stored file was produced with Python 3.11, jax 0.4.30, jaxlib 0.4.30, neural-tangents 0.6.5, numpy 2.4,
in float64 (``jax_enable_x64``). The network is that of book appendix "Closed-form kernels and conventions", section
"Fully connected networks":
``stax.serial(*[Dense(1, W_std=σw, b_std=σb), φ] * depth, Dense(1, W_std=σw, b_std=σb))``.

Each case is stored under ``"{activation}_d{depth}_w{weight_var}_b{bias_var}_{nngp|ntk}_{same|cross}"``:
``same`` is kernel_fn(x1, None), ``cross`` is kernel_fn(x1, x2); the inputs are stored as ``x1`` and ``x2``.
"""
from __future__ import annotations

import pathlib

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from neural_tangents import stax  # noqa: E402

ACTIVATIONS = {"relu": stax.Relu, "erf": stax.Erf}
CASES = [(act, depth, wv, bv) for act in ACTIVATIONS for depth in range(4)
         for wv, bv in ((2.0, 0.0), (1.5, 0.1), (1.0, 0.5))]


def inputs():
    """Deterministic, non-random inputs: varied norms and angles, a repeated row, an antiparallel pair."""
    i = np.arange(1, 8)[:, None]
    j = np.arange(1, 6)[None, :]
    x1 = np.sin(1.3 * i * j + 0.2 * i) + 0.1 * j
    x1[3] = x1[1]            # the same point twice (angle exactly 0 off the diagonal of the symmetric call)
    x1[4] = -0.5 * x1[0]     # antiparallel pair (angle π)
    x2 = np.cos(0.7 * i[:4] * j - 0.3) * (1 + 0.5 * i[:4])
    return x1, x2


def main():
    x1, x2 = inputs()
    out = {"x1": x1, "x2": x2}
    for act, depth, wv, bv in CASES:
        layers = []
        for _ in range(depth):
            layers += [stax.Dense(1, W_std=wv**0.5, b_std=bv**0.5), ACTIVATIONS[act]()]
        layers.append(stax.Dense(1, W_std=wv**0.5, b_std=bv**0.5))
        kernel_fn = stax.serial(*layers)[2]
        for tag, k in (("same", kernel_fn(x1, None, ("nngp", "ntk"))), ("cross", kernel_fn(x1, x2, ("nngp", "ntk")))):
            out[f"{act}_d{depth}_w{wv}_b{bv}_nngp_{tag}"] = np.asarray(k.nngp)
            out[f"{act}_d{depth}_w{wv}_b{bv}_ntk_{tag}"] = np.asarray(k.ntk)
    path = pathlib.Path(__file__).with_name("nt_reference.npz")
    np.savez_compressed(path, **out)
    print(f"wrote {len(out)} arrays to {path}")


if __name__ == "__main__":
    main()

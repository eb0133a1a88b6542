"""neural-tangents side of benchmarks/layers.py; runs under a Python with neural-tangents 0.6.5 (see there).

    python _nt_cntk.py IMAGES.npy DEPTH WEIGHT_VAR

Loads NHWC images, times the symmetric NTK of the CNTK-GAP network (best of a plain call and a ``jax.jit`` call
after its compilation), saves it next to the images as ``ntk.npy`` and prints ``{"seconds": ...}``.
"""
import json
import pathlib
import sys
import time

import jax
import numpy as np

path, depth, weight_var = pathlib.Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
x = np.load(path)
jax.config.update("jax_enable_x64", x.dtype == np.float64)

from neural_tangents import stax  # noqa: E402

layers = []
for _ in range(depth):
    layers += [stax.Conv(1, (3, 3), padding="SAME", W_std=weight_var ** 0.5), stax.Relu()]
kernel_fn = stax.serial(*layers, stax.GlobalAvgPool(), stax.Dense(1, W_std=weight_var ** 0.5))[2]

start = time.perf_counter()
ntk = np.asarray(kernel_fn(x, None, "ntk"))
plain = time.perf_counter() - start

jitted = jax.jit(kernel_fn, static_argnames="get")
np.asarray(jitted(x, None, get="ntk"))  # compilation
start = time.perf_counter()
np.asarray(jitted(x, None, get="ntk"))
compiled = time.perf_counter() - start

np.save(path.with_name("ntk.npy"), ntk)
print(json.dumps({"seconds": min(plain, compiled), "plain": plain, "jit": compiled}))

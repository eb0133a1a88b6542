"""Composable layers: every layer carries its infinite-width kernel transform and its finite-width module.

The PyTorch counterpart of neural-tangents' ``stax``. A network is written once, as a specification, and gives both
the analytic kernels of its infinite-width limit and the finite networks whose empirical kernels converge to them::

    >>> import torch
    >>> from ntkcore import layers
    >>> net = layers.serial(layers.Conv(64, 3, weight_var=2.0), layers.Relu(),
    ...                     layers.GlobalAvgPool(), layers.Dense(1, weight_var=2.0))
    >>> x = torch.randn(5, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> k = net.kernel(x)                       # Kernels(nngp, ntk), each (5, 5)
    >>> cnn = net.module((1, 8, 8), seed=0)     # a torch.nn.Module with 64 channels
    >>> k.ntk.shape, cnn(x).shape
    (torch.Size([5, 5]), torch.Size([5, 1]))

Conventions (stated once; book appendix "Closed-form kernels and conventions")
-----------------------------------------------------------------------------
* **NTK parameterization, variances.** A Dense or Conv layer with fan-in ``F`` computes
  ``σw/√F · W h + σb b`` with all entries of ``W`` and ``b`` standard normal; ``weight_var = σw²`` and
  ``bias_var = σb²``. The kernels equal neural-tangents' ``stax`` for the same layers with ``W_std² = weight_var``
  and ``b_std² = bias_var``.
* **Kernels of features** are channel means: the NNGP of the inputs is ``x·x′/C`` (per pair of positions or
  nodes). A Dense layer maps ``(K, Θ)`` to ``(σw² K + σb², σw² Θ + σw² K + σb²)``; an activation maps them to
  ``(E[φ(u)φ(v)], Θ · E[φ′(u)φ′(v)])`` for ``(u, v)`` Gaussian with covariance ``K``.
* **Layouts.** Vectors are ``(n, d)``; images are ``(n, C, H, W)`` as in torch (neural-tangents uses NHWC);
  graphs are node features ``(n, N, C)`` with an ``adjacency`` ``(n, N, N)`` (``A[u, v]``: the edge from v into u,
  self-loops where the caller puts them), or lists of ``(N_i, C)`` and ``(N_i, N_i)`` arrays for graphs of
  different sizes.
* **Trainable layers.** ``trainable=False`` on a Dense or Conv drops its own gradient term from the NTK (Arora et
  al. 2020's fixed layers); the NNGP is unchanged.
* **Derivatives.** The kernels are differentiable with respect to the inputs and to the variances: inputs that
  require gradients, or a ``weight_var``/``bias_var`` given as a 0-d tensor that requires them, make the kernel
  computation run out of place so that autograd follows it (for input gradients, or to fit the variances); without
  them it runs in place, on preallocated buffers.
* **Gaussian inputs.** A nonlinear activation must act on Gaussian features (the output of a Dense or Conv, or of
  linear layers after one); :class:`FanInSum` adds the kernels of uncorrelated branches only. Networks that break
  either rule raise a ValueError instead of returning a wrong kernel.

Layers
------
Dense, Conv, AvgPool, GlobalAvgPool, GlobalSumPool, Flatten, Aggregate; activations Relu, Erf, Identity and
Elementwise(fn); combinators :func:`serial`, :func:`parallel`, :class:`FanOut`, :class:`FanInSum`.
"""
from ._base import FanInSum, FanOut, GraphNetwork, Layer, Network, Parallel, Serial, parallel, serial
from ._state import Kernels
from .conv import Conv, ScaledConv2d
from .dense import Dense, Elementwise, Erf, Identity, Relu, ScaledLinear
from .graph import Aggregate
from .pooling import AvgPool, Flatten, GlobalAvgPool, GlobalSumPool

__all__ = [
    "Kernels", "Layer", "Serial", "Parallel", "serial", "parallel", "FanOut", "FanInSum", "Network", "GraphNetwork",
    "Dense", "Conv", "AvgPool", "GlobalAvgPool", "GlobalSumPool", "Flatten", "Aggregate",
    "Relu", "Erf", "Identity", "Elementwise", "ScaledLinear", "ScaledConv2d",
]

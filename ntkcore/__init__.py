"""ntkcore: neural tangent kernels, NNGP kernels and the Neural Dynamical Kernel in PyTorch.

The library behind the executable NTK textbook. Every computation a chapter shows comes from here.
Modules (imported lazily, so ``import ntkcore`` stays fast):

    device     choose the device and dtype once (argument or the NTKCORE_DEVICE environment variable)
    data       offline datasets, opt-in loaders with a cache, label noise
    activations  the one registry of activations: φ, φ′, modules, Gaussian expectations (closed forms, quadrature)
    layers     composable layers (dense, convolution, pooling, graph aggregation, activations, serial/parallel), each
               with its infinite-width kernel transform and its finite-width module
    kernels    analytic kernels built on layers: fully connected, CNTK, GNTK; the lecture's two-layer kernels
    empirical  finite-width NTK and NNGP of any torch model
    models     networks in the parameterizations the book uses
    predict    kernel (ridge) regression, gradient-flow predictions over time, NNGP posterior
    bounds     generalization bounds of kernel regression (RKHS norm, Rademacher complexity)
    train      gradient-descent training loops (plain, RDI, AUX; MSE and cross-entropy)
    langevin   Langevin dynamics of ensembles of finite networks (batched), for Part II
    ndk        two-time kernels, the Neural Dynamical Kernel, the mean-predictor solver
    early_stopping  optimal stopping time and its gain over equilibrium, from a loss curve
    drift      representational drift: the stationary two-time kernel, the mean kernel, the drift predictor
    finite_depth  the NTK of deep ReLU networks at finite width: exact mean, chi-square sampler, ensembles, the
               first-order change after one gradient step, the block structure of a kernel over classes
    stats      power-law fits, standard errors (of ratios of means too) and correlations that chapters assert on
    plot       one figure style for the whole book
    benchmark  comparing classifiers over many data sets: Friedman rank, P90/P95, PMA (Arora et al., 2020)
    selection  choosing hyper-parameters on a validation split and testing on fixed folds (Arora et al., 2020):
               precomputed-kernel SVMs, trained networks, any classifier
    motion     how far the tangent kernel moves in training (kernel distance and velocity), barriers between
               networks, parent-child spawning (Fort et al., 2020)
    distributed  kernel matrices and kernel regression on Dask, beyond one machine (the extra "distributed")
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "device", "data", "activations", "layers", "kernels", "empirical", "models", "predict", "bounds", "train",
    "langevin", "ndk", "drift", "early_stopping", "finite_depth", "stats", "plot", "benchmark", "selection",
    "motion", "distributed",
)
__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'ntkcore' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)

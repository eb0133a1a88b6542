"""Analytic NNGP and NTK kernels of the book's networks, all built on :mod:`ntkcore.layers`.

* :func:`fc`: fully connected networks (Part I), ``depth`` hidden layers in the NTK parameterization, the same as
  neural-tangents' ``stax.serial(Dense(1, W_std=σw, b_std=σb), φ, ..., Dense(1, W_std=σw, b_std=σb))``::

      K¹(x,x′) = σw² x·x′/d + σb²,   Θ¹ = K¹
      K^{l+1}  = σw² E[φ(u)φ(v)] + σb²,   K̇^{l+1} = σw² E[φ′(u)φ′(v)],   Θ^{l+1} = K^{l+1} + K̇^{l+1} Θ^l

  with ``(u, v) ~ N(0, [[K^l(x,x), K^l(x,x′)], [K^l(x,x′), K^l(x′,x′)]])``; NNGP = K^{L+1} and NTK = Θ^{L+1}
  (book appendix "Closed-form kernels and conventions", section "Fully connected networks").
  With the first ``fix`` dense layers not trained (Arora et al. 2020, "Harnessing the power of infinitely wide deep
  nets on small-data tasks"), their gradient terms are dropped: ``Θ¹ = [fix = 0] K¹`` and
  ``Θ^{l+1} = [l ≥ fix] K^{l+1} + K̇^{l+1} Θ^l``; ``fix = L`` trains the readout alone and gives NTK = NNGP.
* :func:`cntk`: the convolutional NTK of Arora et al. 2019, vanilla (flatten) or with global average pooling.
* :func:`gntk`: the graph NTK of Du et al. 2019, blocks of aggregation and dense layers, read out by a sum over
  nodes, optionally with jumping knowledge.
* :func:`two_layer_limit` (H*) and :func:`two_layer_empirical` (H(0) of one draw): the lecture's two-layer network
  (book Chapter 2; Du et al. 2019).

Each comes with the network it is the kernel of (:func:`fc_network`, :func:`cntk_network`, :func:`gntk_network`), a
:class:`ntkcore.layers.Serial` whose ``.module(...)`` builds the finite network. How the papers' constants relate to
ours is stated in each function and checked in the tests.

>>> import torch
>>> from ntkcore import kernels
>>> x = torch.eye(3, dtype=torch.float64)
>>> k = kernels.fc(x, depth=1)
>>> k.nngp.shape, k.ntk.shape
(torch.Size([3, 3]), torch.Size([3, 3]))
"""
from __future__ import annotations

import torch

from . import activations, layers
from ._checks import as_tensor, check_depth, check_int, check_real, finite_result, inputs
from .activations import MAX_QUADRATURE_DEGREE, gaussian_expectations
from .layers import Kernels
from .layers._execute import DEFAULT_MAX_MEMORY

__all__ = [
    "Kernels", "ACTIVATIONS", "fc", "fc_network", "cntk", "cntk_network", "gntk", "gntk_network",
    "gaussian_expectations", "two_layer_limit", "two_layer_empirical", "MAX_QUADRATURE_DEGREE",
]

ACTIVATIONS = activations.CLOSED_FORM_NAMES
"""Activation names with closed-form Gaussian expectations (:mod:`ntkcore.activations`); ``"tanh"`` and any
elementwise torch callable work too, by quadrature."""


def _activation(activation, quadrature_degree, max_memory=DEFAULT_MAX_MEMORY):
    return activations.get(activation).with_quadrature(quadrature_degree, max_memory)


# ---------------------------------------------------------------------------------------------------------------
# Fully connected networks
# ---------------------------------------------------------------------------------------------------------------

def _trainable_layers(depth: int, fix, trainable_layers) -> set[int]:
    """The indices of the trained dense layers of :func:`fc_network`: ``fix..depth``, or ``trainable_layers``."""
    fix = check_int(fix, "fix", low=0, high=depth)
    if trainable_layers is None:
        return set(range(fix, depth + 1))
    if fix:
        raise ValueError(f"give fix or trainable_layers, not both; got fix={fix} and trainable_layers")
    return {check_int(i, "trainable_layers entries", low=0, high=depth) for i in trainable_layers}


def fc_network(depth: int, *, activation="relu", weight_var: float = 2.0, bias_var: float = 0.0, width: int = 1,
               out_features: int = 1, fix: int = 0, trainable_layers=None) -> layers.Serial:
    """The fully connected network of :func:`fc`: ``depth`` pairs ``Dense(width), φ`` and a ``Dense(out_features)``
    readout, every dense layer with ``weight_var``, ``bias_var``. ``fix`` in ``0..depth``: the first ``fix`` dense
    layers are not trained (``Dense(..., trainable=False)``; Arora et al. 2020's fixed layers). Alternatively
    ``trainable_layers`` (None: all but the first ``fix``) is the set of indices ``0..depth`` of the dense layers whose
    gradient counts in the NTK (0 is the first layer, ``depth`` the readout). ``depth`` is at most
    :data:`ntkcore._checks.MAX_DEPTH` (1000)."""
    depth = check_depth(depth, "depth", low=0)
    act = activations.get(activation)
    trainable = _trainable_layers(depth, fix, trainable_layers)

    def dense(index, features):
        return layers.Dense(features, weight_var=weight_var, bias_var=bias_var, trainable=index in trainable)

    hidden = [layer for index in range(depth) for layer in (dense(index, width), layers.Elementwise(act))]
    return layers.serial(*hidden, dense(depth, out_features))


def fc(x1, x2=None, *, depth: int, activation="relu", weight_var: float = 2.0, bias_var: float = 0.0, fix: int = 0,
       get=("nngp", "ntk"), block_size: int | None = None, max_memory: int = DEFAULT_MAX_MEMORY,
       quadrature_degree: int = 32) -> Kernels:
    """NNGP and NTK of a fully connected network with ``depth`` hidden layers (module docstring; the kernels of
    :func:`fc_network`).

    Parameters
    ----------
    x1, x2 : arrays ``(n1, d)`` and ``(n2, d)``, numpy or torch. ``x2=None`` means ``x2 = x1``; the symmetry is
        then used (only entries on and above the diagonal are computed) and the angle on the diagonal is exactly
        0. Outputs follow ``x1``'s device and dtype (numpy input gives float64 on the default device).
    depth : number ``0 ≤ L ≤ 1000`` of hidden layers (:data:`ntkcore._checks.MAX_DEPTH`); ``depth=0`` is the
        linear model, NNGP = NTK = K¹.
    activation : ``"relu"``, ``"erf"``, ``"identity"`` (closed forms), ``"tanh"`` or any elementwise torch callable
        (Gaussian expectations by :func:`gaussian_expectations`, φ′ by autograd; slower: about
        ``6 quadrature_degree²`` evaluations of φ per entry and layer); see :mod:`ntkcore.activations`.
    weight_var, bias_var : σw² and σb² (≥ 0), the same in every layer.
    fix : number ``0 ≤ fix ≤ depth`` of leading dense layers that are not trained (Arora et al. 2020): their
        gradient terms are dropped from the NTK (module docstring). ``fix = 0`` (default) is the NTK of the fully
        trained network, ``fix = depth`` (only the readout trained) gives NTK = NNGP. The NNGP does not depend on it.
    get : ``"nngp"``, ``"ntk"`` or both (default); fields not asked for are None (saves one n1 × n2 output).
    block_size : rows of x1 per panel. A panel's ``K¹`` is one matrix product; the layers then run on tiles of
        ``block_size × 512`` entries (on CUDA, on the whole panel). By default 256 rows on the CPU (tiles stay in
        cache), the whole input on CUDA, fewer rows where a panel and its tile buffers would exceed
        ``max_memory``. On the CPU, panels are shared among ``torch.get_num_threads()`` Python threads while
        torch's own intra-op threads are set to 1 for the duration of the call (one synchronization per call
        instead of one per elementwise operation; other threads using torch meanwhile run single-threaded).
    max_memory : bound in bytes on intermediates (panel buffers, quadrature chunks). The outputs themselves
        (``n1 n2`` entries each) come on top of it.
    quadrature_degree : nodes per dimension of the quadrature for activations without a closed form, in
        ``2..352`` (:data:`MAX_QUADRATURE_DEGREE`).

    Returns
    -------
    Kernels(nngp, ntk), each ``(n1, n2)``.
    """
    x1, x2 = inputs(x1, x2)
    max_memory = check_int(max_memory, "max_memory", low=1)
    act = _activation(activation, quadrature_degree, max_memory)
    net = fc_network(depth, activation=act, weight_var=weight_var, bias_var=bias_var, fix=fix)
    return net.kernel(x1, x2, get=get, block_size=block_size, max_memory=max_memory)


# ---------------------------------------------------------------------------------------------------------------
# Convolutional and graph NTKs
# ---------------------------------------------------------------------------------------------------------------

def cntk_network(depth: int, *, gap: bool = True, kernel_size=3, weight_var: float = 2.0, bias_var: float = 0.0,
                 fix: bool = False, channels: int = 1, out_features: int = 1) -> layers.Serial:
    """The CNN of Arora et al. 2019 (their Section 4): ``depth`` convolutions with ``channels`` channels, "same"
    padding and ReLU, then global average pooling (``gap``) or flattening, and a Dense readout with ``out_features``
    outputs (one per class for a classifier; the kernels are those of each output, the same for all); every weight
    layer with ``weight_var`` (their ``c_σ = 2``), ``bias_var``. ``fix`` freezes the first convolution and the
    readout (their ``fix`` variant). Their depth counts the readout: theirs is ``depth + 1``. ``1 ≤ depth ≤ 1000``."""
    depth = check_depth(depth, "depth", low=1)
    if not isinstance(gap, bool) or not isinstance(fix, bool):
        raise ValueError(f"gap and fix must be True or False, got gap={gap!r}, fix={fix!r}")
    convs = [layer for index in range(depth) for layer in (
        layers.Conv(channels, kernel_size, padding="same", weight_var=weight_var, bias_var=bias_var,
                    trainable=not (fix and index == 0)), layers.Relu())]
    pool = layers.GlobalAvgPool() if gap else layers.Flatten()
    return layers.serial(*convs, pool, layers.Dense(out_features, weight_var=weight_var, bias_var=bias_var,
                                                    trainable=not fix))


def cntk(x1, x2=None, *, depth: int, gap: bool = True, kernel_size=3, weight_var: float = 2.0,
         bias_var: float = 0.0, fix: bool = False, get=("nngp", "ntk"), max_memory: int = DEFAULT_MAX_MEMORY) -> Kernels:
    """The convolutional NTK (CNTK) of Arora et al. 2019 for images ``(n, C, H, W)``: the kernels of
    :func:`cntk_network`. Vanilla (``gap=False``) reads the output off pairs of equal positions; with global average
    pooling (``gap=True``) it averages over all pairs of positions, at ``(H W)²`` numbers per pair of images.

    Relation to the authors' code (their CuPy ``CNTK.py``), for ``weight_var = 2``, ``bias_var = 0`` and 3×3 filters:
    their value is ours times ``C/2`` with GAP and ``C·H·W/2`` without (their first layer sums the channels of the
    raw input without dividing by ``C·9``, their last ReLU step carries the ``2/9`` that our readout Dense applies as
    ``weight_var = 2`` after averaging, and their vanilla readout sums the diagonal where Flatten averages it). With
    ``fix=True`` it is their ``--fix yes``. ``tests/test_kernels.py`` recomputes their recursion in numpy.
    """
    return cntk_network(depth, gap=gap, kernel_size=kernel_size, weight_var=weight_var, bias_var=bias_var,
                        fix=fix).kernel(x1, x2, get=get, max_memory=max_memory)


def gntk_network(n_blocks: int, n_mlp_layers: int, *, normalize=None, jumping_knowledge: bool = False,
                 weight_var: float = 2.0, bias_var: float = 0.0, width: int = 1) -> layers.Serial:
    """The GNN of Du et al. 2019: ``n_blocks`` BLOCKs, each an ``Aggregate(normalize)`` and ``n_mlp_layers`` pairs
    ``Dense(width), Relu``; READOUT a sum over nodes and a Dense readout. With ``jumping_knowledge`` the output is
    the sum of such a readout of the input features and of every block's output (their "jumping knowledge"
    concatenation, each part read out by its own Dense). ``n_blocks`` and ``n_mlp_layers`` are in ``1..1000``."""
    n_blocks = check_depth(n_blocks, "n_blocks", low=1)
    n_mlp_layers = check_depth(n_mlp_layers, "n_mlp_layers", low=1)
    if not isinstance(jumping_knowledge, bool):
        raise ValueError(f"jumping_knowledge must be True or False, got {jumping_knowledge!r}")

    def dense(features):
        return layers.Dense(features, weight_var=weight_var, bias_var=bias_var)

    def block():
        mlp = [layer for _ in range(n_mlp_layers) for layer in (dense(width), layers.Relu())]
        return layers.serial(layers.Aggregate(normalize=normalize), *mlp)

    def readout():
        return layers.serial(layers.GlobalSumPool(), dense(1))

    if not jumping_knowledge:
        return layers.serial(*[block() for _ in range(n_blocks)], readout())
    tail = layers.serial(block(), readout())
    for _ in range(n_blocks - 1):
        tail = layers.serial(block(), layers.FanOut(2), layers.parallel(readout(), tail), layers.FanInSum())
    return layers.serial(layers.FanOut(2), layers.parallel(readout(), tail), layers.FanInSum())


def gntk(x1, x2=None, *, adjacency, n_blocks: int = 2, n_mlp_layers: int = 2, normalize=None,
         jumping_knowledge: bool = False, weight_var: float = 2.0, bias_var: float = 0.0, get=("nngp", "ntk"),
         max_memory: int = DEFAULT_MAX_MEMORY) -> Kernels:
    """The graph NTK (GNTK) of Du et al. 2019: the kernels of :func:`gntk_network` between graphs.

    ``x1``, ``x2``: node features ``(n, N, C)`` or lists of ``(N_i, C)`` arrays (graphs of different sizes);
    ``adjacency``: for ``x1``, or the pair ``(adjacency1, adjacency2)`` with ``x2`` (see
    :meth:`ntkcore.layers.Serial.kernel`). Du et al. add self-loops, ``A + I``, and ``normalize="degree"`` is their
    ``c_u = 1/(|N(u)| + 1)``. Two pairs of graphs cost two products ``(c A) K (c′ A′)ᵀ`` per block.

    Relation to the authors' code (``gntk.py``), for ``weight_var = 2`` (their ``c_σ = 2``) and ``bias_var = 0``:
    their value is ours times ``C``, the number of node features: their first layer takes the raw inner products of
    the features without dividing by ``C``, and their final ``× 2`` is our readout's ``weight_var = 2``.
    ``tests/test_kernels.py`` recomputes their recursion in numpy.
    """
    net = gntk_network(n_blocks, n_mlp_layers, normalize=normalize, jumping_knowledge=jumping_knowledge,
                       weight_var=weight_var, bias_var=bias_var)
    return net.kernel(x1, x2, get=get, adjacency=adjacency, max_memory=max_memory)


# ---------------------------------------------------------------------------------------------------------------
# The lecture's two-layer network (book Chapter 2)
# ---------------------------------------------------------------------------------------------------------------

def two_layer_limit(x1, x2=None, *, activation="relu", a_second_moment: float = 1 / 3,
                    quadrature_degree: int = 32) -> torch.Tensor:
    """The lecture's limiting Gram matrix ``H*`` (book Chapter 2; Du et al. 2019, their H^∞).

    ``H*_ij = x_iᵀx_j · E_w[σ′(wᵀx_i) σ′(wᵀx_j)] · E[a²]`` with ``w ~ N(0, I_d)``: the NTK of
    ``f(x) = m^(−1/2) Σ_r a_r σ(w_rᵀx)`` with only W trained, as m → ∞: in layers, the NTK of
    ``serial(Dense(m, weight_var=d), φ, Dense(1, weight_var=E[a²], trainable=False))``. Inputs need not have unit
    norm; for ReLU the
    expectation depends only on the angle, ``E[σ′σ′] = (π − θ_ij)/(2π)`` (``= (π − arccos(x_iᵀx_j))/(2π)`` for unit
    vectors). The slides take ``a_r ∈ {±1}`` in H(0) (so ``a_r² = 1``) but ``a_r ~ Unif[−1, 1]`` elsewhere, for
    which ``E[a²] = 1/3`` (the default); pass ``a_second_moment=1`` for ``a_r = ±1``.

    x1 ``(n1, d)``; ``x2`` ``(n2, d)`` or None (= x1, the Gram matrix H*). With ``x2`` given this is the kernel
    row block ``k(x, X)`` used for kernel regression (book Chapter 3). Returns ``(n1, n2)``, on x1's
    device and dtype. ``activation``: as in :func:`fc`.
    """
    x1, x2 = inputs(x1, x2)
    a2 = check_real(a_second_moment, "a_second_moment", low=0.0)
    act = _activation(activation, quadrature_degree)
    net = layers.serial(layers.Dense(1, weight_var=float(x1.shape[1])), layers.Elementwise(act),
                        layers.Dense(1, weight_var=a2, trainable=False))
    return net.kernel(x1, x2, get="ntk").ntk


def two_layer_empirical(x1, x2=None, *, w, a, activation="relu") -> torch.Tensor:
    """The lecture's Gram matrix ``H(0)`` of one width-m draw (book Chapter 2; Du et al. 2019).

    ``H_ij = x_iᵀx_j · (1/m) Σ_r a_r² σ′(w_rᵀx_i) σ′(w_rᵀx_j)`` for ``f(x) = m^(−1/2) Σ_r a_r σ(w_rᵀx)``, the NTK
    with respect to W alone. The factor ``a_r²`` is explicit here; the slides drop it, which is exact for
    ``a_r = ±1`` (with ``a_r ~ Unif[−1, 1]`` its mean is 1/3, see :func:`two_layer_limit`).

    x1 ``(n1, d)``, x2 ``(n2, d)`` or None (= x1); w ``(m, d)`` (rows w_r, width m ≥ 1), a ``(m,)``, on x1's device
    and in its dtype (or numpy). Returns ``(n1, n2)`` on x1's device and dtype. Its expectation over
    ``w_r ~ N(0, I)`` is :func:`two_layer_limit` with ``E[a²]``.
    """
    x1, x2 = inputs(x1, x2)
    xb = x1 if x2 is None else x2
    w = as_tensor(w, "w", ndim=2, like=x1, like_name="x1")
    if w.shape[1] != x1.shape[1] or w.shape[0] == 0:
        raise ValueError(f"w must be (m, d) with m >= 1 hidden units and d = {x1.shape[1]} (the inputs' dimension), "
                         f"got {tuple(w.shape)}")
    a = as_tensor(a, "a", ndim=1, like=x1, like_name="x1")
    if a.shape[0] != w.shape[0]:
        raise ValueError(f"a must have one entry per row of w ({w.shape[0]}), got shape {tuple(a.shape)}")
    act = activations.get(activation)
    d1 = act.derivative(x1 @ w.T)  # (n1, m)
    d2 = d1 if x2 is None else act.derivative(xb @ w.T)
    return finite_result((x1 @ xb.T).mul_((d1 * (a * a)) @ d2.T).div_(w.shape[0]), "NTK", "x1, x2, w or a")

"""Two-dimensional convolution: the layer, its kernel transform (a patch sum along the diagonal of pairs of
positions) and its finite module (book appendix "Closed-form kernels and conventions", section "Convolutions")."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_int, check_variance
from ._base import Layer, _require
from ._entrywise import number
from ._state import IMAGE, Shape
from .dense import init_parameters, scales

PADDINGS = ("same", "valid", "circular")


def pair(value, name: str, low: int = 1) -> tuple[int, int]:
    """An int or a pair of ints, each ≥ ``low``, as a pair."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        return check_int(value[0], f"{name}[0]", low=low), check_int(value[1], f"{name}[1]", low=low)
    v = check_int(value, name, low=low)
    return v, v


def out_size(size: int, kernel: int, stride: int, padding: str) -> tuple[int, int, int]:
    """``(output size, padding before, padding after)`` along one axis (TensorFlow's SAME rule: the output has
    ``⌈size/stride⌉`` positions and the extra padding goes after; VALID: no padding)."""
    if padding == "valid":
        return (size - kernel) // stride + 1, 0, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def pad_axis(t: torch.Tensor, axis: int, before: int, after: int, circular: bool, pool) -> torch.Tensor:
    """Zero or circular padding of one axis (a tensor from ``pool``)."""
    if not before and not after:
        return t
    shape = list(t.shape)
    shape[axis] += before + after
    out = pool.take(shape, t)
    out.narrow(axis, before, t.shape[axis]).copy_(t)
    head, tail = out.narrow(axis, 0, before), out.narrow(axis, before + t.shape[axis], after)
    if circular:
        head.copy_(t.narrow(axis, t.shape[axis] - before, before))
        tail.copy_(t.narrow(axis, 0, after))
    else:
        head.zero_()
        tail.zero_()
    return out


def shifted_sum(t: torch.Tensor, axes: tuple[int, ...], window: int, stride: int, out: int, pool,
                scale: float = 1.0) -> torch.Tensor:
    """``scale · Σ_{a < window} t[..., a + stride·i, ...]`` with the same shift ``a`` on every axis in ``axes``,
    for ``i < out``: a box filter along one axis, or along the diagonal of a pair of axes. ``window`` passes over
    memory, each a strided slice; the result is a contiguous tensor from ``pool``."""
    span = (out - 1) * stride + 1

    def shifted(a):
        index = [slice(None)] * t.dim()
        for axis in axes:
            index[axis] = slice(a, a + span, stride)
        return t[tuple(index)]

    first = shifted(0)
    total = torch.mul(first, scale, out=pool.out(first.shape, t))
    for a in range(1, window):
        total.add_(shifted(a), alpha=scale)
    return total


def same_sum(t: torch.Tensor, axes: tuple[int, ...], window: int, before: int, pool,
             scale: float = 1.0) -> torch.Tensor:
    """``scale · Σ_{a < window} t[..., i + a − before, ...]`` (zero outside) with the same shift on every axis in
    ``axes``, for every position ``i``: the stride-1 "same" box filter without a padded copy, one slice addition
    per shift. The result is a tensor from ``pool``."""
    total = torch.mul(t, scale, out=pool.out(t.shape, t))
    size = t.shape[axes[0]]
    for shift in range(-before, window - before):
        if shift == 0 or abs(shift) >= size:
            continue
        dst, src = [slice(None)] * t.dim(), [slice(None)] * t.dim()
        for axis in axes:
            dst[axis] = slice(max(0, -shift), size - max(0, shift))
            src[axis] = slice(max(0, shift), size - max(0, -shift))
        part = total[tuple(dst)]
        part.add_(t[tuple(src)], alpha=scale)
    return total


class ScaledConv2d(nn.Conv2d):
    """``y = weight_scale · (W ⋆ pad(x)) + bias_scale · b``: a 2-D convolution with fixed multipliers, in the NTK
    parameterization ``weight_scale = σw/√(C k_h k_w)``, ``bias_scale = σb``. ``padding`` is ``"same"``
    (TensorFlow's rule, extra padding after), ``"valid"`` or ``"circular"``. Input ``(n, C, H, W)``."""

    def __init__(self, in_channels, out_channels, kernel_size, *, stride, padding, bias, weight_scale,
                 bias_scale, device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=bias,
                         device=device, dtype=dtype)
        self.padding_mode_name = padding
        self.weight_scale, self.bias_scale = weight_scale, bias_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode_name != "valid":
            pads = []
            for axis in (1, 0):  # F.pad lists the last axis first
                size = x.shape[2 + axis]
                _, before, after = out_size(size, self.kernel_size[axis], self.stride[axis], "same")
                pads += [before, after]
            x = F.pad(x, pads, mode="circular" if self.padding_mode_name == "circular" else "constant")
        y = F.conv2d(x, self.weight, None, self.stride)
        if self.weight_scale != 1.0:
            y = y * self.weight_scale
        if self.bias is not None:
            y = y + (self.bias * self.bias_scale)[:, None, None]
        return y

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, padding={self.padding_mode_name!r}, weight_scale={self.weight_scale:.6g}, "
                f"bias_scale={self.bias_scale:.6g}")


class Conv(Layer):
    """A 2-D convolution on images ``(n, C, H, W)``, ``h′ = σw/√(C k_h k_w) · W ⋆ h + σb b`` with ``W, b ~ N(0, 1)``.

    Kernel (Arora et al. 2019, Eq. 7, in the NTK parameterization of neural-tangents' ``stax.Conv``): for a pair of
    positions ``(p, p′)``, ``K′[p, p′] = σw² · mean_{δ ∈ patch} K[p + δ, p′ + δ] + σb²`` and
    ``Θ′[p, p′] = σw² · mean_δ Θ[p + δ, p′ + δ] + K′[p, p′]`` (zero outside the image with ``"same"`` padding,
    wrapped around with ``"circular"``; the mean always divides by the patch size). The patch sum runs along the
    diagonal of the pair of positions, as a box filter: ``k_h + k_w`` strided passes over the covariance.

    Parameters
    ----------
    out_channels : channels of the finite layer (the kernel does not depend on it).
    kernel_size, stride : an int or a pair ``(h, w)``, each ≥ 1.
    padding : ``"same"`` (output ``⌈H/stride⌉``, TensorFlow's rule), ``"valid"`` (no padding) or ``"circular"``.
    weight_var, bias_var, trainable : as in :class:`~ntkcore.layers.Dense`.
    """

    def __init__(self, out_channels: int, kernel_size, *, stride=1, padding: str = "same", weight_var: float = 1.0,
                 bias_var: float = 0.0, trainable: bool = True):
        self.out_channels = check_int(out_channels, "out_channels", low=1)
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.padding = check_choice(padding, "padding", PADDINGS)
        self.weight_var = check_variance(weight_var, "weight_var")
        self.bias_var = check_variance(bias_var, "bias_var")
        if not isinstance(trainable, bool):
            raise ValueError(f"trainable must be True or False, got {trainable!r}")
        self.trainable = trainable

    def _geometry(self, spatial):
        return [out_size(size, k, s, "valid" if self.padding == "valid" else "same")
                for size, k, s in zip(spatial, self.kernel_size, self.stride)]

    def _out_shape(self, shape: Shape) -> Shape:
        _require(shape.kind == IMAGE, self, shape, "images (n, C, H, W)")
        if any(k > 2 * s + 1 for s, k in zip(shape.spatial, self.kernel_size)):  # such taps see only padding
            raise ValueError(f"{self!r} needs kernel_size at most 2·size + 1 along each axis of the images, "
                             f"(H, W) = {shape.spatial}; got kernel_size={self.kernel_size}")
        if self.padding == "valid" and any(s < k for s, k in zip(shape.spatial, self.kernel_size)):
            raise ValueError(f"{self!r} with padding='valid' needs images of at least {self.kernel_size} "
                             f"positions, got (H, W) = {shape.spatial}")
        spatial = tuple(out for out, _, _ in self._geometry(shape.spatial))
        return Shape(IMAGE, self.out_channels, spatial, gaussian=True, fresh=True)

    def _patch_mean(self, t: torch.Tensor, full: bool, scale: float, pool) -> torch.Tensor:
        """``scale`` times the mean over the patch of ``t``, whose last dims are ``(H, W)`` (diagonal) or
        ``(H, W, H, W)`` (full). Intermediates come from and go back to ``pool``; ``t`` itself is left alone."""
        spatial = t.shape[-2:]
        circular = self.padding == "circular"
        scale = scale / (self.kernel_size[0] * self.kernel_size[1])
        source = t
        for axis, (out, before, after) in enumerate(self._geometry(spatial)):
            axes = (t.dim() - 4 + axis, t.dim() - 2 + axis) if full else (t.dim() - 2 + axis,)
            factor = scale if axis == 0 else 1.0
            if self.padding == "same" and self.stride[axis] == 1:  # zero padding: slice additions
                result = same_sum(t, axes, self.kernel_size[axis], before, pool, factor)
            else:
                padded = t
                for a in axes:
                    padded, previous = pad_axis(padded, a, before, after, circular, pool), padded
                    if previous is not t:
                        pool.give(previous)
                result = shifted_sum(padded, axes, self.kernel_size[axis], self.stride[axis], out, pool, factor)
                if padded is not t:
                    pool.give(padded)
            if t is not source:
                pool.give(t)
            t = result
        return t

    def _scaled_patch_mean(self, t: torch.Tensor, full: bool, pool) -> torch.Tensor:
        """``weight_var`` times the patch mean of ``t``; a variance tensor followed by autograd multiplies the result
        (the in-place sums take numbers only)."""
        if pool.grad and isinstance(self.weight_var, torch.Tensor):
            return self._patch_mean(t, full, 1.0, pool) * self.weight_var
        return self._patch_mean(t, full, number(self.weight_var), pool)

    def _transform(self, p, full_after):
        full = p.layout.full
        nngp = self._scaled_patch_mean(p.nngp, full, p.pool)
        if number(self.bias_var):
            nngp = nngp + self.bias_var if p.pool.grad else nngp.add_(number(self.bias_var))
        ntk = None
        if p.want_ntk:
            ntk = None if p.ntk is None else self._scaled_patch_mean(p.ntk, full, p.pool)
            if self.trainable:
                ntk = p.take(nngp.shape).copy_(nngp) if ntk is None else ntk.add_(nngp)
        p.pool.give(p.nngp, p.ntk)
        return p.replace(nngp=nngp, ntk=ntk)

    def _module(self, shape, gen, device, dtype, parameterization):
        fan_in = shape.channels * self.kernel_size[0] * self.kernel_size[1]
        w_std, b_std, w_scale, b_scale = scales(self.weight_var, self.bias_var, fan_in, parameterization)
        conv = torch.nn.utils.skip_init(ScaledConv2d, shape.channels, self.out_channels, self.kernel_size,
                                        stride=self.stride, padding=self.padding, bias=number(self.bias_var) > 0,
                                        weight_scale=w_scale, bias_scale=b_scale, device=device, dtype=dtype)
        return init_parameters(conv, w_std=w_std, b_std=b_std, gen=gen, trainable=self.trainable)

    def __repr__(self):
        extra = "" if self.trainable else ", trainable=False"
        return (f"Conv({self.out_channels}, {self.kernel_size}, stride={self.stride}, padding={self.padding!r}, "
                f"weight_var={number(self.weight_var):g}, bias_var={number(self.bias_var):g}{extra})")


"""Spatial pyramid pooling: SPPNet's fixed-length pyramid and YOLO's same-size SPP block.

:func:`spatial_pyramid_pool` pools an input of any spatial size into a fixed
number of bins per level and concatenates the levels into one feature vector
(He et al. 2014); :func:`spp_concat` stacks stride-1 max pools of several
window sizes beside the input on the channel axis (YOLO's SPP). Both are
compositions of :mod:`poolkit.ops.adaptive` and :mod:`poolkit.ops.pooling`,
and their gradients are the sums of their parts' pullbacks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from ..autodiff import checked_pullback, defvjp, vjp
from ..errors import PoolingConfigError
from ..geometry import Window, _is_sequence, _scalar, _to_int
from ..reducers import gradient_dtype
from ._common import as_pool_input, check_choice
from .adaptive import adaptive_avg_pool, adaptive_max_pool
from .pooling import avg_pool, max_pool

__all__ = ["spatial_pyramid_pool", "spp_concat"]


def spatial_pyramid_pool(
    x: ArrayLike,
    levels: int | Sequence[int] = (4, 2, 1),
    op: str = "max",
    mode: str = "adaptive",
    *,
    channels_last: bool = False,
    backend: str = "auto",
) -> np.ndarray:
    """Spatial pyramid pooling (SPPNet): a fixed-length vector from an input of any spatial size.

    Level ``n`` pools each channel into ``n`` bins per spatial axis; the
    result concatenates every level, ``(N, C * sum(n**d for n in levels))``
    for ``d`` spatial axes. The flatten order is channel-major whatever the
    layout: level by level in the order given, and within a level, feature
    ``c * n**d + b`` is bin ``b`` (row-major) of channel ``c``, as
    ``y.reshape(N, -1)`` of a channels-first ``(N, C, n, ..., n)`` pool gives.

    Parameters
    ----------
    x : array_like
        ``(N, C, *spatial)``, or ``(N, *spatial, C)`` with ``channels_last``.
    levels : int or sequence of int
        Bins per axis at each level, each ``>= 1``.
    op : {"max", "avg"}
        The pooling of each bin.
    mode : {"adaptive", "sppnet"}
        ``"adaptive"``: bins of :func:`poolkit.adaptive_max_pool` (every input
        size works). ``"sppnet"``: the paper's window ``ceil(a/n)`` and stride
        ``floor(a/n)`` for an axis of size ``a``, as a plain pooling layer; an
        error where that does not give ``n`` windows (``a=7, n=4``: window 2,
        stride 1, 6 windows).
    channels_last, backend
        As in :func:`poolkit.max_pool`.

    Returns
    -------
    numpy.ndarray
        ``(N, C * sum(n**d))``.

    Raises
    ------
    PoolingConfigError
        Levels that are not positive, an unknown ``op`` or ``mode``, or an
        input size that ``mode="sppnet"`` cannot split into ``n`` windows.
    PoolingTypeError
        Levels that are not integers.

    Examples
    --------
    >>> import numpy as np, poolkit as pk
    >>> x = np.arange(16.).reshape(1, 1, 4, 4)
    >>> pk.spatial_pyramid_pool(x, levels=(2, 1))
    array([[ 5.,  7., 13., 15., 15.]])
    >>> pk.spatial_pyramid_pool(np.ones((2, 3, 13, 9)), levels=(4, 2, 1)).shape
    (2, 63)
    """
    return _spp(x, levels, op, mode, channels_last=channels_last, backend=backend, with_pullback=False)


def spp_concat(
    x: ArrayLike,
    kernel_sizes: int | Sequence[int] = (5, 9, 13),
    *,
    channels_last: bool = False,
    backend: str = "auto",
) -> np.ndarray:
    """YOLO-style SPP: ``x`` and its stride-1, same-size max pools, concatenated on the channel axis.

    ``y = concat([x, max_pool(x, k, stride=1, padding=k//2) for k in kernel_sizes], axis=channels)``:
    ``C * (1 + len(kernel_sizes))`` channels of the input's spatial size. Even
    kernel sizes get TF / ONNX SAME padding (one more cell at the end), so
    the size is kept for them too.

    Parameters
    ----------
    x : array_like
        ``(N, C, *spatial)``, or ``(N, *spatial, C)`` with ``channels_last``.
    kernel_sizes : int or sequence of int
        Window sizes of the pools; each applies to every spatial axis.
    channels_last, backend
        As in :func:`poolkit.max_pool`.

    Returns
    -------
    numpy.ndarray
        ``(N, C * (1 + len(kernel_sizes)), *spatial)`` (or channels-last).

    Examples
    --------
    >>> import numpy as np, poolkit as pk
    >>> x = np.array([[[1., 5., 2., 0., 3.]]])
    >>> pk.spp_concat(x, kernel_sizes=(3,))
    array([[[1., 5., 2., 0., 3.],
            [5., 5., 5., 3., 3.]]])
    """
    return _spp_concat(x, kernel_sizes, channels_last=channels_last, backend=backend, with_pullback=False)


def _positive_ints(name: str, values, example: str) -> tuple[int, ...]:
    values = _scalar(values)
    values = tuple(values) if _is_sequence(values) else (values,)
    if not values:
        raise PoolingConfigError(f"{name}=() is empty; give at least one positive int, e.g. {example}")
    checked = tuple(_to_int(name, v) for v in values)
    bad = [v for v in checked if v < 1]
    if bad:
        raise PoolingConfigError(f"{name}={values!r} holds {bad[0]}; every entry must be a positive int")
    return checked


def _sppnet_window(spatial: tuple[int, ...], level: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The paper's window ``ceil(a/n)`` and stride ``floor(a/n)`` per axis, checked to give ``n`` windows."""
    kernel, stride = [], []
    for axis, size in enumerate(spatial):
        window, step = -(-size // level), size // level
        count = Window.build((size,), window, step).out_shape[0] if step else 0
        if count != level:
            raise PoolingConfigError(
                f"mode='sppnet' cannot split spatial axis {axis} of size {size} into {level} bins: window "
                f"ceil({size}/{level})={window} with stride floor({size}/{level})={step} gives {count}; "
                "use mode='adaptive', which fits any size"
            )
        kernel.append(window)
        stride.append(step)
    return tuple(kernel), tuple(stride)


def _spp(x, levels, op, mode, *, channels_last, backend, with_pullback):
    array, layout = as_pool_input(x, None, channels_last, "spatial_pyramid_pool")
    levels = _positive_ints("levels", levels, "(4, 2, 1)")
    check_choice("op", op, ("max", "avg"))
    check_choice("mode", mode, ("adaptive", "sppnet"))
    parts = []
    for level in levels:
        if mode == "adaptive":
            function, args = (adaptive_max_pool if op == "max" else adaptive_avg_pool), (level,)
        else:
            function, args = (max_pool if op == "max" else avg_pool), _sppnet_window(array.shape[2:], level)
        if with_pullback:
            parts.append(vjp(function, array, *args, backend=backend))
        else:
            parts.append((function(array, *args, backend=backend), None))
    n = array.shape[0]
    y = np.concatenate([part.reshape(n, math.prod(part.shape[1:])) for part, _ in parts], axis=1)
    if not with_pullback:
        return y

    def gradient(dy: np.ndarray) -> np.ndarray:
        dx, offset = None, 0
        for part, pullback in parts:
            features = math.prod(part.shape[1:])
            piece = pullback(dy[:, offset : offset + features].reshape(part.shape))
            dx = piece if dx is None else dx + piece
            offset += features
        return layout.to_user(dx)

    return y, checked_pullback("spatial_pyramid_pool", y, gradient)


def _spp_concat(x, kernel_sizes, *, channels_last, backend, with_pullback):
    array, layout = as_pool_input(x, None, channels_last, "spp_concat")
    sizes = _positive_ints("kernel_sizes", kernel_sizes, "(5, 9, 13)")
    pools = []
    for k in sizes:
        padding = k // 2 if k % 2 else "same"
        if with_pullback:
            pools.append(vjp(max_pool, array, k, 1, padding, backend=backend))
        else:
            pools.append((max_pool(array, k, 1, padding, backend=backend), None))
    y = layout.to_user(np.concatenate([array, *(pooled for pooled, _ in pools)], axis=1))
    if not with_pullback:
        return y
    channels = array.shape[1]

    def gradient(dy: np.ndarray) -> np.ndarray:
        dy = layout.to_kernel(dy)
        dx = dy[:, :channels].astype(gradient_dtype(array.dtype))
        for i, (_, pullback) in enumerate(pools, start=1):
            dx = dx + pullback(dy[:, i * channels : (i + 1) * channels])
        return layout.to_user(dx)

    return y, checked_pullback("spp_concat", y, gradient)


def _spp_rule(x, levels=(4, 2, 1), op="max", mode="adaptive", *, channels_last=False, backend="auto"):
    return _spp(x, levels, op, mode, channels_last=channels_last, backend=backend, with_pullback=True)


def _spp_concat_rule(x, kernel_sizes=(5, 9, 13), *, channels_last=False, backend="auto"):
    return _spp_concat(x, kernel_sizes, channels_last=channels_last, backend=backend, with_pullback=True)


defvjp(spatial_pyramid_pool, _spp_rule)
defvjp(spp_concat, _spp_concat_rule)

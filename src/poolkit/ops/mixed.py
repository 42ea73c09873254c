"""Mixed pooling: a learnable blend of max and average pooling.

``mixed_pool`` computes ``alpha * max_pool + (1 - alpha) * avg_pool`` over the
same windows, with ``alpha`` one number or one per channel, and its pullback
returns the gradient of ``alpha`` beside ``dx`` (Lee, Gallagher and Tu 2016's
"mixed" variant with a learned, not a random, weight).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ..autodiff import checked_pullback, defvjp, vjp
from ..errors import PoolingConfigError, PoolingTypeError
from ..geometry import IntOrSeq, Padding
from ._common import as_array, as_pool_input
from .pooling import avg_pool, max_pool

__all__ = ["mixed_pool"]


def mixed_pool(
    x: ArrayLike,
    kernel_size: IntOrSeq,
    stride: IntOrSeq | None = None,
    padding: Padding = 0,
    alpha: float | ArrayLike = 0.5,
    *,
    channels_last: bool = False,
    backend: str = "auto",
) -> np.ndarray:
    """Mixed pooling: ``y = alpha * max_pool(x) + (1 - alpha) * avg_pool(x)`` over the same windows.

    The average counts padding in its divisor (PyTorch's default
    ``count_include_pad=True``). Under :func:`poolkit.vjp` the pullback returns
    ``(dx, dalpha)``, with ``dalpha = sum(dy * (max_pool(x) - avg_pool(x)))``
    over everything (scalar ``alpha``) or over all but the channel axis
    (per-channel ``alpha``).

    Parameters
    ----------
    x : array_like
        ``(N, C, *spatial)``, or ``(N, *spatial, C)`` with ``channels_last``.
        Float inputs keep their dtype; integers give float64.
    kernel_size, stride, padding
        As in :func:`poolkit.max_pool`.
    alpha : float or array_like of shape (C,)
        The weight of the max, in ``[0, 1]``; one per channel if an array.
    channels_last, backend
        As in :func:`poolkit.max_pool`.

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    PoolingConfigError
        ``alpha`` outside ``[0, 1]`` or of the wrong shape.
    PoolingTypeError
        ``alpha`` that is not a real number or array.

    Examples
    --------
    >>> import numpy as np, poolkit as pk
    >>> x = np.array([[[1., 3., 2., 6.]]])
    >>> pk.mixed_pool(x, 2, alpha=0.25)
    array([[[2.25, 4.5 ]]])
    >>> y, pullback = pk.vjp(pk.mixed_pool, x, 2, alpha=0.25)
    >>> dx, dalpha = pullback(np.ones_like(y))
    >>> dx, dalpha
    (array([[[0.375, 0.625, 0.375, 0.625]]]), 3.0)
    """
    return _mixed(x, kernel_size, stride, padding, alpha, channels_last, backend, with_pullback=False)


def _alpha(alpha, channels: int) -> tuple[np.ndarray, bool]:
    """``alpha`` as a float64 array broadcastable to ``(N, C, ...)``, and whether it is per channel."""
    if alpha is None or isinstance(alpha, (bool, np.bool_, str, bytes)):
        raise PoolingTypeError(
            f"alpha={alpha!r} must be a real number or an array of {channels} per-channel weights, "
            f"got {type(alpha).__name__}"
        )
    weights = as_array(alpha, "mixed_pool", "alpha").astype(np.float64)
    if weights.ndim > 1 or (weights.ndim == 1 and weights.shape[0] != channels):
        raise PoolingConfigError(
            f"alpha of shape {weights.shape} does not fit an input of {channels} channels; give one number or an "
            f"array of shape ({channels},)"
        )
    if not np.all((weights >= 0) & (weights <= 1)):
        raise PoolingConfigError(f"alpha={alpha!r} must lie in [0, 1] (the weight of the max against the average)")
    return weights, weights.ndim == 1


def _mixed(x, kernel_size, stride, padding, alpha, channels_last, backend, *, with_pullback):
    array, layout = as_pool_input(x, None, channels_last, "mixed_pool")
    weights, per_channel = _alpha(alpha, array.shape[1])
    weight = weights.reshape((1, -1) + (1,) * (array.ndim - 2)) if per_channel else weights
    args = (array, kernel_size, stride, padding)
    if with_pullback:
        high, max_pullback = vjp(max_pool, *args, backend=backend)
        mean, avg_pullback = vjp(avg_pool, *args, backend=backend)
    else:
        high, mean = max_pool(*args, backend=backend), avg_pool(*args, backend=backend)
    dtype = mean.dtype
    y = layout.to_user((weight * high + (1 - weight) * mean).astype(dtype, copy=False))
    if not with_pullback:
        return y

    def gradient(dy: np.ndarray):
        dy = layout.to_kernel(dy).astype(np.float64)
        dx = max_pullback(weight * dy) + avg_pullback((1 - weight) * dy)
        spread = dy * (high.astype(np.float64) - mean)
        dalpha = spread.sum(axis=tuple(a for a in range(dy.ndim) if a != 1)) if per_channel else float(spread.sum())
        return layout.to_user(dx.astype(dtype, copy=False)), dalpha

    return y, checked_pullback("mixed_pool", y, gradient)


def _mixed_rule(x, kernel_size, stride=None, padding=0, alpha=0.5, *, channels_last=False, backend="auto"):
    return _mixed(x, kernel_size, stride, padding, alpha, channels_last, backend, with_pullback=True)


defvjp(mixed_pool, _mixed_rule)

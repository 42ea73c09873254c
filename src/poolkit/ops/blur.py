"""Blur pooling and anti-aliased max pooling (Zhang 2019, "Making convolutional networks shift-invariant again").

:func:`blur_pool` low-passes each channel with a normalised binomial filter
and subsamples it by the stride; :func:`antialiased_max_pool` is max pooling
at stride 1 followed by a blur pool, the "MaxBlurPool" that keeps max
pooling's choice of features while removing the aliasing of its stride.

The blur is separable: along each spatial axis the input is extended by its
padding rule (reflect, replicate or zeros, as a map from padded positions to
input cells), and each output adds the filter's taps at its stride, ``O(f)``
work per output; the pullback runs the same steps transposed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from math import comb

import numpy as np
from numpy.typing import ArrayLike

from ..autodiff import checked_pullback, defvjp, vjp
from ..errors import PoolingConfigError
from ..geometry import Axis, IntOrSeq, Window, _per_axis, _to_int
from ..reducers import gradient_dtype
from ._common import as_pool_input, check_choice
from .pooling import max_pool

__all__ = ["blur_pool", "antialiased_max_pool"]

PADDING_MODES = ("reflect", "replicate", "zeros")


def blur_pool(
    x: ArrayLike,
    stride: IntOrSeq = 2,
    filter_size: int = 3,
    padding_mode: str = "reflect",
    *,
    channels_last: bool = False,
) -> np.ndarray:
    """Blur pooling: a normalised binomial low-pass filter, then subsampling by ``stride``.

    Along each spatial axis the filter of size ``f`` is row ``f-1`` of Pascal's
    triangle over its sum (``f=3``: ``[1, 2, 1] / 4``); the input is padded by
    ``(f-1)//2`` cells before and ``f//2`` after, and::

        y[o] = sum_j w[j] * x_padded[o*stride + j],   out = floor((L - 1) / stride) + 1

    The N-D filter is the outer product of the 1-D ones (the 2-D filter of
    Zhang's anti-aliased CNNs), applied axis by axis.

    Parameters
    ----------
    x : array_like
        ``(N, C, *spatial)``, or ``(N, *spatial, C)`` with ``channels_last``.
        Float inputs keep their dtype; integers give float64.
    stride : int or sequence of int
        Subsampling step per spatial axis.
    filter_size : int
        Taps of the binomial filter, 1 to 7 (1: plain subsampling).
    padding_mode : {"reflect", "replicate", "zeros"}
        How the border is extended: mirrored without repeating the edge cell
        (the paper's choice), the edge cell repeated, or zeros.
    channels_last : bool
        Input and output are ``(N, *spatial, C)``.

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    PoolingConfigError
        A filter size outside 1-7, a bad stride or padding mode, or
        ``"reflect"`` padding on an axis not longer than the padding.

    Examples
    --------
    An edge is smoothed before it is subsampled:

    >>> import numpy as np, poolkit as pk
    >>> x = np.array([[[0., 0., 0., 4., 4., 4.]]])
    >>> pk.blur_pool(x)
    array([[[0., 1., 4.]]])
    >>> pk.blur_pool(x, padding_mode="zeros", filter_size=1)
    array([[[0., 0., 4.]]])
    """
    return _blur(x, stride, filter_size, padding_mode, channels_last, with_pullback=False)


def antialiased_max_pool(
    x: ArrayLike,
    kernel_size: IntOrSeq = 2,
    stride: IntOrSeq = 2,
    *,
    filter_size: int = 3,
    padding_mode: str = "reflect",
    channels_last: bool = False,
    backend: str = "auto",
) -> np.ndarray:
    """Anti-aliased max pooling (MaxBlurPool): ``blur_pool(max_pool(x, kernel_size, stride=1), stride)``.

    Parameters
    ----------
    x : array_like
        ``(N, C, *spatial)``, or ``(N, *spatial, C)`` with ``channels_last``.
    kernel_size : int or sequence of int
        The max pool's window; it runs at stride 1 without padding.
    stride : int or sequence of int
        The subsampling, done by the blur.
    filter_size, padding_mode
        As in :func:`blur_pool`.
    channels_last, backend
        As in :func:`poolkit.max_pool`.

    Returns
    -------
    numpy.ndarray

    Examples
    --------
    >>> import numpy as np, poolkit as pk
    >>> x = np.array([[[0., 0., 8., 0., 0., 0., 0.]]])
    >>> pk.max_pool(x, 2)              # where the spike lands decides the output
    array([[[0., 8., 0.]]])
    >>> pk.antialiased_max_pool(x, 2)  # spread over its neighbours instead
    array([[[4., 6., 0.]]])
    """
    return _antialiased(x, kernel_size, stride, filter_size, padding_mode, channels_last, backend, with_pullback=False)


@dataclass(frozen=True)
class _BlurAxis:
    """The blur along one axis: its filter taps, where each padded cell comes from, and its :class:`Axis`."""

    taps: np.ndarray  # the normalised binomial filter
    source: np.ndarray  # for each padded position, the input cell it copies; -1 for a zero
    axis: Axis  # size, stride, padding and output size, from the Window

    @property
    def reach(self) -> int:
        """Padded cells from the first output's tap ``j`` to the last output's: ``stride * (out - 1) + 1``."""
        return self.axis.stride * (self.axis.out_size - 1) + 1

    def forward(self, array: np.ndarray) -> np.ndarray:
        """Blur and subsample the last axis of ``array``."""
        padded = np.take(array, np.maximum(self.source, 0), axis=-1)
        padded[..., self.source < 0] = 0
        stride, span = self.axis.stride, self.reach
        result = self.taps[0] * padded[..., 0:span:stride]
        for j in range(1, len(self.taps)):
            result += self.taps[j] * padded[..., j : j + span : stride]
        return result

    def backward(self, grad: np.ndarray) -> np.ndarray:
        """The transpose of :meth:`forward`: spread each output over its taps, then fold the padding back."""
        padded = np.zeros((*grad.shape[:-1], len(self.source)), dtype=grad.dtype)
        stride, span = self.axis.stride, self.reach
        for j, weight in enumerate(self.taps):
            padded[..., j : j + span : stride] += weight * grad
        before, size = self.axis.pad_before, self.axis.size
        result = padded[..., before : before + size].copy()
        for position in (*range(before), *range(before + size, len(self.source))):
            if self.source[position] >= 0:
                result[..., self.source[position]] += padded[..., position]
        return result


@functools.lru_cache(maxsize=256)
def _blur_axis(axis: Axis, padding_mode: str) -> _BlurAxis:
    """Filter taps and padding map of one axis of the blur's :class:`Window`."""
    taps = np.array([comb(axis.kernel - 1, j) for j in range(axis.kernel)], dtype=np.float64)
    taps /= taps.sum()
    position = np.arange(-axis.pad_before, axis.size + axis.pad_after)
    inside = (position >= 0) & (position < axis.size)
    if padding_mode == "replicate":
        source = np.clip(position, 0, axis.size - 1)
    elif padding_mode == "reflect":
        last = axis.size - 1
        source = np.where(position < 0, -position, np.where(position > last, 2 * last - position, position))
    else:
        source = np.where(inside, position, -1)
    taps.flags.writeable = source.flags.writeable = False
    return _BlurAxis(taps, source, axis)


def _blur_axes(spatial, stride, filter_size, padding_mode) -> list[_BlurAxis]:
    """One :class:`_BlurAxis` per spatial axis: a Window of ``filter_size`` taps padded ``(f-1)//2`` and ``f//2``."""
    size = _to_int("filter_size", filter_size)
    if not 1 <= size <= 7:
        raise PoolingConfigError(f"filter_size={filter_size!r} is not available; use a binomial filter of 1 to 7 taps")
    check_choice("padding_mode", padding_mode, PADDING_MODES)
    strides = _per_axis("stride", stride, len(spatial))  # the Window would read None as the kernel
    for axis, length in enumerate(spatial):
        if length < 1:
            raise PoolingConfigError(
                f"blur_pool needs at least one cell along every spatial axis; spatial axis {axis} has {length}"
            )
    if padding_mode == "reflect":
        for axis, length in enumerate(spatial):
            if length <= size // 2:
                raise PoolingConfigError(
                    f"padding_mode='reflect' needs spatial axis {axis} longer than its padding of {size // 2} "
                    f"(filter_size={size}); it has {length}. Use padding_mode='replicate' or 'zeros', or a "
                    "smaller filter"
                )
    window = Window.build(spatial, size, strides, [((size - 1) // 2, size // 2)] * len(spatial))
    return [_blur_axis(axis, padding_mode) for axis in window.axes]


def _apply(array: np.ndarray, axes: list[_BlurAxis], transpose: bool) -> np.ndarray:
    """Blur spatial axes 2, 3, ... one at a time, or apply the transposes in reverse order."""
    order = reversed(list(enumerate(axes))) if transpose else enumerate(axes)
    for axis, blur in order:
        moved = np.moveaxis(array, axis + 2, -1)
        moved = blur.backward(moved) if transpose else blur.forward(moved)
        array = np.moveaxis(moved.astype(array.dtype, copy=False), -1, axis + 2)
    return np.ascontiguousarray(array)


def _blur(x, stride, filter_size, padding_mode, channels_last, *, with_pullback):
    array, layout = as_pool_input(x, None, channels_last, "blur_pool")
    axes = _blur_axes(array.shape[2:], stride, filter_size, padding_mode)
    dtype = gradient_dtype(array.dtype)
    y = layout.to_user(_apply(array.astype(dtype, copy=False), axes, transpose=False))
    if not with_pullback:
        return y

    def gradient(dy: np.ndarray) -> np.ndarray:
        return layout.to_user(_apply(layout.to_kernel(dy).astype(dtype, copy=False), axes, transpose=True))

    return y, checked_pullback("blur_pool", y, gradient)


def _antialiased(x, kernel_size, stride, filter_size, padding_mode, channels_last, backend, *, with_pullback):
    array, layout = as_pool_input(x, None, channels_last, "antialiased_max_pool")
    if not with_pullback:
        high = max_pool(array, kernel_size, 1, backend=backend)
        return layout.to_user(blur_pool(high, stride, filter_size, padding_mode))
    high, max_pullback = vjp(max_pool, array, kernel_size, 1, backend=backend)
    y, blur_pullback = vjp(blur_pool, high, stride, filter_size, padding_mode)
    y = layout.to_user(y)

    def gradient(dy: np.ndarray) -> np.ndarray:
        return layout.to_user(max_pullback(blur_pullback(layout.to_kernel(dy))))

    return y, checked_pullback("antialiased_max_pool", y, gradient)


def _blur_rule(x, stride=2, filter_size=3, padding_mode="reflect", *, channels_last=False):
    return _blur(x, stride, filter_size, padding_mode, channels_last, with_pullback=True)


def _antialiased_rule(
    x, kernel_size=2, stride=2, *, filter_size=3, padding_mode="reflect", channels_last=False, backend="auto"
):
    return _antialiased(x, kernel_size, stride, filter_size, padding_mode, channels_last, backend, with_pullback=True)


defvjp(blur_pool, _blur_rule)
defvjp(antialiased_max_pool, _antialiased_rule)

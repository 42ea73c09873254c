"""Fractional max pooling (Graham 2014): max over windows whose starts step by a fraction.

Pooling ``L`` cells down to ``O < L`` cells with a ``k``-cell window needs an
average stride of ``(L - k) / (O - 1)``, which is rarely an integer. Fractional
max pooling draws one number ``u`` in ``[0, 1)`` per ``(n, c)`` plane and axis
and places window ``i`` at::

    alpha = (L - k) / (O - 1)
    start_i = floor((i + u) * alpha) - floor(u * alpha)    for i < O - 1
    start_{O-1} = L - k

so the strides are a pseudo-random mix of ``floor(alpha)`` and ``ceil(alpha)``
and the last window ends at the last cell. The arithmetic is PyTorch's, done
in the input's float type (float64 for integer inputs), so the same samples
give bit-for-bit the same windows, values and indices as
``torch.nn.functional.fractional_max_pool2d/3d(..., _random_samples=...)``.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from .. import reducers
from ..autodiff import checked_pullback, defvjp
from ..errors import PoolingConfigError, PoolingTypeError
from ..geometry import IntOrSeq, _per_axis
from ..kernels.numpy_ref import _chosen_cell, _scatter
from ._common import as_array, as_pool_input, check_flag, check_positive_real
from .stochastic import as_generator

__all__ = ["fractional_max_pool", "fractional_max_pool2d", "fractional_max_pool3d"]

# The sample of a plane that drives each spatial axis, in PyTorch's ``_random_samples`` layout:
# 2-D reads (width, height), 3-D reads (depth, height, width).
_SAMPLE_OF_AXIS = {2: (1, 0), 3: (0, 1, 2)}


def fractional_max_pool(
    x: ArrayLike,
    kernel_size: IntOrSeq,
    output_size: IntOrSeq | None = None,
    output_ratio: float | Sequence[float] | None = None,
    random_samples: ArrayLike | None = None,
    rng: np.random.Generator | int | None = None,
    return_indices: bool = False,
    *,
    channels_last: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Fractional max pooling over 2 or 3 spatial axes (Graham 2014), PyTorch's semantics.

    Along an axis of size ``L`` pooled to ``O`` cells with window ``k`` and
    the plane's sample ``u``, window ``i`` covers ``start_i .. start_i + k - 1``::

        alpha = (L - k) / (O - 1)
        start_i = floor((i + u) * alpha) - floor(u * alpha)   (i < O - 1),   start_{O-1} = L - k

    computed in ``x``'s float type (float64 for integer and bool inputs), as
    PyTorch does; ``y`` is the window's maximum. Ties go to the first maximum
    in row-major window order; a NaN wins its window (the last NaN gets the
    index).

    Parameters
    ----------
    x : array_like
        ``(N, C, H, W)`` or ``(N, C, D, H, W)``; ``(N, *spatial, C)`` with
        ``channels_last``. Any real dtype; the result keeps it.
    kernel_size : int or sequence of int
        Window size per spatial axis.
    output_size : int or sequence of int, optional
        Output size per axis; each needs ``output_size + kernel_size - 1 <= L``.
    output_ratio : float or sequence of float, optional
        Instead of ``output_size``: ``output_size = int(L * output_ratio)``,
        with ``0 < output_ratio < 1``. Give exactly one of the two.
    random_samples : array_like, optional
        ``(N, C, rank)`` numbers in ``[0, 1)``, PyTorch's ``_random_samples``
        layout: for 2-D, ``[..., 0]`` drives the width and ``[..., 1]`` the
        height; for 3-D, ``[..., 0..2]`` drive depth, height and width. They
        are rounded to ``x``'s float type first (PyTorch requires that dtype).
    rng : numpy.random.Generator, int or None
        Draws the samples when ``random_samples`` is not given
        (``rng.random((N, C, rank))``); an int seeds a new generator. Give
        at most one of ``random_samples`` and ``rng``.
    return_indices : bool
        Also return the int64 flat index of each maximum within its ``(n, c)``
        plane (PyTorch's layout).
    channels_last : bool
        Input and output are ``(N, *spatial, C)``.

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, numpy.ndarray)
        The pooled array ``(N, C, *output_size)`` (or channels last), with the
        indices if asked.

    Raises
    ------
    PoolingConfigError
        A rank other than 2 or 3, both or neither of ``output_size`` and
        ``output_ratio``, an output that does not fit (``output_size +
        kernel_size - 1 > L``), a ratio outside ``(0, 1)``, samples of the
        wrong shape or outside ``[0, 1)``.
    PoolingTypeError
        Non-numeric input, samples or sizes, or an ``rng`` that is not a
        generator or seed.

    Notes
    -----
    PyTorch's ``fractional_max_pool3d`` refuses ``output_size + kernel_size - 1
    == L`` (a strict check, unlike its 2-D version); poolkit allows it on both.

    Examples
    --------
    >>> import numpy as np, poolkit as pk
    >>> x = np.arange(25.).reshape(1, 1, 5, 5)
    >>> samples = np.array([[[0.5, 0.25]]])          # (width, height) for one plane
    >>> y, idx = pk.fractional_max_pool(x, 2, output_size=3, random_samples=samples, return_indices=True)
    >>> y
    array([[[[ 6.,  8.,  9.],
             [11., 13., 14.],
             [21., 23., 24.]]]])
    >>> idx[0, 0]
    array([[ 6,  8,  9],
           [11, 13, 14],
           [21, 23, 24]])
    """
    return _fractional(
        x, kernel_size, output_size, output_ratio, random_samples, rng, return_indices,
        channels_last=channels_last, rank=None,
    )  # fmt: skip


def fractional_max_pool2d(
    x: ArrayLike,
    kernel_size: IntOrSeq,
    output_size: IntOrSeq | None = None,
    output_ratio: float | Sequence[float] | None = None,
    random_samples: ArrayLike | None = None,
    rng: np.random.Generator | int | None = None,
    return_indices: bool = False,
    *,
    channels_last: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """:func:`fractional_max_pool` on 2 spatial axes: ``(N, C, H, W)`` or unbatched ``(C, H, W)``.

    Unbatched input takes samples of shape ``(1, C, 2)``, as in PyTorch.

    Examples
    --------
    >>> import numpy as np, poolkit as pk
    >>> x = np.random.default_rng(0).random((3, 10, 10))
    >>> pk.fractional_max_pool2d(x, 3, output_ratio=0.5, rng=1).shape
    (3, 5, 5)
    """
    return _fractional(
        x, kernel_size, output_size, output_ratio, random_samples, rng, return_indices,
        channels_last=channels_last, rank=2,
    )  # fmt: skip


def fractional_max_pool3d(
    x: ArrayLike,
    kernel_size: IntOrSeq,
    output_size: IntOrSeq | None = None,
    output_ratio: float | Sequence[float] | None = None,
    random_samples: ArrayLike | None = None,
    rng: np.random.Generator | int | None = None,
    return_indices: bool = False,
    *,
    channels_last: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """:func:`fractional_max_pool` on 3 spatial axes: ``(N, C, D, H, W)`` or unbatched ``(C, D, H, W)``.

    Unbatched input takes samples of shape ``(1, C, 3)``, as in PyTorch.

    Examples
    --------
    >>> import numpy as np, poolkit as pk
    >>> x = np.random.default_rng(0).random((2, 6, 6, 6))
    >>> pk.fractional_max_pool3d(x, 2, output_size=(4, 3, 5), rng=1).shape
    (2, 4, 3, 5)
    """
    return _fractional(
        x, kernel_size, output_size, output_ratio, random_samples, rng, return_indices,
        channels_last=channels_last, rank=3,
    )  # fmt: skip


def interval_starts(samples: np.ndarray, size: int, out_size: int, kernel: int) -> np.ndarray:
    """Window starts along one axis for each sample, shape ``samples.shape + (out_size,)``.

    PyTorch's interval sequence, in the float type of ``samples``: every
    intermediate result is rounded to that type, as in C++.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit.ops.fractional import interval_starts
    >>> interval_starts(np.array([0.0, 0.5, 0.9]), 10, 4, 2)
    array([[0, 2, 5, 8],
           [0, 3, 5, 8],
           [0, 3, 5, 8]])
    """
    starts = np.full((*samples.shape, out_size), size - kernel, dtype=np.int64)
    if out_size > 1:
        real = samples.dtype.type
        alpha = real(size - kernel) / real(out_size - 1)
        steps = np.arange(out_size - 1).astype(samples.dtype)
        u = samples[..., np.newaxis]
        starts[..., :-1] = ((steps + u) * alpha).astype(np.int64) - (u * alpha).astype(np.int64)
    return starts


def _fractional(
    x, kernel_size, output_size=None, output_ratio=None, random_samples=None, rng=None, return_indices=False,
    *, channels_last=False, rank=None, with_pullback=False,
):  # fmt: skip
    """The one pipeline behind the fractional functions and their :func:`poolkit.vjp` rules."""
    name = f"fractional_max_pool{rank}d" if rank else "fractional_max_pool"
    array, layout = as_pool_input(x, rank, channels_last, name)
    check_flag("return_indices", return_indices)
    spatial = array.shape[2:]
    if len(spatial) not in _SAMPLE_OF_AXIS:
        raise PoolingConfigError(
            f"{name} pools 2 or 3 spatial axes; x of shape {array.shape} has {len(spatial)}. "
            "Use (N, C, H, W) or (N, C, D, H, W) input"
        )
    kernel = _per_axis("kernel_size", kernel_size, len(spatial))
    out_shape = _output_shape(name, spatial, kernel, output_size, output_ratio)
    samples = _samples(name, array, random_samples, rng)

    plane_strides = np.cumprod((1, *spatial[:0:-1]))[::-1]
    offsets = np.indices(kernel).reshape(len(kernel), -1)
    flat = np.zeros((*array.shape[:2], *out_shape, offsets.shape[1]), dtype=np.int64)
    for axis, (size, out, k) in enumerate(zip(spatial, out_shape, kernel)):
        starts = interval_starts(samples[..., _SAMPLE_OF_AXIS[len(spatial)][axis]], size, out, k)
        if starts.size and not (starts.min() >= 0 and starts.max() <= size - k):
            raise PoolingConfigError(
                f"{name} cannot place {out} windows of {k} on spatial axis {axis} of size {size} in "
                f"{samples.dtype}: its interval arithmetic runs out of precision there. Pool "
                "x.astype(np.float32) instead"
            )
        shape = [1] * len(spatial)
        shape[axis] = out
        flat += (starts.reshape(*array.shape[:2], *shape, 1) + offsets[axis]) * plane_strides[axis]
    planes = array.reshape(*array.shape[:2], int(np.prod(spatial)))
    gather = flat.reshape(*array.shape[:2], int(np.prod(flat.shape[2:])))
    cells = np.take_along_axis(planes, gather, axis=2).reshape(flat.shape)
    chosen = _chosen_cell(cells, reducers.max_reduction())[..., np.newaxis]
    y = np.take_along_axis(cells, chosen, axis=-1)[..., 0]
    indices = np.take_along_axis(flat, chosen, axis=-1)[..., 0]

    user_y = layout.to_user(y)
    result = (user_y, layout.to_user(indices)) if return_indices else user_y
    if not with_pullback:
        return result

    def gradient(dy: np.ndarray) -> np.ndarray:
        dx = _scatter(layout.to_kernel(dy).astype(np.float64), indices, array.shape)
        return layout.to_user(dx.astype(reducers.gradient_dtype(array.dtype), copy=False))

    return result, checked_pullback(name, user_y, gradient)


def _output_shape(name, spatial, kernel, output_size, output_ratio) -> tuple[int, ...]:
    """The output size per axis from ``output_size`` or ``output_ratio``, checked to fit."""
    if (output_size is None) == (output_ratio is None):
        raise PoolingConfigError(
            f"{name} needs exactly one of output_size and output_ratio; got "
            f"output_size={output_size!r}, output_ratio={output_ratio!r}"
        )
    if output_size is not None:
        out_shape = _per_axis("output_size", output_size, len(spatial))
    else:
        ratios = _ratios(output_ratio, len(spatial))
        out_shape = tuple(int(size * ratio) for size, ratio in zip(spatial, ratios))
        for axis, (size, out) in enumerate(zip(spatial, out_shape)):
            if out < 1:
                raise PoolingConfigError(
                    f"output_ratio={output_ratio!r} gives int({size} * {ratios[axis]}) = 0 output cells along "
                    f"spatial axis {axis}; use a larger ratio or an explicit output_size"
                )
    for axis, (size, out, k) in enumerate(zip(spatial, out_shape, kernel)):
        if out + k - 1 > size:
            raise PoolingConfigError(
                f"{name} cannot place {out} windows of kernel_size={k} along spatial axis {axis} of size "
                f"{size}: it needs output_size + kernel_size - 1 <= {size}, got {out + k - 1}. "
                "Use a smaller output_size or kernel_size"
            )
    return out_shape


def _ratios(output_ratio, rank: int) -> tuple[float, ...]:
    if isinstance(output_ratio, numbers.Real) or (isinstance(output_ratio, np.ndarray) and output_ratio.ndim == 0):
        values = (output_ratio,) * rank
    elif isinstance(output_ratio, (Sequence, np.ndarray)) and not isinstance(output_ratio, (str, bytes)):
        values = tuple(output_ratio)
        if len(values) != rank:
            raise PoolingConfigError(
                f"output_ratio={output_ratio!r} has {len(values)} entries for {rank} spatial axes; "
                f"give {rank} values or a single float"
            )
    else:
        raise PoolingTypeError(f"output_ratio={output_ratio!r} must be a float or a sequence of {rank} floats")
    ratios = tuple(check_positive_real("output_ratio", _item(v)) for v in values)
    if any(r >= 1 for r in ratios):
        raise PoolingConfigError(f"output_ratio={output_ratio!r} must lie strictly between 0 and 1")
    return ratios


def _item(value):
    return value.item() if isinstance(value, np.generic | np.ndarray) else value


def _samples(name, array, random_samples, rng) -> np.ndarray:
    """The ``(N, C, rank)`` samples in the interval arithmetic's float type, checked or drawn."""
    dtype = array.dtype if array.dtype.kind == "f" else np.dtype(np.float64)
    shape = (*array.shape[:2], array.ndim - 2)
    below_one = np.nextafter(dtype.type(1), dtype.type(0))
    if random_samples is None:
        samples = as_generator(rng).random(shape).astype(dtype)
        return np.minimum(samples, below_one)  # a draw just below 1 may round up to 1 in float16/32
    if rng is not None:
        raise PoolingConfigError(f"{name} takes random_samples or rng, not both; the samples fix the windows")
    samples = as_array(random_samples, name, "random_samples")
    if samples.shape != shape:
        raise PoolingConfigError(
            f"random_samples of shape {samples.shape} do not fit x: {name} needs shape (N, C, rank) = {shape}, "
            "one number per plane and spatial axis"
        )
    samples = samples.astype(dtype)
    outside = ~((samples >= 0) & (samples < 1))
    if outside.any():
        where = tuple(int(i) for i in np.argwhere(outside)[0])
        raise PoolingConfigError(
            f"random_samples must lie in [0, 1) in x's float type ({dtype}); random_samples{list(where)} is "
            f"{samples[where]!r}. Draw them with rng.random(...) (a value just below 1 may round up to 1 in "
            "float16/float32)"
        )
    return samples


for _function, _rank in ((fractional_max_pool, None), (fractional_max_pool2d, 2), (fractional_max_pool3d, 3)):
    defvjp(_function, functools.partial(_fractional, rank=_rank, with_pullback=True))

"""Max unpooling: put pooled values back where ``max_pool(..., return_indices=True)`` found them.

The partial inverse of max pooling (SegNet's decoder, PyTorch's
``max_unpool``): every value of ``x`` goes to the flat position ``indices``
names within its ``(n, c)`` plane of a zero output; every other output cell
stays 0. The pooling arguments only fix the output size.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from .. import reducers
from ..autodiff import checked_pullback, defvjp
from ..errors import PoolingConfigError, PoolingTypeError
from ..geometry import IntOrSeq, _per_axis, _resolve_padding, _to_int, _unpooled_shape
from ._common import as_array, as_pool_input

__all__ = ["max_unpool", "max_unpool1d", "max_unpool2d", "max_unpool3d"]


def max_unpool(
    x: ArrayLike,
    indices: ArrayLike,
    kernel_size: IntOrSeq,
    stride: IntOrSeq | None = None,
    padding: IntOrSeq | Sequence[tuple[int, int]] = 0,
    output_size: Sequence[int] | None = None,
    *,
    channels_last: bool = False,
) -> np.ndarray:
    """Max unpooling over every spatial axis, PyTorch's ``max_unpool`` semantics.

    ``y.flat_in_plane[indices[n, c, i]] = x[n, c, i]`` in a zero array whose
    spatial size per axis defaults to the input size of the max pool that
    made ``indices``::

        out = (in - 1) * stride - pad_before - pad_after + kernel_size

    Parameters
    ----------
    x : array_like
        The pooled values, ``(N, C, *spatial)``, or ``(N, *spatial, C)`` with
        ``channels_last``. Any real dtype; the result keeps it.
    indices : array_like
        Integers of ``x``'s shape (and layout): each a flat position within
        one ``(n, c)`` plane of the output, as ``max_pool(...,
        return_indices=True)`` gives them.
    kernel_size, stride, padding
        The arguments of that max pool (``stride=None`` means ``kernel_size``;
        ``padding`` is an int, one per axis, or ``(before, after)`` pairs).
    output_size : sequence of int, optional
        The spatial output shape, or the full shape of the pooled input (in
        ``x``'s layout, batch and channel included; they must match ``x``).
        Each spatial size must lie strictly between ``out - stride`` and
        ``out + stride``: the sizes a max pool (floor or ceil mode) maps to
        ``x``'s size.
    channels_last : bool
        Input, indices and output are ``(N, *spatial, C)``.

    Returns
    -------
    numpy.ndarray
        ``(N, C, *output_size)`` (or channels last). Where several values name
        the same position, the last in ``(N, C, *spatial)`` row-major order
        stays (as in PyTorch on the CPU).

    Raises
    ------
    PoolingTypeError
        Non-numeric ``x``, indices that are not integers.
    PoolingConfigError
        Indices of another shape than ``x``, an index outside its output
        plane, an ``output_size`` of the wrong length or out of range, an
        output size below 1, bad pooling arguments.

    Notes
    -----
    The pullback gives ``dx = dy`` at each value's index. Where values share
    an index, only the one that stays gets the gradient: it is the derivative
    of the output above. (PyTorch gives ``dy`` at that index to all of them.)

    Examples
    --------
    >>> import numpy as np, poolkit as pk
    >>> x = np.array([[[1., 5., 3., 4., 0., 2.]]])
    >>> y, idx = pk.max_pool(x, 2, return_indices=True)
    >>> idx
    array([[[1, 3, 5]]])
    >>> pk.max_unpool(y, idx, 2)
    array([[[0., 5., 0., 4., 0., 2.]]])
    >>> pk.max_unpool(y, idx, 2, output_size=(7,)).shape
    (1, 1, 7)
    """
    return _unpool(x, indices, kernel_size, stride, padding, output_size, channels_last=channels_last, rank=None)


def max_unpool1d(
    x: ArrayLike,
    indices: ArrayLike,
    kernel_size: IntOrSeq,
    stride: IntOrSeq | None = None,
    padding: IntOrSeq | Sequence[tuple[int, int]] = 0,
    output_size: Sequence[int] | None = None,
    *,
    channels_last: bool = False,
) -> np.ndarray:
    """:func:`max_unpool` on 1 spatial axis: ``(N, C, W)`` or unbatched ``(C, W)``.

    Examples
    --------
    >>> import numpy as np, poolkit as pk
    >>> pk.max_unpool1d(np.array([[7., 9.]]), np.array([[0, 3]]), 2)
    array([[7., 0., 0., 9.]])
    """
    return _unpool(x, indices, kernel_size, stride, padding, output_size, channels_last=channels_last, rank=1)


def max_unpool2d(
    x: ArrayLike,
    indices: ArrayLike,
    kernel_size: IntOrSeq,
    stride: IntOrSeq | None = None,
    padding: IntOrSeq | Sequence[tuple[int, int]] = 0,
    output_size: Sequence[int] | None = None,
    *,
    channels_last: bool = False,
) -> np.ndarray:
    """:func:`max_unpool` on 2 spatial axes: ``(N, C, H, W)`` or unbatched ``(C, H, W)``.

    Examples
    --------
    >>> import numpy as np, poolkit as pk
    >>> x = np.random.default_rng(0).random((3, 5, 5))
    >>> y, idx = pk.max_pool2d(x, 2, return_indices=True)
    >>> pk.max_unpool2d(y, idx, 2, output_size=x.shape).shape
    (3, 5, 5)
    """
    return _unpool(x, indices, kernel_size, stride, padding, output_size, channels_last=channels_last, rank=2)


def max_unpool3d(
    x: ArrayLike,
    indices: ArrayLike,
    kernel_size: IntOrSeq,
    stride: IntOrSeq | None = None,
    padding: IntOrSeq | Sequence[tuple[int, int]] = 0,
    output_size: Sequence[int] | None = None,
    *,
    channels_last: bool = False,
) -> np.ndarray:
    """:func:`max_unpool` on 3 spatial axes: ``(N, C, D, H, W)`` or unbatched ``(C, D, H, W)``.

    Examples
    --------
    >>> import numpy as np, poolkit as pk
    >>> y = np.ones((1, 2, 1, 1, 1))
    >>> pk.max_unpool3d(y, np.zeros(y.shape, dtype=np.int64), 2).shape
    (1, 2, 2, 2, 2)
    """
    return _unpool(x, indices, kernel_size, stride, padding, output_size, channels_last=channels_last, rank=3)


def _unpool(
    x, indices, kernel_size, stride=None, padding=0, output_size=None, *, channels_last=False, rank=None,
    with_pullback=False,
):  # fmt: skip
    """The one pipeline behind the unpool functions and their :func:`poolkit.vjp` rules."""
    name = f"max_unpool{rank}d" if rank else "max_unpool"
    array, layout = as_pool_input(x, rank, channels_last, name)
    positions = as_array(indices, name, "indices")
    if positions.dtype.kind not in "iu":
        raise PoolingTypeError(
            f"{name} needs integer indices (int64, as max_pool(..., return_indices=True) returns them); "
            f"got dtype {positions.dtype}"
        )
    if positions.shape != np.shape(x):
        raise PoolingConfigError(
            f"{name} got indices of shape {positions.shape} for x of shape {np.shape(x)}; they must have the "
            "same shape, one index per value"
        )
    out_shape = _output_shape(name, array, layout, kernel_size, stride, padding, output_size)
    plane = int(np.prod(out_shape))
    positions = layout.to_kernel(positions)
    outside = (positions < 0) | (positions >= plane)
    if outside.any():
        where = tuple(int(i) for i in np.argwhere(layout.to_user(outside))[0])
        raise PoolingConfigError(
            f"{name}: indices{list(where)} = {int(layout.to_user(positions)[where])} is outside the output plane "
            f"of shape {out_shape} ({plane} cells); indices must be flat positions within one (n, c) plane "
            "of the output, as max_pool(..., return_indices=True) gives for an input of that spatial shape"
        )

    positions = positions.astype(np.int64, copy=False)
    n_planes = array.shape[0] * array.shape[1]
    targets = (
        positions.reshape(n_planes, int(np.prod(array.shape[2:]))) + plane * np.arange(n_planes)[:, np.newaxis]
    ).ravel()
    sources = np.arange(targets.size)
    winner = np.full(n_planes * plane, -1, dtype=np.int64)
    np.maximum.at(winner, targets, sources)  # the last value written to a cell stays
    filled = winner >= 0
    y = np.zeros(n_planes * plane, dtype=array.dtype)
    y[filled] = array.reshape(-1)[winner[filled]]
    user_y = layout.to_user(y.reshape(*array.shape[:2], *out_shape))
    if not with_pullback:
        return user_y
    stays = winner[targets] == sources

    def gradient(dy: np.ndarray) -> np.ndarray:
        gathered = layout.to_kernel(dy).reshape(-1)[targets]
        dx = np.where(stays, gathered, 0).reshape(array.shape)
        return layout.to_user(dx.astype(reducers.gradient_dtype(array.dtype)))

    return user_y, checked_pullback(name, user_y, gradient)


def _output_shape(name, array, layout, kernel_size, stride, padding, output_size) -> tuple[int, ...]:
    """The spatial output shape: PyTorch's default, or ``output_size`` checked against it."""
    in_shape = array.shape[2:]
    rank = len(in_shape)
    kernel = _per_axis("kernel_size", kernel_size, rank)
    strides = kernel if stride is None else _per_axis("stride", stride, rank)
    if isinstance(padding, str):
        raise PoolingConfigError(
            f"{name} takes numeric padding, not {padding!r}; pass the pairs that Window.build(...).padding "
            "reports for the max pool"
        )
    pads = _resolve_padding(padding, in_shape, kernel, strides, (1,) * rank)
    default = _unpooled_shape(in_shape, kernel, strides, pads)
    if output_size is None:
        out_shape = default
    else:
        out_shape = _requested_shape(name, output_size, array, layout)
        for axis, (size, base, s) in enumerate(zip(out_shape, default, strides)):
            if not base - s < size < base + s:
                raise PoolingConfigError(
                    f"output_size={tuple(output_size)!r} does not fit x: spatial axis {axis} must be between "
                    f"{base - s + 1} and {base + s - 1} (the sizes a max pool with kernel_size={kernel[axis]}, "
                    f"stride={s}, padding={pads[axis]} maps to {in_shape[axis]}); the default is {base}"
                )
    if min(out_shape) < 1:
        raise PoolingConfigError(
            f"{name} would make an output of spatial shape {out_shape}; every size must be >= 1. "
            "Pass output_size (the pooled input's shape)"
        )
    return out_shape


def _requested_shape(name, output_size, array, layout) -> tuple[int, ...]:
    """The spatial part of ``output_size``: spatial sizes alone, or the full shape in ``x``'s layout."""
    if isinstance(output_size, (str, bytes)) or not isinstance(output_size, (Sequence, np.ndarray)):
        raise PoolingTypeError(f"output_size={output_size!r} must be a sequence of ints")
    sizes = tuple(_to_int("output_size", s) for s in output_size)
    rank = array.ndim - 2
    if len(sizes) == rank:
        return sizes
    spatial = sizes[-rank - 1 : -1] if layout.channels_last else sizes[-rank:]
    n_batch, n_chan = array.shape[:2]
    full = (n_batch, *spatial, n_chan) if layout.channels_last else (n_batch, n_chan, *spatial)
    full = full[1:] if layout.unbatched else full
    if len(sizes) != len(full):
        raise PoolingConfigError(
            f"{name} takes output_size with {rank} spatial sizes or the full shape ({len(full)} entries); "
            f"got {len(sizes)}: {sizes!r}"
        )
    if sizes != full:
        raise PoolingConfigError(
            f"output_size={sizes!r} does not match x's batch and channel sizes; as a full shape it must be "
            f"{full}, or give the {rank} spatial sizes alone"
        )
    return spatial


for _function, _rank in ((max_unpool, None), (max_unpool1d, 1), (max_unpool2d, 2), (max_unpool3d, 3)):
    defvjp(_function, functools.partial(_unpool, rank=_rank, with_pullback=True))

"""RoI max pooling (Fast R-CNN; ONNX ``MaxRoiPool``): a fixed-size max pool of each region of interest.

Each region ``(batch_index, x1, y1, x2, y2)`` is scaled by ``spatial_scale``
and rounded to whole cells (Caffe's rule, which ONNX's ``MaxRoiPool``
follows), then cut into ``output_size`` bins whose edges are rounded outwards,
so neighbouring bins may share a row or column. Each bin gives its maximum;
a bin clipped away by the input's border gives 0.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.typing import ArrayLike

from .. import reducers
from ..autodiff import checked_pullback, defvjp
from ..errors import PoolingConfigError
from ..geometry import IntOrSeq, _per_axis
from ..kernels.numpy_ref import _chosen_cell
from ._common import as_array, as_pool_input, check_positive_real

__all__ = ["roi_pool"]


def roi_pool(
    x: ArrayLike,
    rois: ArrayLike,
    output_size: IntOrSeq,
    spatial_scale: float = 1.0,
    *,
    channels_last: bool = False,
) -> np.ndarray:
    """RoI max pooling of 2-D feature maps (Girshick 2015), ONNX ``MaxRoiPool`` / Caffe semantics.

    For a region ``(b, x1, y1, x2, y2)`` and ``output_size = (OH, OW)``::

        start_w, start_h = round(x1 * spatial_scale), round(y1 * spatial_scale)
        end_w,   end_h   = round(x2 * spatial_scale), round(y2 * spatial_scale)
        bin_h = (end_h - start_h + 1) / OH                  (bin_w likewise)
        rows of bin i: floor(i * bin_h) + start_h  <=  h  <  ceil((i + 1) * bin_h) + start_h

    with ``round`` half away from zero and the bounds clipped to
    ``[0, H]``; ``y[k, c, i, j]`` is the maximum of ``x[b, c]`` over the bin,
    or 0 for a bin left empty by the clipping. The coordinate arithmetic is
    done in float32 (float64 for float64 input), as ONNX Runtime does. Ties
    go to the first maximum in row-major order; a NaN wins its bin.

    Parameters
    ----------
    x : array_like
        ``(N, C, H, W)``, or ``(N, H, W, C)`` with ``channels_last``. Any real
        dtype; the result keeps it.
    rois : array_like
        ``(K, 5)``: per region the batch index (an integer in ``[0, N)``) and
        the corners ``x1, y1, x2, y2`` (inclusive, in the units that
        ``spatial_scale`` maps to cells), with ``x1 <= x2`` and ``y1 <= y2``.
    output_size : int or (int, int)
        Bins per region, ``(OH, OW)``.
    spatial_scale : float
        Factor from region coordinates to cells of ``x`` (e.g. 1/16 after a
        stride-16 backbone).
    channels_last : bool
        Input ``(N, H, W, C)``, output ``(K, OH, OW, C)``.

    Returns
    -------
    numpy.ndarray
        ``(K, C, OH, OW)`` (or ``(K, OH, OW, C)``).

    Raises
    ------
    PoolingConfigError
        ``rois`` not of shape ``(K, 5)`` or not finite, a batch index that is
        not an integer in ``[0, N)``, ``x2 < x1`` or ``y2 < y1``; input that is
        not 4-D or has an empty spatial axis; a bad ``output_size`` or scale.
    PoolingTypeError
        Non-numeric ``x``, ``rois`` or sizes.

    Notes
    -----
    ONNX Runtime truncates a fractional batch index and pools a region with
    ``x2 < x1`` as a single cell; poolkit refuses both.

    Examples
    --------
    >>> import numpy as np, poolkit as pk
    >>> x = np.arange(36.).reshape(1, 1, 6, 6)
    >>> rois = np.array([[0, 0, 0, 3, 3],       # the top-left 4x4 cells
    ...                  [0, 4, 1, 5, 5]])      # columns 4..5, rows 1..5
    >>> pk.roi_pool(x, rois, 2)
    array([[[[ 7.,  9.],
             [19., 21.]]],
    <BLANKLINE>
    <BLANKLINE>
           [[[22., 23.],
             [34., 35.]]]])
    """
    return _roi(x, rois, output_size, spatial_scale, channels_last=channels_last)


def _roi(x, rois, output_size, spatial_scale=1.0, *, channels_last=False, with_pullback=False):
    """The one pipeline behind :func:`roi_pool` and its :func:`poolkit.vjp` rule."""
    name = "roi_pool"
    array, layout = as_pool_input(x, None, channels_last, name)
    if array.ndim != 4 or 0 in array.shape[2:]:
        layout_name = "(N, H, W, C)" if channels_last else "(N, C, H, W)"
        raise PoolingConfigError(
            f"{name} takes non-empty 2-D feature maps {layout_name}; got shape {np.shape(x)}. "
            "Add a batch axis with x[None] for a single image"
        )
    out_h, out_w = _per_axis("output_size", output_size, 2)
    scale = check_positive_real("spatial_scale", spatial_scale)
    batch, corners = _check_rois(as_array(rois, name, "rois"), array.shape[0])
    coord = np.result_type(array.dtype, np.float32) if array.dtype.kind == "f" else np.dtype(np.float64)
    scaled = _round_half_away(corners.astype(coord) * coord.type(scale))
    if not np.all(np.abs(scaled) < 2**31):
        row = int(np.flatnonzero(~np.all(np.abs(scaled) < 2**31, axis=1))[0])
        raise PoolingConfigError(
            f"{name}: roi {row} scaled by spatial_scale={scale} reaches {scaled[row].tolist()}, beyond the "
            "range of a pixel index; check the rois' units and spatial_scale"
        )
    cells = scaled.astype(np.int64)

    n_chan, height, width = array.shape[1:]
    y = np.zeros((len(batch), n_chan, out_h, out_w), dtype=array.dtype)
    where = np.full(y.shape, -1, dtype=np.int64)  # flat index of each bin's maximum in x; -1 for empty bins
    select = reducers.max_reduction()
    for k, (b, (start_w, start_h, end_w, end_h)) in enumerate(zip(batch, cells)):
        rows, row_ok = _bins(start_h, end_h, out_h, height, coord)
        cols, col_ok = _bins(start_w, end_w, out_w, width, coord)
        inside = row_ok[:, :, np.newaxis, np.newaxis] & col_ok  # (OH, bin rows, OW, bin columns)
        region = array[b][:, rows[:, :, np.newaxis, np.newaxis], cols]
        region = np.where(inside, region, select.identity(array.dtype))
        region = region.transpose(0, 1, 3, 2, 4).reshape(n_chan, out_h, out_w, rows.shape[1] * cols.shape[1])
        chosen = _chosen_cell(region, select)
        bin_row, bin_col = np.divmod(chosen, cols.shape[1])
        in_plane = rows[np.arange(out_h)[:, np.newaxis], bin_row] * width + cols[np.arange(out_w), bin_col]
        empty = ~inside.any(axis=(1, 3))
        y[k] = np.take_along_axis(region, chosen[..., np.newaxis], axis=-1)[..., 0]
        y[k][:, empty] = 0
        where[k] = (b * n_chan + np.arange(n_chan)[:, np.newaxis, np.newaxis]) * height * width + in_plane
        where[k][:, empty] = -1

    user_y = layout.to_user(y)
    if not with_pullback:
        return user_y

    def gradient(dy: np.ndarray) -> np.ndarray:
        weights = layout.to_kernel(dy).astype(np.float64)
        found = where >= 0
        dx = np.bincount(where[found], weights=weights[found], minlength=array.size).reshape(array.shape)
        return layout.to_user(dx.astype(reducers.gradient_dtype(array.dtype), copy=False))

    return user_y, checked_pullback(name, user_y, gradient)


def _check_rois(rois: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The batch index (int64, ``(K,)``) and corners (float64, ``(K, 4)``) of checked regions."""
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise PoolingConfigError(
            f"rois must have shape (K, 5), one row (batch_index, x1, y1, x2, y2) per region; got shape {rois.shape}"
        )
    rois = rois.astype(np.float64)
    finite = np.isfinite(rois).all(axis=1)
    if not finite.all():
        k = int(np.argmin(finite))
        raise PoolingConfigError(f"rois must be finite; rois[{k}] = {rois[k].tolist()}")
    index = rois[:, 0]
    bad = (index != np.floor(index)) | (index < 0) | (index >= batch_size)
    if bad.any():
        k = int(np.argmax(bad))
        raise PoolingConfigError(
            f"rois[{k}] has batch index {index[k]:g}, but x holds {batch_size} image(s); the first column "
            f"must be an integer in 0..{batch_size - 1}"
        )
    x1, y1, x2, y2 = rois[:, 1:].T
    for low, high, low_name, high_name in ((x1, x2, "x1", "x2"), (y1, y2, "y1", "y2")):
        flipped = high < low
        if flipped.any():
            k = int(np.argmax(flipped))
            raise PoolingConfigError(
                f"rois[{k}] = {rois[k].tolist()} has {high_name}={high[k]:g} < {low_name}={low[k]:g}; rows are "
                "(batch_index, x1, y1, x2, y2) with x1 <= x2 and y1 <= y2 (swap the corners)"
            )
    return index.astype(np.int64), rois[:, 1:]


def _round_half_away(values: np.ndarray) -> np.ndarray:
    """C's ``round``: to the nearest integer, halves away from zero (NumPy's ``round`` goes to even)."""
    whole = np.trunc(values)
    return whole + np.sign(values) * (np.abs(values - whole) >= 0.5)


def _bins(start: int, end: int, out: int, size: int, coord: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Cell positions of each bin along one axis, ``(out, longest bin)``, clipped to the input, with a mask
    of the positions that belong to the bin."""
    bin_size = coord.type(end - start + 1) / coord.type(out)
    edges = np.arange(out + 1).astype(coord) * bin_size
    low = np.clip(np.floor(edges[:-1]).astype(np.int64) + start, 0, size)
    high = np.clip(np.ceil(edges[1:]).astype(np.int64) + start, 0, size)
    positions = low[:, np.newaxis] + np.arange(max(int((high - low).max()), 1))
    return np.minimum(positions, size - 1), positions < high[:, np.newaxis]


defvjp(roi_pool, functools.partial(_roi, with_pullback=True))

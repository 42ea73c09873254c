"""The reference kernels: plain, vectorised NumPy.

They are the oracle the fast kernels are tested against and the fallback when
Numba is missing. Each loops over the kernel's taps (``prod(kernel_size)``
iterations, in row-major order) and handles all windows at once for each tap,
using the strided blocks that :meth:`poolkit.geometry.Window.taps` describes:
a tap's windows read a strided slice of the real input, so padding is never
materialised and never read.

Adaptive and global pooling (:class:`~poolkit.geometry.Bins`) loop over the
output cells instead, each reducing its box of input cells for all ``(n, c)``
at once.

Every function takes channels-first, batched arrays ``(N, C, *spatial)`` of
any strides and trusts its :class:`~poolkit.geometry.Window` or ``Bins``.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..geometry import Bins, Window
from ..reducers import Reduction, gradient_dtype

_LEAD = (slice(None), slice(None))


def _blocks(taps):
    """Output-block and input-block index tuples of one kernel offset."""
    return _LEAD + tuple(t.out_slice for t in taps), _LEAD + tuple(t.in_slice for t in taps)


def forward(
    x: np.ndarray, window: Window, reduction: Reduction, want_indices: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Pool ``x``; return the result and, for selects when asked, the argmax indices."""
    if reduction.selects:
        return _select(x, window, reduction, want_indices)
    return _sum(x, window, reduction), None


def backward(
    dy: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    indices: np.ndarray | None,
    window: Window,
    reduction: Reduction,
) -> np.ndarray:
    """The gradient with respect to ``x`` of ``sum(dy * forward(x))``.

    Selects send each ``dy`` to its window's chosen cell (``indices``); sums
    spread ``dy / divisor`` over the window's real cells, times
    ``d(y)/d(sum)`` and ``d|x|^p/dx`` for Lp. Overlapping windows add up.
    """

    def spread_window(grad, spread):
        for _, taps in window.taps():
            out_block, in_block = _blocks(taps)
            spread[in_block] += grad[out_block]

    grad = None if reduction.selects else reduction.sum_gradient(dy, y, window)
    return _backward(dy, x, indices, reduction, grad, spread_window)


def _backward(dy, x, indices, reduction, grad, spread_fn) -> np.ndarray:
    """A select's ``dy`` to its chosen cells, or a sum's window gradients ``grad`` spread by ``spread_fn``."""
    dx_dtype = gradient_dtype(x.dtype)
    if reduction.selects:
        weights = reduction.select_gradient(dy, x, indices)
        return _scatter(weights, indices, x.shape).astype(dx_dtype, copy=False)
    spread = np.zeros(x.shape, dtype=np.float64)
    spread_fn(grad, spread)
    local = reduction.cell_gradient(x)
    if local is not None:
        spread *= local
    return spread.astype(dx_dtype, copy=False)


def _select(x, window, reduction, want_indices):
    values = x.astype(reduction.compute_dtype(x.dtype), copy=False)
    if reduction.absolute:
        values = np.abs(values)
    out = np.zeros(x.shape[:2] + window.out_shape, dtype=values.dtype)
    indices = np.zeros(out.shape, dtype=np.int64) if want_indices else None
    seen = np.zeros(window.out_shape, dtype=bool)
    floating = values.dtype.kind == "f"
    for _, taps in window.taps():
        out_block, in_block = _blocks(taps)
        spatial = out_block[2:]
        candidate, kept = values[in_block], out[out_block]
        take = reduction.better(candidate, kept) | ~seen[spatial]
        if floating and reduction.nan == "propagate":
            take |= np.isnan(candidate)
        elif floating:
            take |= np.isnan(kept) & ~np.isnan(candidate)
        np.copyto(kept, candidate, where=take)
        if want_indices:
            np.copyto(indices[out_block], window.flat_index(taps), where=take)
        seen[spatial] = True
    return out.astype(reduction.result_dtype(x.dtype), copy=False), indices


def _sum(x, window, reduction):
    values = x.astype(np.float64)
    if reduction.absolute:
        values = np.abs(values)
    if reduction.power != 1:
        values **= reduction.power
    total = np.zeros(x.shape[:2] + window.out_shape, dtype=np.float64)
    for _, taps in window.taps():
        out_block, in_block = _blocks(taps)
        total[out_block] += values[in_block]
    return reduction.finish(total, window).astype(reduction.result_dtype(x.dtype), copy=False)


def _scatter(weights, indices, in_shape):
    """Add ``weights`` into a zero array of ``in_shape`` at each plane's flat ``indices``."""
    planes = in_shape[0] * in_shape[1]
    plane_size = int(np.prod(in_shape[2:]))
    windows = int(np.prod(indices.shape[2:]))
    flat = indices.reshape(planes, windows) + (np.arange(planes, dtype=np.int64) * plane_size)[:, None]
    summed = np.bincount(flat.ravel(), weights=weights.ravel(), minlength=planes * plane_size)
    return summed.reshape(in_shape)


def bins_forward(
    x: np.ndarray, bins: Bins, reduction: Reduction, want_indices: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Reduce each bin's box of ``x``; return the result and, for selects when asked, the indices."""
    values = x.astype(reduction.compute_dtype(x.dtype), copy=False)
    if reduction.absolute:
        values = np.abs(values)
    if reduction.power != 1:
        values = values**reduction.power
    out = np.empty(x.shape[:2] + bins.out_shape, dtype=values.dtype)
    indices = np.empty(out.shape, dtype=np.int64) if want_indices else None
    for cell, box in bins.boxes():
        region = values[_LEAD + box]
        region = region.reshape(*x.shape[:2], int(np.prod(region.shape[2:])))
        if not reduction.selects:
            out[_LEAD + cell] = region.sum(axis=-1)
            continue
        chosen = _chosen_cell(region, reduction)
        out[_LEAD + cell] = np.take_along_axis(region, chosen[..., None], axis=-1)[..., 0]
        if want_indices:
            box_shape = tuple(b.stop - b.start for b in box)
            position = np.unravel_index(chosen, box_shape)
            position = tuple(p + b.start for p, b in zip(position, box))
            indices[_LEAD + cell] = np.ravel_multi_index(position, bins.in_shape)
    if not reduction.selects:
        reduction.finish(out, bins)
    return out.astype(reduction.result_dtype(x.dtype), copy=False), indices


def bins_backward(
    dy: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    indices: np.ndarray | None,
    bins: Bins,
    reduction: Reduction,
) -> np.ndarray:
    """The gradient with respect to ``x`` of ``sum(dy * bins_forward(x))``; bins that overlap add up."""

    def spread_bins(grad, spread):
        for cell, box in bins.boxes():
            spread[_LEAD + box] += grad[_LEAD + cell].reshape(*x.shape[:2], *(1,) * bins.rank)

    grad = None if reduction.selects else reduction.sum_gradient(dy, y, bins)
    return _backward(dy, x, indices, reduction, grad, spread_bins)


def _chosen_cell(region: np.ndarray, reduction: Reduction) -> np.ndarray:
    """Position, along the last axis, of the cell a select keeps: the first best in scan order.

    A NaN wins under ``nan="propagate"`` (the last NaN), and is skipped under
    ``"ignore"`` (a region of NaNs alone keeps its first cell).
    """
    if region.shape[-1] == 0:
        return np.zeros(region.shape[:-1], dtype=np.int64)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmax of a region of NaNs alone
        if reduction.nan == "ignore" and region.dtype.kind == "f":
            best = np.nanmax(region, axis=-1) if reduction.kind == "max" else np.nanmin(region, axis=-1)
        else:
            best = region.max(axis=-1) if reduction.kind == "max" else region.min(axis=-1)
    chosen = np.argmax(region == best[..., None], axis=-1)
    if region.dtype.kind == "f" and reduction.nan == "propagate":
        is_nan = np.isnan(region)
        last_nan = region.shape[-1] - 1 - np.argmax(is_nan[..., ::-1], axis=-1)
        chosen = np.where(is_nan.any(axis=-1), last_nan, chosen)
    return chosen

"""The reference kernels: plain, vectorised NumPy.

They are the oracle the fast kernels are tested against and the fallback when
Numba is missing. Each loops over the kernel's taps (``prod(kernel_size)``
iterations, in row-major order) and handles all windows at once for each tap,
using the strided blocks that :meth:`poolkit.geometry.Window.taps` describes:
a tap's windows read a strided slice of the real input, so padding is never
materialised and never read.

Every function takes channels-first, batched arrays ``(N, C, *spatial)`` of
any strides and trusts its :class:`~poolkit.geometry.Window`.
"""

from __future__ import annotations

import numpy as np

from ..geometry import Window
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
    dx_dtype = gradient_dtype(x.dtype)
    if reduction.selects:
        weights = reduction.select_gradient(dy, x, indices)
        return _scatter(weights, indices, x.shape).astype(dx_dtype, copy=False)
    grad = reduction.sum_gradient(dy, y, window)
    spread = np.zeros(x.shape, dtype=np.float64)
    for _, taps in window.taps():
        out_block, in_block = _blocks(taps)
        spread[in_block] += grad[out_block]
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
    divisor = reduction.divisor_of(window)
    if divisor is not None:
        total /= divisor
    if reduction.root and reduction.power != 1:
        total **= 1.0 / reduction.power
    return total.astype(reduction.result_dtype(x.dtype), copy=False)


def _scatter(weights, indices, in_shape):
    """Add ``weights`` into a zero array of ``in_shape`` at each plane's flat ``indices``."""
    planes = in_shape[0] * in_shape[1]
    plane_size = int(np.prod(in_shape[2:]))
    windows = int(np.prod(indices.shape[2:]))
    flat = indices.reshape(planes, windows) + (np.arange(planes, dtype=np.int64) * plane_size)[:, None]
    summed = np.bincount(flat.ravel(), weights=weights.ravel(), minlength=planes * plane_size)
    return summed.reshape(in_shape)

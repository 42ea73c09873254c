"""The fast CPU kernels: Numba, parallel, compiled lazily per dtype and cached on disk.

Same interface as :mod:`poolkit.kernels.numpy_ref`. Inputs of 1, 2 or 3
spatial axes are embedded in five axes ``(B, D, H, W, I)``: channels-first
data is ``(N*C, D, H, W, 1)`` and channels-last data ``(N, D, H, W, C)``, the
missing spatial axes having size 1 and a trivial window. Inputs of more
spatial axes go to the reference kernels.

Values are pooled separably, one spatial axis at a time, W then H then D, on
one ``b`` (an ``(n, c)`` plane, or one channels-last image) at a time, large
2-D planes a strip of output rows at a time, so that the intermediates stay
in cache. Each axis pass takes lines ``(A, L, I)`` to ``(A, out, I)`` and runs
its innermost loop over the unit-stride ``I`` axis (or along the line when
``I == 1``), so LLVM can vectorise it:

* windows of 2 to ``FUSED_KERNEL`` adjacent taps (most strides): all the
  taps of a window in one loop, each output written once
  (:func:`_fused_pass`);
* other small windows, a direct scan: for each tap, combine a strided slice;
* for stride-1, dilation-1 windows of more than ``SLIDING_KERNEL`` taps,
  doubling (:func:`_sliding_pass`): combines of 1, 2, 4, ... cells, each a
  vectorised pass, so the cost per element grows with ``log2(kernel)``
  rather than with the kernel.

Threads take planes; when there are fewer planes than threads, each plane is
cut into bands of output rows as well (:func:`_launch_window`).

Separable max is exact, values only: a window's maximum (or NaN) does not
depend on the order cells are combined in. The indices kernel scans each
window in row-major order to keep the first-maximum tie rule and the NaN rule
exactly. The reduction is passed as integer codes; branching on them outside
the inner loops costs nothing, as LLVM hoists the switch.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit, types
from numba.extending import overload

from ..errors import PoolingConfigError
from ..geometry import Bins, Window
from ..reducers import Reduction, gradient_dtype
from . import is_sliding, numpy_ref

# NumPy integers, not Python ints: a jitted call that passes a Python constant types it as a literal and
# compiles the callee once more for it (every kernel that sums with SUM, False would compile twice per dtype)
SUM, MAX, MIN = np.int64(0), np.int64(1), np.int64(2)
KEEP_NANS = np.bool_(False)  # ignore_nan=False as a constant argument
PLANES, LANES = np.bool_(False), np.bool_(True)  # the lanes argument of _pool_plane
ZERO, ONE = np.int64(0), np.int64(1)  # e.g. start and stop of a kernel called on one plane
ZERO_AT = np.uint64(0)  # a flat offset of zero, unsigned as the offsets it goes with
CELL_FLOAT, CELL_ABS, CELL_SQUARE, CELL_POWER = 1, 2, 3, 4

_KINDS = {"sum": SUM, "max": MAX, "min": MIN}

# geometry table columns, one row per embedded axis (D, H, W)
_SIZE, _KERNEL, _STRIDE, _DILATION, _START, _OUT, _SLIDING, _IDENTITY = range(8)


# ---------------------------------------------------------------- combine rules


@njit(nogil=True, cache=True, inline="always")
def _takes(kind, ignore_nan, kept, candidate):
    """Whether a select replaces ``kept`` by ``candidate`` (strict: ties keep the earlier cell).

    Written with ``&`` and ``|`` rather than ``and`` / ``or`` so that loops
    using it stay branch-free and vectorise.
    """
    better = (candidate > kept) if kind == MAX else (candidate < kept)
    if ignore_nan:
        return better | ((kept != kept) & (candidate == candidate))
    return better | (candidate != candidate)


@njit(nogil=True, cache=True, inline="always")
def _combine(kind, ignore_nan, acc, value):
    if kind == SUM:
        return acc + value
    return value if _takes(kind, ignore_nan, acc, value) else acc


# ---------------------------------------------------------------- one axis


@njit(nogil=True, cache=True)
def _line_pass(kind, ignore_nan, src, dst, geom, taps, identity):
    """Reduce lines ``src (A, L, I)`` along L into ``dst (A, out, I)``; both C-contiguous."""
    if geom[_SLIDING]:
        _sliding_pass(kind, ignore_nan, src, dst, geom[_KERNEL], geom[_START], identity)
        return
    lines, length, inner = src.shape
    out, stride = dst.shape[1], geom[_STRIDE]
    if _fuses(geom, inner, ignore_nan):
        _fused_line_pass(kind, src, dst, geom, taps, identity)
        return
    if inner == 1:  # the line itself is the unit-stride axis
        rows, targets = src.reshape(lines, length), dst.reshape(lines, out)
        _tap_rows(kind, ignore_nan, rows, targets, taps, geom[_KERNEL], stride, identity)
        return
    for a in range(lines):
        for o in range(out):
            target = dst[a, o]
            target[:] = identity
            for j in range(geom[_KERNEL]):
                if taps[j, 0] <= o < taps[j, 1]:
                    row = src[a, taps[j, 2] + (o - taps[j, 0]) * stride]
                    for i in range(inner):
                        target[i] = _combine(kind, ignore_nan, target[i], row[i])


@njit(nogil=True, cache=True)
def _tap_rows(kind, ignore_nan, rows, targets, taps, kernel, stride, identity):
    """``targets[a, o] = combine over taps j of rows[a, taps[j, 2] + (o - taps[j, 0]) * stride]``.

    Tap by tap over each row, in tap order (the scan order). A kernel of its
    own (LLVM does not vectorise these loops inside :func:`_line_pass`), with
    unsigned offsets into the flat arrays (no negative-index test in the
    loop): stride-1 selects run five to eight times faster than the same
    loops inline with signed indices.
    """
    length, out = rows.shape[1], targets.shape[1]
    src, dst = rows.reshape(-1), targets.reshape(-1)
    step = np.uint64(stride)
    for a in range(rows.shape[0]):
        base = np.uint64(a * out)
        for o in range(np.uint64(out)):
            dst[base + o] = identity
        for j in range(kernel):
            at, into = np.uint64(a * length + taps[j, 2]), base + np.uint64(taps[j, 0])
            if stride == 2:  # a literal stride lets LLVM use interleaved loads
                for q in range(np.uint64(taps[j, 1] - taps[j, 0])):
                    dst[into + q] = _combine(kind, ignore_nan, dst[into + q], src[at + np.uint64(2) * q])
            else:
                for q in range(np.uint64(taps[j, 1] - taps[j, 0])):
                    dst[into + q] = _combine(kind, ignore_nan, dst[into + q], src[at + step * q])


@njit(nogil=True, cache=True, inline="always")
def _fuses(geom, inner, ignore_nan):
    """Whether :func:`_fused_line_pass` takes an axis: 2 to ``FUSED_KERNEL`` adjacent taps and, along rows
    (``inner == 1``), a stride and kernel it has a loop for: strides 1 and 2 with 2 or 3 taps, and windows
    side by side (stride = kernel). Selects that skip NaNs keep the tap loops: they are rare, and each kind
    compiles the fused loops once more (two seconds a dtype)."""
    kernel, stride = geom[_KERNEL], geom[_STRIDE]
    adjacent = geom[_DILATION] == 1 and 2 <= kernel <= FUSED_KERNEL and not ignore_nan
    return adjacent and (inner > 1 or (stride <= 2 and kernel <= 3) or stride == kernel)


@njit(nogil=True, cache=True, inline="always")
def _fold(kind, cells, at, step, kernel, identity):
    """``combine(identity, cells[at], cells[at + step], ...)`` over ``kernel`` cells, in that order (NaNs propagate)."""
    acc = identity
    for j in range(kernel):
        acc = _combine(kind, False, acc, cells[at + np.uint64(j) * step])
    return acc


@njit(nogil=True, cache=True, inline="always")
def _fused_row(kind, cells, at, targets, into, count, kernel, stride, identity):
    """``targets[into + q] = fold(cells[at + stride*q :][:kernel])`` for ``q < count``; literal kernel and stride."""
    first, put = np.uint64(at), np.uint64(into)
    for q in range(np.uint64(count)):
        targets[put + q] = _fold(kind, cells, first + np.uint64(stride) * q, np.uint64(1), kernel, identity)


@njit(nogil=True, cache=True, inline="always")
def _fused_lanes(kind, cells, at, targets, into, inner, kernel, identity):
    """``targets[into + i] = fold(cells[at + i], cells[at + inner + i], ...)`` over ``kernel`` rows; literal kernel."""
    first, put, lanes = np.uint64(at), np.uint64(into), np.uint64(inner)
    for i in range(lanes):
        targets[put + i] = _fold(kind, cells, first + i, lanes, kernel, identity)


@njit(nogil=True, cache=True, inline="always")
def _fused_line_pass(kind, src, dst, geom, taps, identity):
    """:func:`_line_pass` for windows of a few adjacent taps (see :func:`_fuses`), by :func:`_fused_pass`."""
    lines, length, inner = src.shape
    out, kernel = dst.shape[1], geom[_KERNEL]
    low, high = ZERO, out  # interior windows (ZERO: no literal type for the compiled tuple)
    for j in range(kernel):
        low, high = max(low, taps[j, 0]), min(high, taps[j, 1])
    low = min(low, out)  # a tap that never falls inside the line may start past the last window
    line = (lines, length, inner, out, low, max(low, high), kernel, geom[_STRIDE], geom[_START])
    cells, targets, table = src.reshape(-1), dst.reshape(-1), taps[:kernel].copy()  # a copy: one array type
    if kind == SUM:  # a literal kind (see _fused_pass): 0, 1, 2 are the Python ints of SUM, MAX, MIN
        _fused_pass(0, cells, targets, line, table, identity)
    elif kind == MAX:
        _fused_pass(1, cells, targets, line, table, identity)
    else:
        _fused_pass(2, cells, targets, line, table, identity)


@njit(nogil=True, cache=True, inline="always")
def _edge_windows(kind, cells, targets, line, taps, a, first, stop, identity, rows):
    """Windows ``first .. stop-1`` of line ``a`` of :func:`_fused_pass`: each the fold of its taps inside the line.

    The taps are the axis's (see :func:`_tables`), so padding is skipped and
    the taps are taken in order, as the direct scan does. ``rows`` (at
    least ``kernel`` long) takes the line positions of a window's taps, so
    that the loop over the lanes, innermost, folds a fixed number of cells
    and vectorises.
    """
    _lines, length, inner, out, _low, _high, kernel, stride, _start = line
    lanes = np.uint64(inner)
    for o in range(first, stop):
        taken = 0
        for j in range(kernel):
            if taps[j, 0] <= o < taps[j, 1]:
                rows[taken] = (a * length + taps[j, 2] + (o - taps[j, 0]) * stride) * inner
                taken += 1
        put = np.uint64((a * out + o) * inner)
        r0, r1, r2, r3 = np.uint64(rows[0]), np.uint64(rows[1]), np.uint64(rows[2]), np.uint64(rows[3])
        for i in range(lanes):  # taken >= 1: a window of padding only is refused by the Window
            acc = _combine(kind, False, identity, cells[r0 + i])
            if taken > 1:
                acc = _combine(kind, False, acc, cells[r1 + i])
            if taken > 2:
                acc = _combine(kind, False, acc, cells[r2 + i])
            if taken > 3:
                acc = _combine(kind, False, acc, cells[r3 + i])
            targets[put + i] = acc


def _fused_pass(kind, cells, targets, line, taps, identity):
    """:func:`_fused_line_pass` on the flat lines ``cells`` into the flat ``targets``, line by line.

    ``line`` is ``(lines, length, inner, out, low, high, kernel, stride,
    start)``: windows ``low .. high-1`` of each line have every tap inside
    it. Each of them combines its cells in one loop, reading each tap's
    cell and writing the output once, rather than tap by tap into the
    output (a read, a select and a store per tap, which LLVM makes a masked
    store). The kernel is a literal in each loop and, along rows, so is the
    stride, so that LLVM loads the cells of a stride of 2, or of windows side
    by side, as whole vectors and shuffles them; across lanes the loop runs
    along the lanes. The few other windows are folded one by one
    (:func:`_edge_windows`) just before and after them, so that each line
    is read in order: reading the ends of all lines first costs a cache
    miss per line (twice the time on planes that come from memory). The
    fold order is the direct scan's, so are the bits.

    Compiled through the overload below for a literal ``kind``: with nine
    loops in one function, LLVM no longer hoists a runtime kind's tests out
    of them (twice the time of a max). Its arguments are flat arrays and
    integers only (and a C-contiguous copy of the axis's taps, one array
    type whatever table they come from), so that each dtype compiles it
    once per kind.
    """
    _fused_for(kind)(kind, cells, targets, line, taps, identity)


@overload(_fused_pass, prefer_literal=True, jit_options={"nogil": True})
def _compile_fused_pass(kind, cells, targets, line, taps, identity):
    if not isinstance(kind, types.IntegerLiteral):
        return None  # no implementation: a call with a kind that is not a literal is a typing error
    if kind.literal_value == SUM and isinstance(identity, types.Integer):
        return _integers_never_summed
    return _fused_for(kind.literal_value)


def _integers_never_summed(kind, cells, targets, line, taps, identity):
    """:func:`_fused_pass` of sums for integer dtypes, compiled in their place (a fused pass costs about two
    seconds a kind and dtype to compile): integers are summed as float64 cell values (:func:`_forward_sum`)."""
    raise AssertionError("integer windows are summed in float64, not in their own dtype")


@functools.cache
def _fused_for(fixed_kind):
    """The body of :func:`_fused_pass` with the constant ``fixed_kind`` for its kind."""

    def fused(kind, cells, targets, line, taps, identity):
        lines, length, inner, out, low, high, kernel, stride, start = line
        count = high - low
        rows = np.zeros(FUSED_KERNEL, dtype=np.int64)
        for a in range(lines):
            _edge_windows(fixed_kind, cells, targets, line, taps, a, 0, low, identity, rows)
            at, into = a * length + start + low * stride, a * out + low
            if inner > 1:
                for o in range(count):
                    row, put = (at + o * stride) * inner, (into + o) * inner
                    if kernel == 2:
                        _fused_lanes(fixed_kind, cells, row, targets, put, inner, 2, identity)
                    elif kernel == 3:
                        _fused_lanes(fixed_kind, cells, row, targets, put, inner, 3, identity)
                    else:
                        _fused_lanes(fixed_kind, cells, row, targets, put, inner, 4, identity)
            elif stride == 1:
                if kernel == 2:
                    _fused_row(fixed_kind, cells, at, targets, into, count, 2, 1, identity)
                else:
                    _fused_row(fixed_kind, cells, at, targets, into, count, 3, 1, identity)
            elif stride == 2:
                if kernel == 2:
                    _fused_row(fixed_kind, cells, at, targets, into, count, 2, 2, identity)
                else:
                    _fused_row(fixed_kind, cells, at, targets, into, count, 3, 2, identity)
            elif kernel == 3:
                _fused_row(fixed_kind, cells, at, targets, into, count, 3, 3, identity)
            else:
                _fused_row(fixed_kind, cells, at, targets, into, count, 4, 4, identity)
            _edge_windows(fixed_kind, cells, targets, line, taps, a, high, out, identity, rows)

    return fused


@njit(nogil=True, cache=True)
def _sliding_pass(kind, ignore_nan, src, dst, kernel, start, identity):
    """``dst[a, o] = combine(src[a, o + start : o + start + kernel])``, cells outside ``src`` being empty.

    By doubling: combines of 1, 2, 4, ... cells, each from two of the level
    below. The line, with empty (identity) cells where windows reach past it,
    is copied into a buffer ``m`` and raised level by level (into a second
    buffer, then swapped): ``combine(m[e], m[e + 2**b])`` holds cells
    ``e .. e + 2**(b+1) - 1``.
    A select takes the two top-level blocks that cover the window, the first
    one starting at the window and the second one ending with it: the
    overlap changes no maximum, ties keep the earlier block's (so the first)
    cell, and a NaN of the second block is the window's last. A sum adds the
    disjoint blocks of the binary digits of ``kernel`` to a running total
    that starts from the identity (so a window of ``-0.0`` sums to ``+0.0``,
    as a direct sum does); its top level is not raised in a pass of its own,
    but formed from two blocks of the level below where it is added
    (:func:`_add_blocks`). Either way each pass is one unit-stride loop over
    the buffer, vectorised, and a window's result depends only on its own
    cells, not on where the line or the buffer starts. The cost is
    ``floor(log2(kernel)) + 1`` passes for a select and at most
    ``2 * floor(log2(kernel))`` for a sum, besides copying the line in and
    the windows out (a select whose windows are one run of the targets
    writes them in its last pass). Lines with many lanes ``I`` go ``DOUBLING_CELLS // extent`` lanes
    at a time, so the buffer stays in cache.
    """
    lines, length, inner = src.shape
    out = dst.shape[1]
    extent = out + kernel - 1  # buffer position e of a line is input position e + start
    block = max(1, min(inner, max(LANE_BLOCK, DOUBLING_CELLS // extent)))  # lanes at a time
    group = max(1, DOUBLING_CELLS // (extent * block)) if block == inner else 1  # lines at a time
    m, n = np.empty(group * extent * block, dtype=dst.dtype), np.empty(group * extent * block, dtype=dst.dtype)
    total = np.empty(group * extent * block if kind == SUM else 0, dtype=dst.dtype)
    top = 1
    while top * 2 <= kernel:
        top *= 2
    last = top // 2 if kind == SUM else top  # the last level raised: a sum forms its top blocks as it adds them
    zero = np.full(1, identity, dtype=dst.dtype)[0]  # a sum's start, in the dtype it sums in
    low = min(max(0, -start), extent)  # buffer cells low .. high-1 are input cells, the others empty
    high = max(low, min(extent, length - start))
    cells, targets = src.reshape(-1), dst.reshape(-1)
    for a in range(0, lines, group):
        count = min(group, lines - a)
        for first in range(0, inner, block):
            width = min(block, inner - first)
            span = extent * width
            used = np.uint64(count * span)
            for line in range(count):
                at = line * span
                m[at : at + low * width] = identity
                m[at + high * width : at + span] = identity
                origin = ((a + line) * length + low + start) * inner + first
                _copy_runs(cells, origin, inner, m, at + low * width, width, high - low, width)
            size, offset = 1, 0
            while size < last:  # a line's cells past extent - size at this level mix in the next line: unused
                if kind == SUM and kernel & size:
                    _add_blocks(total, m, np.uint64(offset * width), ZERO_AT, used, offset == 0, zero)
                    offset += size
                shift = np.uint64(size * width)
                for q in range(used - shift):
                    n[q] = _combine(kind, ignore_nan, m[q], m[q + shift])
                m, n = n, m
                size *= 2
            if kind == SUM:  # the last level's digit, then the top one's blocks, each two of the last level's
                if kernel & size:
                    _add_blocks(total, m, np.uint64(offset * width), ZERO_AT, used, offset == 0, zero)
                    offset += size
                _add_blocks(total, m, np.uint64(offset * width), np.uint64(size * width), used, offset == 0, zero)
                windows = total
            else:  # a select's top block that starts with each window, then the one that ends with it
                shift = np.uint64((kernel - top) * width)
                if width == inner:  # each line's windows are one run of the targets: straight into them
                    runs = np.uint64(out * width)
                    for line in range(count):
                        put, source = np.uint64((a + line) * out * inner), np.uint64(line * span)
                        _combine_into(kind, ignore_nan, targets, put, m, source, shift, runs)
                    continue
                _combine_into(kind, ignore_nan, n, ZERO_AT, m, ZERO_AT, shift, used - shift)
                windows = n
            for line in range(count):
                into = (a + line) * out * inner + first
                _copy_runs(windows, line * span, width, targets, into, inner, out, width)


@njit(nogil=True, cache=True)
def _combine_into(kind, ignore_nan, dst, put, m, source, shift, runs):
    """``dst[put + q] = combine(m[source + q], m[source + q + shift])`` for ``q < runs``: the last pass of a
    select in :func:`_sliding_pass`, into its buffer or straight into the targets (a function of its own, as
    :func:`_add_blocks` is)."""
    for q in range(runs):
        dst[put + q] = _combine(kind, ignore_nan, m[source + q], m[source + q + shift])


@njit(nogil=True, cache=True)
def _add_blocks(total, m, at, half, used, first, identity):
    """``total[q] += m[q + at]`` (a digit's block of :func:`_sliding_pass`), or with ``half``,
    ``total[q] += m[q + at] + m[q + at + half]`` (the top block, of two blocks of the level below); the first
    digit adds to the identity instead of ``total``.

    A function of its own: inlined, it made LLVM compile the select passes
    of :func:`_sliding_pass` worse (YOLO max k=13 on 8x64 planes of 64x64:
    2.0 -> 2.7 ms).
    """
    for q in range(used - at - half):
        block = m[q + at] + m[q + at + half] if half else m[q + at]
        total[q] = (identity if first else total[q]) + block


@njit(nogil=True, cache=True, inline="always")
def _copy_runs(src, src_at, src_step, dst, dst_at, dst_step, runs, width):
    """Copy ``runs`` runs of ``width`` cells, ``src_step`` and ``dst_step`` apart (one loop where they touch)."""
    if src_step == width and dst_step == width:
        runs, width = 1, runs * width
    for r in range(runs):
        into, at = np.uint64(dst_at + r * dst_step), np.uint64(src_at + r * src_step)
        for i in range(np.uint64(width)):
            dst[into + i] = src[at + i]


@njit(nogil=True, cache=True)
def _line_adjoint(src, dst, geom, taps):
    """Transpose of a sum pass: spread ``src (A, out, I)`` over the cells of ``dst (A, L, I)``."""
    if geom[_SLIDING]:  # cell p gets the windows o with o + start <= p < o + start + kernel
        kernel = geom[_KERNEL]
        _sliding_pass(SUM, KEEP_NANS, src, dst, kernel, 1 - kernel - geom[_START], 0.0)
        return
    lines, length, inner = dst.shape
    out, stride = src.shape[1], geom[_STRIDE]
    cells, sums = src.reshape(-1), dst.reshape(-1)
    sums[:] = 0.0
    step, lanes = np.uint64(stride * inner), np.uint64(inner)
    for a in range(lines):  # flat unsigned offsets: no wraparound tests, and the lanes loop vectorises
        for j in range(geom[_KERNEL]):
            first, count = taps[j, 0], taps[j, 1] - taps[j, 0]
            at, into = np.uint64((a * out + first) * inner), np.uint64((a * length + taps[j, 2]) * inner)
            if inner == 1:
                for o in range(np.uint64(count)):
                    sums[into + step * o] += cells[at + o]
                continue
            for o in range(np.uint64(count)):
                for i in range(lanes):
                    sums[into + step * o + i] += cells[at + lanes * o + i]


# ---------------------------------------------------------------- whole planes


@njit(nogil=True, cache=True)
def _cell_values(cell, power, src, dst):
    """``dst = f(src)`` in float64: the value each input cell contributes (x, |x|, x², |x|^p)."""
    flat_src, flat_dst = src.reshape(-1), dst.reshape(-1)
    for f in range(flat_src.size):
        v = np.float64(flat_src[f])
        if cell == CELL_ABS:
            v = abs(v)
        elif cell == CELL_SQUARE:
            v = v * v
        elif cell == CELL_POWER:
            v = abs(v) ** power
        flat_dst[f] = v


@njit(nogil=True, cache=True)
def _sum_plane_rows_last(plane, geom, taps, zero, target):
    """Window sums of one channels-first plane ``(D, H*W)``, axes D, H, then W.

    Sums need no scan order, so the passes whose inner loops run along whole
    rows (D and H, vectorised) go first, and the strided pass along each row
    (W), which LLVM does not vectorise, runs last on the smallest data.
    """
    depth = plane.shape[0]
    od, oh, ow = geom[0, _OUT], geom[1, _OUT], geom[2, _OUT]
    height, width = geom[1, _SIZE], geom[2, _SIZE]
    stacks = plane.reshape(1, depth, height * width)
    along_d = stacks
    if not geom[0, _IDENTITY]:
        along_d = np.empty((1, od, height * width), dtype=target.dtype)
        _line_pass(SUM, KEEP_NANS, stacks, along_d, geom[0], taps[0], zero)
    columns = along_d.reshape(od, height, width)
    along_h = columns
    if not geom[1, _IDENTITY]:
        along_h = np.empty((od, oh, width), dtype=target.dtype)
        _line_pass(SUM, KEEP_NANS, columns, along_h, geom[1], taps[1], zero)
    rows = along_h.reshape(od * oh, width, 1)
    if geom[2, _IDENTITY]:
        target[:] = rows.reshape(-1)
    else:
        _line_pass(SUM, KEEP_NANS, rows, target.reshape(od * oh, ow, 1), geom[2], taps[2], zero)


@njit(nogil=True, cache=True)
def _plane_strips(kind, ignore_nan, plane, geom, taps, identity, target, rows_last):
    """Pool a 2-D ``plane (H, W, I)`` into the flat ``target`` a strip of output rows at a time.

    Each strip passes only the input rows its windows read, through a small
    intermediate that stays in cache: W then H (the scan order, see
    :func:`_pool_plane`), or for ``rows_last`` sums H then W (see
    :func:`_sum_plane_rows_last`). The whole plane's intermediate would go
    out to memory and back, and a fresh one per call costs page faults.
    """
    _height, width, inner = plane.shape
    oh, ow = geom[1, _OUT], geom[2, _OUT]
    reach = geom[1, _DILATION] * (geom[1, _KERNEL] - 1)  # rows a strip reads beyond its own: at most a third more
    per_strip = max(1, STRIP_CELLS // (max(ow, width // 2) * inner * geom[1, _STRIDE]), 3 * reach)
    strip_axis, strip_taps = np.empty(geom.shape[1], dtype=np.int64), np.empty((geom[1, _KERNEL], 3), dtype=np.int64)
    span = 0  # the most input rows a strip reads
    for first in range(0, oh, per_strip):
        low, high = _strip(geom[1], taps[1], first, min(first + per_strip, oh), strip_axis, strip_taps)
        span = max(span, high - low)
    buffer = np.empty(max(per_strip * width, span * ow) * inner, dtype=target.dtype)
    outputs = target.reshape(oh, ow, inner)
    for first in range(0, oh, per_strip):
        stop = min(first + per_strip, oh)
        low, high = _strip(geom[1], taps[1], first, stop, strip_axis, strip_taps)
        if rows_last:
            along_h = buffer[: (stop - first) * width * inner].reshape(stop - first, width, inner)
            columns = plane[low:high].reshape(1, high - low, width * inner)
            _line_pass(
                kind,
                ignore_nan,
                columns,
                along_h.reshape(1, stop - first, width * inner),
                strip_axis,
                strip_taps,
                identity,
            )
            _line_pass(kind, ignore_nan, along_h, outputs[first:stop], geom[2], taps[2], identity)
        else:
            along_w = buffer[: (high - low) * ow * inner].reshape(high - low, ow, inner)
            _line_pass(kind, ignore_nan, plane[low:high], along_w, geom[2], taps[2], identity)
            columns = along_w.reshape(1, high - low, ow * inner)
            _line_pass(
                kind,
                ignore_nan,
                columns,
                outputs[first:stop].reshape(1, stop - first, ow * inner),
                strip_axis,
                strip_taps,
                identity,
            )


@njit(nogil=True, cache=True)
def _strip(axis, axis_taps, first, stop, strip_axis, strip_taps):
    """Windows ``first .. stop-1`` of an axis as an axis of their own, over the input cells they read.

    Fills ``strip_axis`` (the axis's geometry row for these windows and
    cells) and ``strip_taps`` (the axis's taps restricted to these windows,
    positions counted from the strip's first cell), and returns the range
    ``low, high`` of input cells the taps read. The axis's stride, kernel and
    dilation are the strip's too.
    """
    stride = axis[_STRIDE]
    low, high = axis[_SIZE], 0
    for j in range(axis[_KERNEL]):
        out_first, out_stop = max(axis_taps[j, 0], first), min(axis_taps[j, 1], stop)
        strip_taps[j, 0], strip_taps[j, 1], strip_taps[j, 2] = 0, 0, 0
        if out_first < out_stop:
            position = axis_taps[j, 2] + (out_first - axis_taps[j, 0]) * stride
            low, high = min(low, position), max(high, position + (out_stop - 1 - out_first) * stride + 1)
            strip_taps[j, 0], strip_taps[j, 1], strip_taps[j, 2] = out_first - first, out_stop - first, position
    for j in range(axis[_KERNEL]):
        if strip_taps[j, 0] < strip_taps[j, 1]:
            strip_taps[j, 2] -= low
    strip_axis[:] = axis
    strip_axis[_SIZE], strip_axis[_OUT] = high - low, stop - first
    strip_axis[_START] = axis[_START] + first * stride - low
    return low, high


@njit(nogil=True, cache=True)
def _pool_plane(kind, ignore_nan, plane, geom, taps, identity, target, lanes):
    """Pool one ``b``: ``plane (D, H*W*I)`` into the flat ``target`` (``od*oh*ow*I``), same dtype.

    Axes go W, H, then D: rows first. Combining each window's rows before
    its columns keeps the row-major scan order of a direct scan, so a tie
    (``+0.0`` against ``-0.0``) resolves to the first cell and a NaN to the
    last, as PyTorch's scan does. Axes the Window marks as identities are
    skipped; the last pass writes straight into ``target``. With ``lanes``,
    ``I`` counts planes pooled side by side (:func:`_forward_lanes`), whose
    sums go W first too, whatever ``I``.
    """
    depth, rest = plane.shape
    od, oh, ow = geom[0, _OUT], geom[1, _OUT], geom[2, _OUT]
    height, width = geom[1, _SIZE], geom[2, _SIZE]
    inner = rest // (height * width)
    rows_last = kind == SUM and inner == 1 and not geom[2, _SLIDING] and not lanes
    # one plane in, one plane out (a D axis that pads out to more planes needs its own pass), larger than a strip
    strips = depth == 1 and od == 1 and height * max(ow, width // 2) * inner > STRIP_CELLS
    if strips and not geom[1, _IDENTITY]:
        _plane_strips(kind, ignore_nan, plane.reshape(height, width, inner), geom, taps, identity, target, rows_last)
        return
    if rows_last:
        _sum_plane_rows_last(plane, geom, taps, identity, target)
        return
    skip_h, skip_d = geom[1, _IDENTITY], geom[0, _IDENTITY]
    rows = plane.reshape(depth * height, width, inner)
    if skip_h and skip_d:
        along_w = target.reshape(depth * height, ow, inner)
    else:
        along_w = np.empty((depth * height, ow, inner), dtype=target.dtype)
    _line_pass(kind, ignore_nan, rows, along_w, geom[2], taps[2], identity)
    columns = along_w.reshape(depth, height, ow * inner)
    if skip_h:
        along_h = columns
    else:
        along_h = target.reshape(depth, oh, ow * inner) if skip_d else np.empty((depth, oh, ow * inner), target.dtype)
        _line_pass(kind, ignore_nan, columns, along_h, geom[1], taps[1], identity)
    if not skip_d:
        stacks = along_h.reshape(1, depth, oh * ow * inner)
        _line_pass(kind, ignore_nan, stacks, target.reshape(1, od, oh * ow * inner), geom[0], taps[0], identity)


@njit(nogil=True, cache=True)
def _forward_direct(start, stop, x5, out5, geom, taps, divisor, kind, ignore_nan, identity):
    """Pool ``x5[start:stop]`` (``x5`` is ``(B, D, H, W, I)``) in its own dtype; sums are then divided.

    Max and min of any dtype, and averages of float inputs (summed in their
    float type, as PyTorch does; the window sums are direct or doubling
    blocks, never long running sums).
    """
    _planes, depth, height, width, inner = x5.shape
    cells = out5.shape[1] * out5.shape[2] * out5.shape[3]
    if _as_lanes(x5.shape):
        _forward_lanes(start, stop, x5, out5, geom, taps, divisor, kind, ignore_nan, identity, 1.0)
        return
    sums = np.empty((1, cells if divisor.size else 0, inner), dtype=out5.dtype)  # one plane's sums, in cache
    scale = _plane_scale(divisor, out5.shape[1:4])
    for b in range(start, stop):
        plane = x5[b].reshape(depth, height * width * inner)
        if divisor.size:
            _pool_plane(kind, ignore_nan, plane, geom, taps, identity[0], sums.reshape(-1), PLANES)
            _finish(sums, out5[b].reshape(1, cells, inner), scale, divisor, out5.shape[1:4], 1.0)
        else:
            _pool_plane(kind, ignore_nan, plane, geom, taps, identity[0], out5[b].reshape(-1), PLANES)


@njit(nogil=True, cache=True)
def _forward_lanes(start, stop, x5, out5, geom, taps, divisor, kind, ignore_nan, identity, root):
    """:func:`_forward_direct` of small channels-first planes (:func:`_as_lanes`), ``GROUP_CELLS`` input
    cells' worth at a time, transposed so that the planes are the lanes of one plane: the passes then run
    across the planes, vectorised, instead of along rows of a few cells, and a plane costs no call of its
    own. Each plane's cells combine in the order of a channels-last plane's. Sums are divided by
    ``divisor`` (where it is not empty) and taken to ``1/root`` (where it is not 1: :func:`_finish`)."""
    _planes, depth, height, width, _inner = x5.shape
    in_cells, cells = depth * height * width, out5.shape[1] * out5.shape[2] * out5.shape[3]
    group, outs = max(1, GROUP_CELLS // in_cells), out5.shape[1:4]
    scale, finished = _plane_scale(divisor, outs), divisor.size > 0 or root != 1.0
    lanes = np.empty(in_cells * group, dtype=x5.dtype)
    pooled = np.empty(cells * group, dtype=x5.dtype)
    results = np.empty(cells * group if finished else 0, dtype=out5.dtype)
    for first in range(start, stop, group):
        count = min(group, stop - first)
        plane = lanes[: in_cells * count].reshape(in_cells, count)
        _transpose(x5[first : first + count].reshape(count, in_cells), plane)
        windows = pooled[: cells * count]
        lines = plane.reshape(depth, height * width * count)
        _pool_plane(kind, ignore_nan, lines, geom, taps, identity[0], windows, LANES)
        target = out5[first : first + count].reshape(count, cells)
        if finished:
            result = results[: cells * count].reshape(cells, count)
            _finish(windows.reshape(1, cells, count), result.reshape(1, cells, count), scale, divisor, outs, root)
            _transpose(result, target)
        else:
            _transpose(windows.reshape(cells, count), target)


@njit(nogil=True, cache=True, inline="always")
def _plane_scale(divisor, outs):
    """The scale of each window of one plane, ``(od*oh*ow,)`` for ``outs = (od, oh, ow)``, row by row
    (:func:`_row_scale`). Empty for a plane of more than ``SCALE_CELLS`` windows, which :func:`_finish`
    divides row by row: the table is never larger than a small plane.

    Kernels form it once per call, for all their planes (see :func:`_finish`).
    """
    od, oh, ow = outs[0], outs[1], outs[2]
    scale = np.empty(od * oh * ow if od * oh * ow <= SCALE_CELLS else 0)
    for z in range(od if scale.size else 0):
        for y in range(oh):
            at = (z * oh + y) * ow
            _row_scale(divisor, z, y, scale[at : at + ow])
    return scale


@njit(nogil=True, cache=True, inline="always")
def _row_scale(divisor, z, y, row):
    """The scales of windows ``(z, y, 0 .. ow-1)`` into ``row``: the product of their factors in ``divisor``,
    the ``(3, M)`` table of per-axis factors (D, H, W), or one where ``divisor`` is empty (sums that are
    not divided)."""
    if divisor.size == 0:
        row[:] = 1.0
        return
    across = divisor[0, z] * divisor[1, y]
    for x in range(row.size):
        row[x] = across * divisor[2, x]


@njit(nogil=True, cache=True, error_model="numpy")
def _finish(windows, target, scale, divisor, outs, root):
    """``target = (windows / scale) ** (1/root)`` for windows ``(B, od*oh*ow, I)``: the finish step of a sum.

    ``scale`` is :func:`_plane_scale` of ``divisor`` and ``outs``: one value
    per window of a small plane; empty for a large one, whose scales are
    formed a row at a time (:func:`_row_scale`). ``target`` is not
    ``windows``: LLVM does not vectorise a loop whose store may overlap its
    loads. Channels-first windows are finished along each plane's windows
    (or rows), or along the planes where a plane has one window (global
    pooling); channels-last ones along the lanes. It compiles with NumPy's
    error model: under Python's, every division tests its divisor for zero
    and raises, which keeps LLVM from vectorising the divisions (twice the
    time). No scale is zero: each factor counts cells or is a divisor
    override the Window has checked. A function of its own, not inlined:
    each pair of dtypes compiles it once for all the kernels that sum.
    """
    planes, cells, inner = windows.shape
    sums, results = windows.reshape(-1), target.reshape(-1)
    if cells * inner == 1:
        for b in range(np.uint64(planes)):
            results[b] = _rooted(sums[b] / scale[0], root)
    elif scale.size:
        for b in range(planes):
            _finish_run(sums, results, b * cells * inner, scale, inner, root)
    else:
        od, oh, ow = outs[0], outs[1], outs[2]
        row = np.empty(ow)
        for b in range(planes):
            for z in range(od):
                for y in range(oh):
                    _row_scale(divisor, z, y, row)
                    _finish_run(sums, results, ((b * od + z) * oh + y) * ow * inner, row, inner, root)


@njit(nogil=True, cache=True, error_model="numpy")
def _finish_run(sums, results, at, scale, inner, root):
    """:func:`_finish` of the ``scale.size`` windows of ``inner`` lanes each that start at flat ``at``.

    A function of its own: inlined at both call sites of :func:`_finish`,
    LLVM left the row-by-row loop scalar (the finish of a 1952² plane took
    5.2 ms, against 2.5 ms).
    """
    first = np.uint64(at)
    if inner == 1:  # one loop along the windows, vectorised
        for c in range(np.uint64(scale.size)):
            results[first + c] = _rooted(sums[first + c] / scale[c], root)
        return
    for c in range(scale.size):
        put, by = first + np.uint64(c * inner), scale[c]
        for i in range(np.uint64(inner)):
            results[put + i] = _rooted(sums[put + i] / by, root)


@njit(nogil=True, cache=True, inline="always")
def _rooted(v, root):
    """``v ** (1/root)``: the root of an Lp sum (``root`` 1 for averages)."""
    if root == 2.0:
        return np.sqrt(v)
    if root != 1.0:
        return v ** (1.0 / root)
    return v


@njit(nogil=True, cache=True)
def _forward_sum(start, stop, x5, out5, geom, taps, divisor, cell, power, root):
    """Sums of cell values of ``x5[start:stop]`` in float64, divided by ``divisor`` (if any), to ``1/root``."""
    _planes, depth, height, width, inner = x5.shape
    cells = out5.shape[1] * out5.shape[2] * out5.shape[3]
    if _as_lanes(x5.shape):  # the cell values of a group of planes, then pooled as lanes
        group = max(1, GROUP_CELLS // (depth * height * width))
        values = np.empty((group, depth, height, width, 1), dtype=np.float64)
        for first in range(start, stop, group):
            count = min(group, stop - first)
            _cell_values(cell, power, x5[first : first + count], values[:count])
            chunk = out5[first : first + count]
            _forward_lanes(ZERO, count, values[:count], chunk, geom, taps, divisor, SUM, KEEP_NANS, np.zeros(1), root)
        return
    sums = np.empty((1, cells, inner), dtype=np.float64)
    values = np.empty((depth, height * width * inner), dtype=np.float64)
    scale = _plane_scale(divisor, out5.shape[1:4])
    for b in range(start, stop):
        _cell_values(cell, power, x5[b].reshape(depth, height * width * inner), values)
        _pool_plane(SUM, KEEP_NANS, values, geom, taps, 0.0, sums.reshape(-1), PLANES)
        _finish(sums, out5[b].reshape(1, cells, inner), scale, divisor, out5.shape[1:4], root)


@njit(nogil=True, cache=True)
def _forward_indices(start, stop, x5, out5, geom, taps, idx5, origin, kind, ignore_nan, identity):
    """Selects with indices: each window scanned in row-major order (first maximum, last NaN).

    An index is ``origin`` plus the cell's row-major position in ``x5``'s
    spatial axes: ``origin`` places a band of a plane (see :func:`_bands`).
    The lanes of a window (``I``) are scanned side by side, vectorised;
    small channels-first planes are transposed to be such lanes
    (:func:`_as_lanes`). Larger channels-first planes, one lane, are pooled
    as without indices and each window's index is then found by
    :func:`_winners` (a scan with indices along a row is a chain of
    dependent scalar steps: 85 ms against 53 ms for the ResNet stem).
    """
    _planes, depth, height, width, inner = x5.shape
    if _as_lanes(x5.shape):
        in_cells, out_cells = depth * height * width, out5.shape[1] * out5.shape[2] * out5.shape[3]
        group = max(1, GROUP_CELLS // in_cells)
        cells = np.empty(in_cells * group, dtype=x5.dtype)
        values, places = np.empty(out_cells * group, dtype=out5.dtype), np.empty(out_cells * group, dtype=np.int64)
        for first in range(start, stop, group):
            count = min(group, stop - first)
            lanes = cells[: in_cells * count].reshape(in_cells, count)
            _transpose(x5[first : first + count].reshape(count, in_cells), lanes)
            best = values[: out_cells * count].reshape(out_cells, count)
            where = places[: out_cells * count].reshape(out_cells, count)
            _scan_windows(
                lanes.reshape(1, depth, height, width, count), best, where, geom, taps, origin, kind, ignore_nan
            )
            _transpose(best, out5[first : first + count].reshape(count, out_cells))
            _transpose(where, idx5[first : first + count].reshape(count, out_cells))
        return
    for b in range(start, stop):
        best, where = out5[b].reshape(-1, inner), idx5[b].reshape(-1, inner)
        if inner > 1:
            _scan_windows(x5[b : b + 1], best, where, geom, taps, origin, kind, ignore_nan)
            continue
        plane, results = x5[b].reshape(depth, height * width), best.reshape(-1)
        _pool_plane(kind, ignore_nan, plane, geom, taps, identity[0], results, PLANES)
        _winners(x5[b].reshape(-1), results, where.reshape(-1), geom, taps, origin, ignore_nan)


@njit(nogil=True, cache=True)
def _winners(cells, best, where, geom, taps, origin, ignore_nan):
    """``where`` of each window of one channels-first plane whose selects ``best`` are known (see
    :func:`_forward_indices`): the first of its cells equal to its select; for a NaN, the last NaN
    (``nan="propagate"``) or the first cell (``"ignore"``: all its cells are NaN)."""
    od, oh, ow = geom[0, _OUT], geom[1, _OUT], geom[2, _OUT]
    found = np.empty(geom[0, _KERNEL] * geom[1, _KERNEL] * geom[2, _KERNEL], dtype=np.int64)
    for zo in range(od):
        for yo in range(oh):
            for xo in range(ow):
                window = (zo * oh + yo) * ow + xo
                count = _window_cells(geom, taps, zo, yo, xo, found)
                result, last = best[window], found[0]
                for m in range(count):
                    v = cells[found[m]]
                    if v == result or (result != result and ignore_nan):
                        last = found[m]
                        break
                    if v != v:
                        last = found[m]
                where[window] = origin + last


@njit(nogil=True, cache=True, inline="always")
def _window_cells(geom, taps, zo, yo, xo, found):
    """The row-major positions of the cells of window ``(zo, yo, xo)`` inside the plane, in the scan's
    order, into ``found``; returns how many (at least one: a window of padding only is refused)."""
    height, width, count = geom[1, _SIZE], geom[2, _SIZE], 0
    for jd in range(geom[0, _KERNEL]):
        if not taps[0, jd, 0] <= zo < taps[0, jd, 1]:
            continue
        z = taps[0, jd, 2] + (zo - taps[0, jd, 0]) * geom[0, _STRIDE]
        for jh in range(geom[1, _KERNEL]):
            if not taps[1, jh, 0] <= yo < taps[1, jh, 1]:
                continue
            y = taps[1, jh, 2] + (yo - taps[1, jh, 0]) * geom[1, _STRIDE]
            for jw in range(geom[2, _KERNEL]):
                if taps[2, jw, 0] <= xo < taps[2, jw, 1]:
                    found[count] = (z * height + y) * width + taps[2, jw, 2] + (xo - taps[2, jw, 0]) * geom[2, _STRIDE]
                    count += 1
    return count


@njit(nogil=True, cache=True)
def _scan_windows(plane, best, where, geom, taps, origin, kind, ignore_nan):
    """:func:`_forward_indices` of one ``plane (1, D, H, W, I)`` into ``best`` and ``where`` ``(od*oh*ow, I)``:
    the cells of each window in row-major order, each over all lanes."""
    inner = plane.shape[4]
    od, oh, ow = geom[0, _OUT], geom[1, _OUT], geom[2, _OUT]
    cells, kept, spots, lanes = plane.reshape(-1), best.reshape(-1), where.reshape(-1), np.uint64(inner)
    found = np.empty(geom[0, _KERNEL] * geom[1, _KERNEL] * geom[2, _KERNEL], dtype=np.int64)
    for zo in range(od):
        for yo in range(oh):
            for xo in range(ow):
                put = np.uint64(((zo * oh + yo) * ow + xo) * inner)
                count = _window_cells(geom, taps, zo, yo, xo, found)
                at, place = np.uint64(found[0] * inner), origin + found[0]
                for i in range(lanes):
                    kept[put + i] = cells[at + i]
                    spots[put + i] = place
                for m in range(1, count):
                    at, place = np.uint64(found[m] * inner), origin + found[m]
                    for i in range(lanes):
                        v = cells[at + i]
                        takes = _takes(kind, ignore_nan, kept[put + i], v)
                        kept[put + i] = v if takes else kept[put + i]
                        spots[put + i] = place if takes else spots[put + i]


@njit(nogil=True, cache=True)
def _scatter(start, stop, dy3, idx3, dx3):
    """``dx3[b, idx3[b, q, i], i] += dy3[b, q, i]`` for every window of planes ``start:stop``, in order."""
    _planes, cells, inner = dy3.shape
    for b in range(start, stop):
        dx3[b, :, :] = 0
        for q in range(cells):
            for i in range(inner):
                dx3[b, idx3[b, q, i], i] += dy3[b, q, i]


@njit(nogil=True, cache=True)
def _spread(start, stop, grad5, dx5, local5, divisor, geom, taps):
    """Backward of sums over planes ``start:stop``: each window's gradient to its real cells, times ``local5``.

    ``grad5`` is the gradient before the division by ``divisor`` (see
    :func:`_finish`); each plane is divided into a float64 buffer first.
    """
    _planes, depth, height, width, inner = dx5.shape
    od, oh, ow = geom[0, _OUT], geom[1, _OUT], geom[2, _OUT]
    scaled = np.empty((1, od * oh * ow, inner), dtype=np.float64)
    along_d = np.empty((1, depth, oh * ow * inner), dtype=np.float64)
    along_h = np.empty((depth, height, ow * inner), dtype=np.float64)
    along_w = np.empty((depth * height, width, inner), dtype=np.float64)
    scale = _plane_scale(divisor, (od, oh, ow))
    for b in range(start, stop):
        _finish(grad5[b].reshape(scaled.shape), scaled, scale, divisor, (od, oh, ow), 1.0)
        stacks = scaled.reshape(1, od, oh * ow * inner)
        if not geom[0, _IDENTITY]:
            _line_adjoint(stacks, along_d, geom[0], taps[0])
        columns = (stacks if geom[0, _IDENTITY] else along_d).reshape(depth, oh, ow * inner)
        if not geom[1, _IDENTITY]:
            _line_adjoint(columns, along_h, geom[1], taps[1])
        lines = (columns if geom[1, _IDENTITY] else along_h).reshape(depth * height, ow, inner)
        _line_adjoint(lines, along_w, geom[2], taps[2])
        _scale_into(along_w.reshape(-1), dx5[b].reshape(-1), local5, b)


@njit(nogil=True, cache=True, inline="always")
def _scale_into(result, target, local5, b):
    """``target = result * local5[b]`` (flat), or ``result`` itself where ``local5`` is empty (the local gradient 1)."""
    if local5.size:
        scale = local5[b].reshape(-1)
        for f in range(result.size):
            target[f] = result[f] * scale[f]
    else:
        for f in range(result.size):
            target[f] = result[f]


@njit(nogil=True, cache=True)
def _spread_lanes(start, stop, grad5, dx5, local5, divisor, first_table, second_table):
    """:func:`_spread` (window tables) or :func:`_bins_spread` (bins tables) of small channels-first planes
    (:func:`_as_lanes`), ``GROUP_CELLS`` cells' worth at a time, transposed so that the planes are the
    lanes of one plane (as :func:`_forward_lanes` does forward)."""
    _spread_in_lanes(start, stop, grad5, dx5, local5, divisor, first_table, second_table)


def _spread_in_lanes(start, stop, grad5, dx5, local5, divisor, first_table, second_table):
    """The body of :func:`_spread_lanes`, compiled through the overload below for the spread its tables
    name (a spread passed as an argument would be compiled anew in every process: Numba does not cache
    functions that take functions)."""


@overload(_spread_in_lanes, jit_options={"nogil": True})
def _compile_spread_in_lanes(start, stop, grad5, dx5, local5, divisor, first_table, second_table):
    spread = _bins_spread if second_table.ndim == 1 else _spread  # bins: (bounds, outs); windows: (geom, taps)

    def in_lanes(start, stop, grad5, dx5, local5, divisor, first_table, second_table):
        _planes, depth, height, width, _inner = dx5.shape
        od, oh, ow = grad5.shape[1], grad5.shape[2], grad5.shape[3]
        in_cells, out_cells = depth * height * width, od * oh * ow
        group = max(1, GROUP_CELLS // in_cells)
        grads = np.empty(out_cells * group, dtype=grad5.dtype)
        cells = np.empty(in_cells * group, dtype=dx5.dtype)
        factors = np.empty(in_cells * group if local5.size else 0, dtype=local5.dtype)
        for first in range(start, stop, group):
            count = min(group, stop - first)
            grad = grads[: out_cells * count].reshape(out_cells, count)
            _transpose(grad5[first : first + count].reshape(count, out_cells), grad)
            local = factors[: in_cells * count if local5.size else 0]
            if local5.size:
                _transpose(local5[first : first + count].reshape(count, in_cells), local.reshape(in_cells, count))
            lanes = cells[: in_cells * count].reshape(1, depth, height, width, count)
            local_lanes = local.reshape(1 if local5.size else 0, depth, height, width, count)
            windows = grad.reshape(1, od, oh, ow, count)
            spread(ZERO, ONE, windows, lanes, local_lanes, divisor, first_table, second_table)
            _transpose(lanes.reshape(in_cells, count), dx5[first : first + count].reshape(count, in_cells))

    return in_lanes


# ---------------------------------------------------------------- adaptive and global bins


GROUP_CELLS = 1 << 15  # bins kernels pool this many input cells' planes at a time (intermediates stay in cache)
SERIAL_CELLS = 1 << 15  # calls on fewer cells run on the calling thread (see _launch)
LANE_CELLS = 1024  # channels-first planes of at most this many cells, in rows of at most LANE_ROW, are
LANE_ROW = 32  # pooled with the planes as lanes (see _as_lanes)
TRANSPOSE_ROWS = 16  # rows of a block in _transpose
SCALE_CELLS = 4096  # sums of planes of at most this many windows are divided by a table of scales (_plane_scale)
STRIP_CELLS = 1 << 14  # 2-D planes are pooled in strips of about this many intermediate cells (see _plane_strips)
DOUBLING_CELLS = 1 << 14  # a sliding pass over many lanes takes about this many buffer cells at a time
LANE_BLOCK = 64  # ... but at least this many lanes, enough to fill the vector registers
FUSED_KERNEL = 4  # windows of 2 to this many adjacent taps combine all their cells in one loop (see _fuses)
BITWISE_RUN = 16  # float selects over runs of at least this many cells take integer maxima (_select_lines_by_bits)
# LANE_*, STRIP_CELLS, DOUBLING_CELLS, FUSED_KERNEL and BITWISE_RUN are read when a kernel compiles (and kept in
# its disk cache); SERIAL_CELLS and GROUP_CELLS are read on every call.


@njit(nogil=True, cache=True, inline="always")
def _select_run(kind, ignore_nan, row, first, stop):
    """The cell a scan of the non-empty ``row[first:stop]`` keeps: the first best, or the rule's NaN.

    The scan starts from the first cell, so that a run of NaNs alone keeps
    its first NaN (sign and payload), as the reference does under
    ``nan="ignore"``.
    """
    acc = row[first]
    for q in range(first + 1, stop):
        acc = _combine(kind, ignore_nan, acc, row[q])
    return acc


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def _sum_lines(rows, targets, bounds):
    """``targets[a, o] = sum(rows[a, bounds[o, 0] : bounds[o, 1]])`` for C-contiguous ``rows``.

    The one kernel compiled with a fast-math flag: ``reassoc`` alone, which
    lets LLVM split each sum over vector lanes (without it a running sum is
    one long chain of dependent additions). NaN and infinity still propagate
    (no ``nnan`` / ``ninf``), and signed zeros keep IEEE rules (no ``nsz``).
    The cells are addressed by unsigned offsets into the flat rows, so that no
    negative-index wraparound test stands in the loop.
    """
    flat = rows.reshape(-1)
    length = rows.shape[1]
    for a in range(rows.shape[0]):
        for o in range(targets.shape[1]):
            acc = 0.0
            first = np.uint64(a * length + bounds[o, 0])
            for q in range(np.uint64(bounds[o, 1] - bounds[o, 0])):
                acc += flat[first + q]
            targets[a, o] = acc


def _select_lines(kind, ignore_nan, rows, targets, bounds):
    """``targets[a, o] = select(rows[a, bounds[o, 0] : bounds[o, 1]])``; compiled through the overload below.

    A kernel of its own, called with a literal ``ignore_nan``: inside a
    larger function LLVM keeps the flag's and the kind's tests in the loop,
    which costs a factor of three or four.
    """
    for a in range(rows.shape[0]):
        for o in range(targets.shape[1]):
            targets[a, o] = _select_run(kind, ignore_nan, rows[a], bounds[o, 0], bounds[o, 1])


@overload(_select_lines, jit_options={"nogil": True})
def _compile_select_lines(kind, ignore_nan, rows, targets, bounds):
    """Float rows select by the integer maxima of their bits (:func:`_select_lines_by_bits`); other dtypes scan
    directly."""
    bits = {32: np.int32, 64: np.int64}.get(getattr(rows.dtype, "bitwidth", 0))
    if isinstance(rows.dtype, types.Float) and bits is not None and rows.layout == "C":
        return _select_lines_by_bits(bits)
    return _select_lines


def _select_lines_by_bits(bits):
    """:func:`_select_lines` for floats whose bit patterns read as the signed integer type ``bits``.

    A float's bits order as a signed integer among the floats ``>= +0``,
    and as an unsigned one among those ``<= -0`` (the larger, the more
    negative). Runs of at least ``BITWISE_RUN`` cells take both integer
    maxima, which vectorise where the float select rule does not: a maximum
    above ``+0`` is the signed one, a minimum below ``-0`` the unsigned one,
    and a NaN shows as a signed maximum above ``+inf`` or an unsigned one
    above ``-inf``. Every other run (a NaN in it, a zero result, where
    ``-0`` and ``+0`` tie and the first one seen must win, or a maximum of
    negative cells only, a minimum of non-negative ones) is scanned again by
    the exact rule. The bits of a result are those of a cell of the run.
    """
    unsigned = {np.int32: np.uint32, np.int64: np.uint64}[bits]
    width = np.dtype(bits).itemsize * 8
    lowest, negative_zero = bits(np.iinfo(bits).min), unsigned(1 << (width - 1))
    infinity = np.array([np.inf, -np.inf], dtype=np.float32 if width == 32 else np.float64)
    top, bottom = infinity[:1].view(bits)[0], infinity[1:].view(unsigned)[0]  # the bits of +inf and -inf

    def by_bits(kind, ignore_nan, rows, targets, bounds):
        signed, raw = rows.view(bits).reshape(-1), rows.view(unsigned).reshape(-1)
        length = rows.shape[1]
        scratch = np.empty(1, dtype=unsigned)
        value = scratch.view(rows.dtype)
        for a in range(rows.shape[0]):
            for o in range(targets.shape[1]):
                first, stop = bounds[o, 0], bounds[o, 1]
                exact = stop - first < BITWISE_RUN
                if not exact:
                    high, beyond = lowest, unsigned(0)
                    offset = np.uint64(a * length + first)  # unsigned: no negative-index test in the loop
                    for q in range(np.uint64(stop - first)):
                        high = max(high, signed[offset + q])
                        beyond = max(beyond, raw[offset + q])
                    found = high > 0 if kind == MAX else beyond > negative_zero
                    exact = high > top or beyond > bottom or not found
                    scratch[0] = unsigned(high) if kind == MAX else beyond
                if exact:
                    targets[a, o] = _select_run(kind, ignore_nan, rows[a], first, stop)
                else:
                    targets[a, o] = value[0]

    return by_bits


@njit(nogil=True, cache=True)
def _bins_line(kind, ignore_nan, src, dst, bounds):
    """``dst[a, o] = combine(src[a, bounds[o, 0] : bounds[o, 1]])`` for lines ``src (A, L, I)``.

    ``dst`` may be wider than ``src``: float64 sums of float32 cells.
    """
    lines, length, inner = src.shape
    out = dst.shape[1]
    if inner == 1:
        rows, targets = src.reshape(lines, length), dst.reshape(lines, out)
        if kind == SUM:
            _sum_lines(rows, targets, bounds)
        elif ignore_nan:
            _select_lines(kind, True, rows, targets, bounds)
        else:
            _select_lines(kind, False, rows, targets, bounds)
    elif ignore_nan:
        _combine_lanes(kind, True, src, dst, bounds)
    else:  # sums too: one compiled function with the selects that keep NaNs
        _combine_lanes(kind, False, src, dst, bounds)


@njit(nogil=True, cache=True)
def _combine_lanes(kind, ignore_nan, src, dst, bounds):
    """``dst[a, o, i] = combine(src[a, bounds[o, 0] : bounds[o, 1], i])``: independent lanes ``i``, vectorised.

    Called with literal flags, as :func:`_select_lines` is. Never in place:
    each step writes the target row or a spare row, by turns and the target
    last, from the other one. Written in place with flat unsigned offsets,
    LLVM turns the select ``t[i] = v if c else t[i]`` into a masked store,
    which this machine's AMD cores run several times slower than a plain
    one (adaptive max 7x7 to 3x3 on 16x2048 planes: 2.1 ms, now 1.0 ms).
    """
    length, out, inner = src.shape[1], dst.shape[1], src.shape[2]
    cells, targets = src.reshape(-1), dst.reshape(-1)
    spare = np.empty(inner, dtype=dst.dtype)
    for a in range(src.shape[0]):
        for o in range(out):
            into, first, stop = (a * out + o) * inner, bounds[o, 0], bounds[o, 1]  # never empty; see _select_run
            head, head_at = (targets, into) if (stop - first) % 2 == 1 else (spare, 0)
            _copy_runs(cells, (a * length + first) * inner, inner, head, head_at, inner, 1, inner)
            for p in range(first + 1, stop):
                last_turn = (stop - p) % 2 == 1
                prior, prior_at = (spare, 0) if last_turn else (targets, into)
                write, write_at = (targets, into) if last_turn else (spare, 0)
                at, read, put = np.uint64((a * length + p) * inner), np.uint64(prior_at), np.uint64(write_at)
                for i in range(np.uint64(inner)):
                    write[put + i] = _combine(kind, ignore_nan, prior[read + i], cells[at + i])


@njit(nogil=True, cache=True)
def _bins_group(kind, ignore_nan, group, bounds, outs, target):
    """Reduce the planes ``group (G, D, H, W, I)`` bin by bin into ``target (G, od, oh, ow, I)``.

    Small channels-first planes (``I == 1``, at most ``LANE_CELLS`` cells in
    rows of at most ``LANE_ROW``) are transposed so that the ``G`` planes
    become the lanes of one plane: the passes then run along the planes,
    vectorised, instead of along rows of a few cells. Each plane's cells are
    combined in the same order either way.
    """
    planes, depth, height, width, _inner = group.shape
    cells = depth * height * width
    if planes == 1 or not _as_lanes(group.shape):
        _bins_passes(kind, ignore_nan, group, bounds, outs, target)
        return
    lanes = np.empty((cells, planes), dtype=group.dtype)
    _transpose(group.reshape(planes, cells), lanes)
    pooled = np.empty((outs[0] * outs[1] * outs[2], planes), dtype=target.dtype)
    _bins_passes(
        kind,
        ignore_nan,
        lanes.reshape(1, depth, height, width, planes),
        bounds,
        outs,
        pooled.reshape(1, outs[0], outs[1], outs[2], planes),
    )
    _transpose(pooled, target.reshape(planes, pooled.shape[0]))


@njit(nogil=True, cache=True, inline="always")
def _as_lanes(shape):
    """Whether planes of the five-axis ``shape`` are pooled many at a time as the lanes of one plane: small
    channels-first planes, of at most ``LANE_CELLS`` cells in rows of at most ``LANE_ROW``."""
    return shape[4] == 1 and shape[1] * shape[2] * shape[3] <= LANE_CELLS and shape[3] <= LANE_ROW


@njit(nogil=True, cache=True)
def _transpose(src, dst):
    """``dst[c, r] = src[r, c]``, ``TRANSPOSE_ROWS`` rows of ``src`` at a time: each column of a block is
    then a short run of ``dst``, and a block's rows stay in cache while its columns are read."""
    rows, columns = src.shape
    whole = rows - rows % TRANSPOSE_ROWS
    for first in range(0, whole, TRANSPOSE_ROWS):
        for c in range(columns):
            for r in range(TRANSPOSE_ROWS):
                dst[c, first + r] = src[first + r, c]
    for c in range(columns):
        for r in range(whole, rows):
            dst[c, r] = src[r, c]


@njit(nogil=True, cache=True)
def _bins_passes(kind, ignore_nan, group, bounds, outs, target):
    """:func:`_bins_group`'s passes: axes W, H, then D over all ``G`` planes at once.

    Rows go first so that ties resolve as in a row-major scan (as in
    :func:`_pool_plane`); an axis of one bin per cell is skipped, and the
    last pass writes into ``target``. Selects over channels-first rows that
    are also reduced along H or D go the other way round
    (:func:`_bins_columns_first`).
    """
    planes, depth, height, width, inner = group.shape
    od, oh, ow = outs[0], outs[1], outs[2]
    if kind != SUM and inner == 1 and ow != width and (oh != height or od != depth):
        _bins_columns_first(kind, ignore_nan, group, bounds, outs, target)
        return
    last = 0 if od != depth else (1 if oh != height else 2)
    if ow == width:
        along_w = group.reshape(planes * depth * height, width, inner).astype(target.dtype)
    else:
        if last == 2:
            along_w = target.reshape(planes * depth * height, ow, inner)
        else:
            along_w = np.empty((planes * depth * height, ow, inner), dtype=target.dtype)
        _bins_line(kind, ignore_nan, group.reshape(planes * depth * height, width, inner), along_w, bounds[2])
    if last == 2:
        if ow == width:
            target.reshape(along_w.shape)[:] = along_w
        return
    along_h = along_w.reshape(planes * depth, height, ow * inner)
    if oh != height:
        if last == 1:
            along_h = target.reshape(planes * depth, oh, ow * inner)
        else:
            along_h = np.empty((planes * depth, oh, ow * inner), dtype=target.dtype)
        _bins_line(kind, ignore_nan, along_w.reshape(planes * depth, height, ow * inner), along_h, bounds[1])
    if last == 1:
        return
    stacks = along_h.reshape(planes, depth, oh * ow * inner)
    _bins_line(kind, ignore_nan, stacks, target.reshape(planes, od, oh * ow * inner), bounds[0])


@njit(nogil=True, cache=True)
def _bins_columns_first(kind, ignore_nan, group, bounds, outs, target):
    """Selects over channels-first planes ``group (G, D, H, W, 1)``: axes H, then D, then W, then ties settled.

    Along H and D the passes combine whole rows, vectorised across W; the
    runs along W that are left are ``od*oh`` rows instead of ``D*H``
    (adaptive max 112x112 to 5x5: 5 rows of a plane where W first scans
    112). A bin's result does not depend on the order its cells are
    combined in, unless it is a zero (``-0`` and ``+0`` tie, and the first
    one in row-major order must win) or a NaN (whose payload the order
    picks): those bins are scanned again in row-major order
    (:func:`_settle`).
    """
    planes, depth, height, width, _inner = group.shape
    od, oh, ow = outs[0], outs[1], outs[2]
    rows = group.reshape(planes * depth, height, width)
    along_h = rows
    if oh != height:
        along_h = np.empty((planes * depth, oh, width), dtype=group.dtype)
        _bins_line(kind, ignore_nan, rows, along_h, bounds[1])
    along_d = along_h.reshape(planes, depth, oh * width)
    if od != depth:
        along_d = np.empty((planes, od, oh * width), dtype=group.dtype)
        _bins_line(kind, ignore_nan, along_h.reshape(planes, depth, oh * width), along_d, bounds[0])
    lines = along_d.reshape(planes * od * oh, width, 1)
    _bins_line(kind, ignore_nan, lines, target.reshape(planes * od * oh, ow, 1), bounds[2])
    _settle(kind, ignore_nan, group, bounds, outs, target)


@njit(nogil=True, cache=True)
def _settle(kind, ignore_nan, group, bounds, outs, target):
    """Bins of ``target`` whose select is a zero or a NaN, scanned again in row-major order (see
    :func:`_bins_columns_first`): a zero is the bin's first cell equal to zero, a NaN the rule's
    (:func:`_scan_bin`)."""
    for b in range(group.shape[0]):
        for zo in range(outs[0]):
            for yo in range(outs[1]):
                for xo in range(outs[2]):
                    v = target[b, zo, yo, xo, 0]
                    if v == 0:
                        target[b, zo, yo, xo, 0] = _first_zero(group[b], bounds, zo, yo, xo)
                    elif v != v:
                        target[b, zo, yo, xo, 0] = _scan_bin(kind, ignore_nan, group[b], bounds, zo, yo, xo, 0)[0]


@njit(nogil=True, cache=True)
def _first_zero(plane, bounds, zo, yo, xo):
    """The first cell of bin ``(zo, yo, xo)`` of ``plane (D, H, W, 1)``, in row-major order, equal to zero."""
    for z in range(bounds[0, zo, 0], bounds[0, zo, 1]):
        for y in range(bounds[1, yo, 0], bounds[1, yo, 1]):
            for x in range(bounds[2, xo, 0], bounds[2, xo, 1]):
                if plane[z, y, x, 0] == 0:
                    return plane[z, y, x, 0]
    return plane[0, 0, 0, 0] * 0  # not reached: a zero select is one of the bin's cells


@njit(nogil=True, cache=True)
def _scan_bin(kind, ignore_nan, plane, bounds, zo, yo, xo, i):
    """The select of bin ``(zo, yo, xo)`` of lane ``i`` of ``plane (D, H, W, I)`` and its row-major index,
    scanned in row-major order (first maximum, last NaN)."""
    height, width = plane.shape[1], plane.shape[2]
    best = plane[bounds[0, zo, 0], bounds[1, yo, 0], bounds[2, xo, 0], i]
    where = -1
    for z in range(bounds[0, zo, 0], bounds[0, zo, 1]):
        for y in range(bounds[1, yo, 0], bounds[1, yo, 1]):
            for x in range(bounds[2, xo, 0], bounds[2, xo, 1]):
                v = plane[z, y, x, i]
                if where < 0 or _takes(kind, ignore_nan, best, v):
                    best = v
                    where = (z * height + y) * width + x
    return best, where


@njit(nogil=True, cache=True)
def _bins_select(start, stop, kind, ignore_nan, x5, out5, bounds, outs, group):
    """Max or min over the bins of planes ``start:stop``, values only, in the input's dtype."""
    for first in range(start, stop, group):
        last = min(first + group, stop)
        _bins_group(kind, ignore_nan, x5[first:last], bounds, outs, out5[first:last])


@njit(nogil=True, cache=True)
def _bins_sum(start, stop, cell, power, x5, out5, bounds, outs, divisor, root, group):
    """Sums of cell values over the bins of planes ``start:stop`` in float64, divided, to ``1/root``."""
    _planes, depth, height, width, inner = x5.shape
    cells = outs[0] * outs[1] * outs[2]
    sums = np.empty((group, outs[0], outs[1], outs[2], inner), dtype=np.float64)
    values = np.empty((group if cell != CELL_FLOAT else 0, depth, height, width, inner), dtype=np.float64)
    scale = _plane_scale(divisor, outs)
    for first in range(start, stop, group):
        last = min(first + group, stop)
        count = last - first
        if cell == CELL_FLOAT:
            _bins_group(SUM, KEEP_NANS, x5[first:last], bounds, outs, sums[:count])
        else:
            _cell_values(cell, power, x5[first:last], values[:count])
            _bins_group(SUM, KEEP_NANS, values[:count], bounds, outs, sums[:count])
        finished = out5[first:last].reshape(count, cells, inner)
        _finish(sums[:count].reshape(count, cells, inner), finished, scale, divisor, outs, root)


@njit(nogil=True, cache=True)
def _bins_indices(start, stop, kind, ignore_nan, x5, out5, idx5, bounds, outs):
    """Selects with indices: each bin scanned in row-major order (first maximum, last NaN)."""
    inner = x5.shape[4]
    for b in range(start, stop):
        for zo in range(outs[0]):
            for yo in range(outs[1]):
                for xo in range(outs[2]):
                    for i in range(inner):
                        out5[b, zo, yo, xo, i], idx5[b, zo, yo, xo, i] = _scan_bin(
                            kind, ignore_nan, x5[b], bounds, zo, yo, xo, i
                        )


@njit(nogil=True, cache=True)
def _bins_adjoint(src, dst, bounds):
    """Transpose of a bins sum pass: add ``src[a, o]`` to every cell of bin ``o`` in ``dst (A, L, I)``."""
    lines, inner = dst.shape[0], dst.shape[2]
    dst[:, :, :] = 0.0
    for a in range(lines):
        for o in range(src.shape[1]):
            for p in range(bounds[o, 0], bounds[o, 1]):
                for i in range(inner):
                    dst[a, p, i] += src[a, o, i]


@njit(nogil=True, cache=True)
def _bins_spread(start, stop, grad5, dx5, local5, divisor, bounds, outs):
    """Backward of bin sums over planes ``start:stop``: as :func:`_spread`, each bin's gradient to its cells."""
    _planes, depth, height, width, inner = dx5.shape
    od, oh, ow = outs[0], outs[1], outs[2]
    scaled = np.empty((1, od * oh * ow, inner), dtype=np.float64)
    along_d = np.empty((1, depth, oh * ow * inner), dtype=np.float64)
    along_h = np.empty((depth, height, ow * inner), dtype=np.float64)
    along_w = np.empty((depth * height, width, inner), dtype=np.float64)
    scale = _plane_scale(divisor, outs)
    for b in range(start, stop):
        _finish(grad5[b].reshape(scaled.shape), scaled, scale, divisor, outs, 1.0)
        _bins_adjoint(scaled.reshape(1, od, oh * ow * inner), along_d, bounds[0])
        _bins_adjoint(along_d.reshape(depth, oh, ow * inner), along_h, bounds[1])
        _bins_adjoint(along_h.reshape(depth * height, ow, inner), along_w, bounds[2])
        _scale_into(along_w.reshape(-1), dx5[b].reshape(-1), local5, b)


# ---------------------------------------------------------------- Python side


@functools.lru_cache(maxsize=256)
def _tables(window: Window) -> tuple[np.ndarray, np.ndarray]:
    """The window's geometry as arrays the kernels read: one row per embedded axis (D, H, W)."""
    axes = (None,) * (3 - window.rank) + window.axes
    kmax = max(window.kernel_size)
    geom = np.zeros((3, 8), dtype=np.int64)
    taps = np.zeros((3, kmax, 3), dtype=np.int64)
    for row, axis in enumerate(axes):
        if axis is None:
            geom[row] = (1, 1, 1, 1, 0, 1, 0, 1)
            taps[row, 0] = (0, 1, 0)
            continue
        sliding = is_sliding(axis)
        geom[row] = (
            axis.size, axis.kernel, axis.stride, axis.dilation, axis.starts[0], axis.out_size, sliding, axis.is_identity
        )  # fmt: skip
        for tap in axis.taps:
            taps[row, tap.offset] = (tap.out_start, tap.out_stop, tap.in_start)
    return geom, taps


def _five_axes(shape: tuple[int, ...], channels_last: bool) -> tuple[int, ...]:
    """The ``(B, D, H, W, I)`` shape of a channels-first ``(N, C, *spatial)`` shape."""
    n, c, spatial = shape[0], shape[1], shape[2:]
    spatial = (1,) * (3 - len(spatial)) + tuple(spatial)
    return (n, *spatial, c) if channels_last else (n * c, *spatial, 1)


def _channels_last_memory(x: np.ndarray) -> bool:
    return not x.flags.c_contiguous and np.moveaxis(x, 1, -1).flags.c_contiguous


def _as_five(x: np.ndarray, channels_last: bool) -> np.ndarray:
    """A contiguous ``(B, D, H, W, I)`` copy or view of channels-first ``x``."""
    if channels_last:
        return np.ascontiguousarray(np.moveaxis(x, 1, -1)).reshape(_five_axes(x.shape, True))
    return np.ascontiguousarray(x).reshape(_five_axes(x.shape, False))


def _empty_like_five(shape: tuple[int, ...], dtype, channels_last: bool) -> tuple[np.ndarray, np.ndarray]:
    """A new channels-first array of ``shape`` in the given memory order, and its five-axis view."""
    if channels_last:
        memory = np.empty((shape[0], *shape[2:], shape[1]), dtype=dtype)
        return np.moveaxis(memory, -1, 1), memory.reshape(_five_axes(shape, True))
    array = np.empty(shape, dtype=dtype)
    return array, array.reshape(_five_axes(shape, False))


def _compiled_dtype(dtype: np.dtype) -> bool:
    """Whether the kernels take this dtype: Numba has no extended precision (longdouble goes to the reference)."""
    return dtype.kind in "biu" or (dtype.kind == "f" and dtype.itemsize <= 8)


def _kernel_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype the kernels see: native byte order, bool as uint8, float16 as float32."""
    dtype = np.dtype(dtype).newbyteorder("=")
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def _kernel_input(x: np.ndarray, reduction: Reduction):
    """``x`` as the kernels read it: memory order, kernel dtype, five-axis view, and what a select compares.

    A select compares ``|x|`` in float64 for Lp with ``p=inf``, else the five-axis view itself.
    """
    channels_last = _channels_last_memory(x)
    kdtype = _kernel_dtype(x.dtype)
    x5 = _as_five(x.astype(kdtype, copy=False), channels_last)
    values = np.abs(x5.astype(np.float64)) if reduction.selects and reduction.absolute else x5
    return channels_last, kdtype, x5, values


@functools.lru_cache(maxsize=64)
def _identity(reduction: Reduction, kdtype: np.dtype, dtype: np.dtype) -> np.ndarray:
    """The reduction's identity for kernel dtype ``kdtype`` as a one-cell array of ``dtype``, the kernels' form."""
    identity = np.array([reduction.identity(kdtype)], dtype=dtype)
    return identity


@functools.lru_cache(maxsize=256)
def _divisors(reduction: Reduction, geometry) -> np.ndarray:
    """The divisor factors of the embedded axes (D, H, W) as a ``(3, M)`` float64 table; empty when not divided.

    Short per-axis vectors (:meth:`Window.divisor_factors`) rather than an
    output-sized array for the whole call: each kernel call builds the scale of
    one plane's windows from them (:func:`_plane_scale`).
    """
    factors = reduction.divisor_factors_of(geometry)
    per_axis = () if factors is None else (np.ones(1),) * (3 - len(factors)) + factors
    table = np.ones((len(per_axis), max((f.size for f in per_axis), default=0)))
    for row, f in enumerate(per_axis):
        table[row, : f.size] = f
    return table


def _sum_output(x: np.ndarray, reduction: Reduction, out_shape, channels_last: bool):
    """For float64 sums: the output array, its five-axis view, the cell code and the root the kernel takes."""
    out, out5 = _empty_like_five(out_shape, _kernel_dtype(reduction.result_dtype(x.dtype)), channels_last)
    return out, out5, _cell_code(reduction), (reduction.power if reduction.root else 1.0)


def _cell_code(reduction: Reduction) -> int:
    """How a sum turns an input cell into what it adds: x, |x|, x² or |x|^p."""
    if not reduction.absolute:
        return CELL_FLOAT
    if reduction.power == 1:
        return CELL_ABS
    return CELL_SQUARE if reduction.power == 2 else CELL_POWER


_ACTIVE_LOCK = threading.Lock()
_ACTIVE = [0]  # calls of the functions decorated with _shared running now, on any thread


def _shared(function):
    """Count the running calls of ``function``, so that calls made side by side (from a Dask scheduler's
    threads, say) share the threads rather than each starting ``POOLKIT_NUM_THREADS`` of them."""

    @functools.wraps(function)
    def counted(*args, **kwargs):
        with _ACTIVE_LOCK:
            _ACTIVE[0] += 1
        try:
            return function(*args, **kwargs)
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE[0] -= 1

    return counted


@_shared
def forward(
    x: np.ndarray, window: Window, reduction: Reduction, want_indices: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Pool ``x``; return the result and, for selects when asked, the argmax indices."""
    if window.rank > 3 or not _compiled_dtype(x.dtype):
        return numpy_ref.forward(x, window, reduction, want_indices)
    channels_last, kdtype, x5, values = _kernel_input(x, reduction)
    out_shape = x.shape[:2] + window.out_shape
    kind, ignore = _KINDS[reduction.kind], reduction.nan == "ignore"
    indices = None
    divisor = _divisors(reduction, window)
    if reduction.selects:
        out, out5 = _empty_like_five(out_shape, values.dtype, channels_last)
        identity = _identity(reduction, kdtype, values.dtype)
        if want_indices:
            indices, idx5 = _empty_like_five(out_shape, np.int64, channels_last)
            _launch_window(_forward_indices, window, values, out5, kind, ignore, identity, idx5=idx5)
        else:
            _launch_window(_forward_direct, window, values, out5, kind, ignore, identity, divisor=divisor)
    elif not reduction.absolute and kdtype.kind == "f":  # avg of floats: sums in the input's float type
        out, out5 = _empty_like_five(out_shape, kdtype, channels_last)
        identity = _identity(reduction, kdtype, kdtype)
        _launch_window(_forward_direct, window, x5, out5, SUM, False, identity, divisor=divisor)
    else:
        out, out5, cell, root = _sum_output(x, reduction, out_shape, channels_last)
        _launch_window(_forward_sum, window, x5, out5, cell, reduction.power, root, divisor=divisor)
    return out.astype(reduction.result_dtype(x.dtype), copy=False), indices


@_shared
def backward(
    dy: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    indices: np.ndarray | None,
    window: Window,
    reduction: Reduction,
) -> np.ndarray:
    """The gradient with respect to ``x`` of ``sum(dy * forward(x))`` (see :func:`numpy_ref.backward`)."""
    if window.rank > 3 or not _compiled_dtype(x.dtype):
        return numpy_ref.backward(dy, x, y, indices, window, reduction)
    return _backward(dy, x, y, indices, window, reduction, _spread, _tables(window))


def _backward(dy, x, y, indices, geometry, reduction, spread, tables) -> np.ndarray:
    """The backward pass of a :class:`Window` or :class:`Bins` reduction; sums go through ``spread(*tables)``."""
    if reduction.selects:
        return _scatter_selected(dy, x, indices, reduction, int(np.prod(geometry.out_shape)))
    channels_last = _channels_last_memory(x)
    dx_dtype = gradient_dtype(x.dtype)
    dx, dx5 = _empty_like_five(x.shape, _kernel_dtype(dx_dtype), channels_last)
    grad = reduction.root_gradient(dy, y)  # divided in the kernel, by the divisor factors (see _finish)
    grad5 = _as_five(grad if grad.dtype in (np.float32, np.float64) else grad.astype(np.float64), channels_last)
    local = reduction.cell_gradient(x)
    local5 = np.ones((0, 1, 1, 1, 1)) if local is None else _as_five(local, channels_last)
    if _as_lanes(dx5.shape):
        _launch(_spread_lanes, dx5, grad5, dx5, local5, _divisors(reduction, geometry), *tables)
    else:
        _launch(spread, dx5, grad5, dx5, local5, _divisors(reduction, geometry), *tables)
    return dx.astype(dx_dtype, copy=False)


def _scatter_selected(dy, x, indices, reduction, out_cells: int) -> np.ndarray:
    """Backward of a select: each window's ``dy`` to the cell its index names (overlaps add, in order)."""
    channels_last = _channels_last_memory(x)
    dx_dtype = gradient_dtype(x.dtype)
    dx, dx5 = _empty_like_five(x.shape, _kernel_dtype(dx_dtype), channels_last)
    weights = reduction.select_gradient(dy, x, indices)
    planes, inner = dx5.shape[0], dx5.shape[-1]
    _launch(
        _scatter,
        dx5,
        _as_five(weights, channels_last).reshape(planes, out_cells, inner),
        _as_five(indices, channels_last).reshape(planes, out_cells, inner),
        dx5.reshape(planes, -1 if planes else 0, inner),
    )
    return dx.astype(dx_dtype, copy=False)


@functools.lru_cache(maxsize=256)
def _bins_tables(bins: Bins) -> tuple[np.ndarray, np.ndarray]:
    """The bins' ``(start, stop)`` pairs per embedded axis (D, H, W), padded to one width, and the bin counts."""
    per_axis = ((((0, 1),),) * (3 - bins.rank)) + bins.bounds
    outs = np.array([len(axis) for axis in per_axis], dtype=np.int64)
    bounds = np.zeros((3, int(outs.max()), 2), dtype=np.int64)
    for row, axis in enumerate(per_axis):
        bounds[row, : len(axis)] = axis
    return bounds, outs


def _group_size(x5: np.ndarray) -> int:
    """Planes per group in the bins kernels: about ``GROUP_CELLS`` input cells, at least one plane."""
    return max(1, GROUP_CELLS // max(1, int(np.prod(x5.shape[1:]))))


@_shared
def bins_forward(
    x: np.ndarray, bins: Bins, reduction: Reduction, want_indices: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Reduce each bin's box of ``x`` (see :func:`numpy_ref.bins_forward`).

    The kernels see the bins over fewer axes where they can (:attr:`Bins.merged_bins`).
    """
    merged = bins.merged_bins
    if merged.rank > 3 or not _compiled_dtype(x.dtype):
        return numpy_ref.bins_forward(x, bins, reduction, want_indices)
    pooled, indices = _bins_forward(x.reshape(x.shape[:2] + merged.in_shape), merged, reduction, want_indices)
    out_shape = x.shape[:2] + bins.out_shape
    return pooled.reshape(out_shape), None if indices is None else indices.reshape(out_shape)


def _bins_forward(x: np.ndarray, bins: Bins, reduction: Reduction, want_indices: bool):
    """:func:`bins_forward` for bins of at most three axes."""
    channels_last, _kdtype, x5, values = _kernel_input(x, reduction)
    out_shape = x.shape[:2] + bins.out_shape
    bounds, outs = _bins_tables(bins)
    kind, ignore = _KINDS[reduction.kind], reduction.nan == "ignore"
    indices = None
    if reduction.selects:
        out, out5 = _empty_like_five(out_shape, values.dtype, channels_last)
        if want_indices:
            indices, idx5 = _empty_like_five(out_shape, np.int64, channels_last)
            _launch(_bins_indices, values, kind, ignore, values, out5, idx5, bounds, outs)
        else:
            _launch(_bins_select, values, kind, ignore, values, out5, bounds, outs, _group_size(x5))
    else:
        out, out5, cell, root = _sum_output(x, reduction, out_shape, channels_last)
        divisor, group = _divisors(reduction, bins), _group_size(x5)
        _launch(_bins_sum, x5, cell, reduction.power, x5, out5, bounds, outs, divisor, root, group)
    return out.astype(reduction.result_dtype(x.dtype), copy=False), indices


@_shared
def bins_backward(
    dy: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    indices: np.ndarray | None,
    bins: Bins,
    reduction: Reduction,
) -> np.ndarray:
    """The gradient with respect to ``x`` of ``sum(dy * bins_forward(x))`` (see :func:`numpy_ref.bins_backward`)."""
    if bins.rank > 3 or not _compiled_dtype(x.dtype):
        return numpy_ref.bins_backward(dy, x, y, indices, bins, reduction)
    return _backward(dy, x, y, indices, bins, reduction, _bins_spread, _bins_tables(bins))


# ---------------------------------------------------------------- threads

_POOL_LOCK = threading.Lock()
_POOL: list[ThreadPoolExecutor] = []


def thread_count() -> int:
    """Threads a kernel call uses: ``POOLKIT_NUM_THREADS`` if set, else ``numba.get_num_threads()``, shared
    among the calls running at the time (see :func:`_shared`), at least one."""
    wanted = os.environ.get("POOLKIT_NUM_THREADS")
    count = numba.get_num_threads()
    if wanted:
        try:
            count = int(wanted)
        except ValueError:
            raise PoolingConfigError(f"POOLKIT_NUM_THREADS={wanted!r} must be a positive integer") from None
        if count < 1:
            raise PoolingConfigError(f"POOLKIT_NUM_THREADS={wanted!r} must be a positive integer")
    return max(count // max(_ACTIVE[0], 1), 1)


def _launch(kernel, work: np.ndarray, *args) -> None:
    """Run ``kernel(start, stop, *args)`` over the planes of the five-axis ``work``, split across threads.

    Work of fewer than ``SERIAL_CELLS`` cells runs on the calling thread,
    where a hand-off to the pool would cost more than it saves.
    """
    planes = work.shape[0]
    threads = 1 if work.size < SERIAL_CELLS else min(thread_count(), planes)
    if threads <= 1:
        _run([[(kernel, (0, planes, *args))]])
        return
    _run([[(kernel, (planes * t // threads, planes * (t + 1) // threads, *args))] for t in range(threads)])


def _launch_window(kernel, window: Window, x5: np.ndarray, out5: np.ndarray, *args, divisor=None, idx5=None) -> None:
    """Run a window kernel over ``x5`` into ``out5`` (and ``idx5``) across threads.

    The kernel is called as ``kernel(start, stop, x5, out5, geom, taps,
    [divisor], [idx5, origin], *args)``, the bracketed arguments when given.
    Over planes when there are at least as many planes as threads; else each
    plane is also cut into bands of output rows (:func:`_bands`), which the
    threads share: each band pools the input rows its windows read into its
    own output rows, with the window's tables restricted to them.
    """
    planes, threads = x5.shape[0], 1 if x5.size < SERIAL_CELLS else thread_count()
    bands = _bands(window, -(-threads // planes)) if 0 < planes < threads else ()
    if len(bands) < 2:
        geom, taps = _tables(window)
        extra = (() if divisor is None else (divisor,)) + (() if idx5 is None else (idx5, 0))
        _launch(kernel, x5, x5, out5, geom, taps, *extra, *args)
        return
    calls = []
    for b in range(planes):
        for row, low, high, first, stop, geom, taps in bands:
            before = (slice(b, b + 1),) + (slice(None),) * row
            inside, outside = (*before, slice(low, high)), (*before, slice(first, stop))
            extra = ()
            if divisor is not None:
                scale = divisor
                if divisor.size:
                    scale = divisor.copy()
                    scale[row, : stop - first] = divisor[row, first:stop]
                extra = (scale,)
            if idx5 is not None:
                extra += (idx5[outside], low * int(np.prod(x5.shape[2 + row : 4])))
            calls.append((kernel, (0, 1, x5[inside], out5[outside], geom, taps, *extra, *args)))
    _run([calls[t::threads] for t in range(min(threads, len(calls)))])


@functools.lru_cache(maxsize=256)
def _bands(window: Window, count: int) -> tuple[tuple, ...]:
    """The window's output cut into at most ``count`` bands along its first embedded axis that is not one cell.

    Each band is ``(row, low, high, first, stop, geom, taps)``: output cells
    ``first:stop`` of embedded axis ``row`` (0, 1, 2 for D, H, W) read input
    cells ``low:high`` of it, and ``geom``, ``taps`` are the window's tables
    for that input and output (:func:`_strip`). The axes before ``row`` are
    one cell in and out, so a band of a plane is contiguous. Empty when
    there would be fewer than two bands.
    """
    geom, taps = _tables(window)
    row = next((r for r in range(3) if geom[r, _SIZE] > 1 or geom[r, _OUT] > 1), 2)
    out = int(geom[row, _OUT])
    cuts = sorted({out * t // count for t in range(count)} | {out})
    if len(cuts) < 3:
        return ()
    bands = []
    for first, stop in itertools.pairwise(cuts):
        band_geom, band_taps = geom.copy(), taps.copy()
        low, high = _strip(geom[row], taps[row], first, stop, band_geom[row], band_taps[row])
        bands.append((row, low, high, first, stop, band_geom, band_taps))
    return tuple(bands)


class _Memory:
    """The memory of a read-only array, offered as writeable through the array interface (see :func:`_writable`)."""

    def __init__(self, array: np.ndarray):
        self.array = array  # keeps the memory alive as long as the view
        interface = array.__array_interface__
        self.__array_interface__ = {**interface, "data": (interface["data"][0], False)}


def _writable(value):
    """``value``, or for a read-only array a writeable view of the same memory.

    Numba compiles a function apart for read-only arrays: without this,
    every kernel would compile twice per dtype, once more for the first
    read-only input (a Dask chunk, a memory map, a frozen table). The
    kernels never write an array they read. The tables they read
    (:func:`_tables`, :func:`_bins_tables`, ...) are made writeable for the
    same reason, so that none of them needs a view here.
    """
    if isinstance(value, np.ndarray) and not value.flags.writeable:
        return np.asarray(_Memory(value))
    return value


def _run(calls: list[list[tuple]]) -> None:
    """Run each list of ``(kernel, args)`` calls on a thread of its own: the first on the calling thread.

    The kernels release the GIL, so the lists run in parallel, and calls
    from several Python threads at once are safe: each only writes its own
    output.
    """
    if len(calls) == 1:
        for kernel, args in calls[0]:
            kernel(*map(_writable, args))
        return
    helpers = len(calls) - 1
    with _POOL_LOCK:  # submitted under the lock: no other call can shut this pool down in between
        if not _POOL or _POOL[0]._max_workers < helpers:
            if _POOL:
                _POOL[0].shutdown(wait=False)  # running calls finish; the old threads then exit
            _POOL[:] = [ThreadPoolExecutor(max_workers=helpers, thread_name_prefix="poolkit")]
        futures = [_POOL[0].submit(_run, [work]) for work in calls[1:]]
    try:
        _run([calls[0]])
    finally:
        for future in futures:
            future.result()

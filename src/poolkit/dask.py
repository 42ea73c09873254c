"""Pooling for Dask arrays: the in-memory ops, lazily, chunk by chunk, for arrays larger than memory.

``poolkit.dask.max_pool``, ``avg_pool``, ``lp_pool`` and ``min_pool`` take a
``dask.array.Array`` and the arguments of :func:`poolkit.max_pool` and
friends, and return a lazy ``dask.array.Array`` holding what the in-memory op
would return: identical values for max and min, equal within rounding for the
sums of avg and Lp, whatever the chunking.

How a chunked pool works, along one spatial axis (the geometry is read from a
:class:`poolkit.Window` built on the whole array, never re-derived here):

* output chunk ``j`` holds the windows whose last cell lies in input chunk
  ``j`` (the last one also those that end in the right padding). A chunk
  other than the last that is shorter than the cells a window reaches back
  from its last cell (``dilation*(kernel-1)``), or a chunk that would hold no
  window, is merged into the next one; otherwise the input's chunks are kept;
* each block then reads its own chunk plus a left halo: the cells from the
  start of its first window, copied from the end of the chunk before it (and
  the corners of the chunks before it along two or more axes). No block reads
  the chunk after it. A computation of the whole result also runs the
  blocks in order along the halo axes, so that a pass over an on-disk array
  holds a few chunks per worker rather than rows of them (``ordered``; see
  ``_map_with_halos``);
* the block is pooled by the in-memory op with the block's own padding
  where its windows hang over the array's edges (left padding, right padding,
  ceil-mode overhang). Where that padding is more than ``kernel // 2`` or
  would change an average's divisor (``count_include_pad`` with ceil-mode
  overhang), the block is instead padded with the reduction's identity and its
  window sums are divided by the counts of the whole-array ``Window``; either
  way edge windows count exactly the cells the in-memory op counts.

For pyramid steps (kernel = stride) and 3x3 stride-2 padding-1 pooling on
chunks that are multiples of the stride, the output chunks are the input's
divided by the stride. Other geometries (stride 1 with ``padding="same"``,
for one) make the first output chunk shorter than the rest; Zarr wants equal
chunks, so rechunk before ``to_zarr`` (Dask does it, with a warning).

The same code runs on the threaded scheduler, a ``distributed.LocalCluster``
or a multi-machine cluster: whichever scheduler is active computes the graph.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Sequence

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from . import reducers
from .errors import PoolingConfigError, PoolingTypeError
from .geometry import Axis, IntOrSeq, Padding, Window, _outer_product
from .ops import pooling
from .ops._common import as_pool_input, check_choice, check_flag

__all__ = ["max_pool", "avg_pool", "lp_pool", "min_pool", "pool", "pyramid"]

OPS = ("max", "avg", "lp", "min")
_IN_MEMORY = {"max": pooling.max_pool, "avg": pooling.avg_pool, "lp": pooling.lp_pool, "min": pooling.min_pool}


def max_pool(
    x: da.Array,
    kernel_size: IntOrSeq,
    stride: IntOrSeq | None = None,
    padding: Padding = 0,
    dilation: IntOrSeq = 1,
    ceil_mode: bool = False,
    *,
    channels_last: bool = False,
    nan: str = "propagate",
    backend: str = "auto",
    ordered: bool | None = None,
) -> da.Array:
    """Max pooling of a Dask array, lazily: :func:`poolkit.max_pool` chunk by chunk.

    ``y[n, c, o] = max_j x[n, c, o*s - pad_before + j*d]`` over the real cells
    of each window. Windows that cross chunk boundaries read a halo from the
    chunk before; the values are identical to the in-memory op's for any
    chunking.

    Parameters
    ----------
    x : dask.array.Array
        ``(N, C, *spatial)``, or ``(N, *spatial, C)`` with ``channels_last``.
    kernel_size, stride, padding, dilation, ceil_mode, channels_last, nan, backend
        As in :func:`poolkit.max_pool` (``padding="same"`` included).
        ``return_indices`` is not offered: a flat index into a larger-than-memory
        plane is rarely what a chunked pipeline wants.
    ordered : bool or None
        Whether the blocks run in order along the axes where windows cross
        chunk edges, when there are two or more such axes. Ordered, each chunk
        is freed as soon as its block is done, and a pass over an on-disk
        array holds a few chunks per worker thread; unordered, Dask's order
        can hold one to two rows of chunks (a plane or more in 3-D). The cost
        of order: blocks run in diagonal waves, and a partial read computes
        every block before it. ``None`` (the default) orders a computation
        that needs every block (``compute``, ``persist``, ``to_zarr``,
        ``da.store``) and leaves one that reads part of the result
        unordered; ``True`` and ``False`` force either. It changes no value.

    Returns
    -------
    dask.array.Array
        Lazy; ``.compute()`` (or ``.to_zarr(...)``) runs it. Its chunks along
        the spatial axes follow the input's: output chunk ``j`` holds the
        windows that end in input chunk ``j``.

    Raises
    ------
    PoolingTypeError
        ``x`` is not a Dask array, or not of real numbers; ``ordered`` is not a bool or None.
    PoolingConfigError
        Any argument the in-memory op refuses, with the same message.

    Examples
    --------
    >>> import dask.array as da, numpy as np, poolkit.dask as pkd
    >>> x = da.from_array(np.arange(16.0).reshape(1, 1, 4, 4), chunks=(1, 1, 3, 3))
    >>> y = pkd.max_pool(x, 3, stride=2, padding=1)
    >>> y.compute()
    array([[[[ 5.,  7.],
             [13., 15.]]]])
    """
    geometry = dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
    return _lazy_pool("max", x, geometry, dict(nan=nan), channels_last, backend, ordered)


def min_pool(
    x: da.Array,
    kernel_size: IntOrSeq,
    stride: IntOrSeq | None = None,
    padding: Padding = 0,
    dilation: IntOrSeq = 1,
    ceil_mode: bool = False,
    *,
    channels_last: bool = False,
    nan: str = "propagate",
    backend: str = "auto",
    ordered: bool | None = None,
) -> da.Array:
    """Min pooling of a Dask array, lazily: :func:`poolkit.min_pool` chunk by chunk.

    The parameters are those of :func:`max_pool`.

    Examples
    --------
    >>> import dask.array as da, numpy as np, poolkit.dask as pkd
    >>> x = da.from_array(np.array([[[4.0, 1.0, 7.0, 3.0, 9.0, 2.0]]]), chunks=2)
    >>> pkd.min_pool(x, 3).compute()
    array([[[1., 2.]]])
    """
    geometry = dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
    return _lazy_pool("min", x, geometry, dict(nan=nan), channels_last, backend, ordered)


def avg_pool(
    x: da.Array,
    kernel_size: IntOrSeq,
    stride: IntOrSeq | None = None,
    padding: Padding = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    *,
    dilation: IntOrSeq = 1,
    channels_last: bool = False,
    backend: str = "auto",
    ordered: bool | None = None,
) -> da.Array:
    """Average pooling of a Dask array, lazily: :func:`poolkit.avg_pool` chunk by chunk.

    ``y = (sum of the window's real cells) / divisor``, with the divisors of
    the whole array's :class:`~poolkit.Window` (:meth:`~poolkit.Window.divisor`'s
    rule) at every chunk, so the border windows match the in-memory op within
    rounding.

    Parameters
    ----------
    x : dask.array.Array
        ``(N, C, *spatial)``, or ``(N, *spatial, C)`` with ``channels_last``.
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, dilation, channels_last, backend
        As in :func:`poolkit.avg_pool`.
    ordered : bool or None
        As in :func:`max_pool`.

    Returns
    -------
    dask.array.Array
        Lazy, in the in-memory op's dtype.

    Examples
    --------
    >>> import dask.array as da, numpy as np, poolkit.dask as pkd
    >>> x = da.ones((1, 1, 4), chunks=1)
    >>> pkd.avg_pool(x, 3, stride=1, padding=1).compute()
    array([[[0.66666667, 1.        , 1.        , 0.66666667]]])
    """
    geometry = dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
    options = dict(count_include_pad=count_include_pad, divisor_override=divisor_override)
    return _lazy_pool("avg", x, geometry, options, channels_last, backend, ordered)


def lp_pool(
    x: da.Array,
    p: float,
    kernel_size: IntOrSeq,
    stride: IntOrSeq | None = None,
    padding: Padding = 0,
    ceil_mode: bool = False,
    mean: bool = False,
    *,
    dilation: IntOrSeq = 1,
    channels_last: bool = False,
    backend: str = "auto",
    ordered: bool | None = None,
) -> da.Array:
    """Lp pooling of a Dask array, lazily: :func:`poolkit.lp_pool` chunk by chunk.

    ``y = (sum |x|**p)**(1/p)`` over the window's real cells; with
    ``mean=True`` the power mean ``((1/n) sum |x|**p)**(1/p)`` over the ``n``
    real cells (equal to the in-memory op within rounding).

    Parameters
    ----------
    x : dask.array.Array
        ``(N, C, *spatial)``, or ``(N, *spatial, C)`` with ``channels_last``.
    p, kernel_size, stride, padding, ceil_mode, mean, dilation, channels_last, backend
        As in :func:`poolkit.lp_pool`.
    ordered : bool or None
        As in :func:`max_pool`.

    Returns
    -------
    dask.array.Array
        Lazy, in the in-memory op's dtype.

    Examples
    --------
    >>> import dask.array as da, numpy as np, poolkit.dask as pkd
    >>> x = da.from_array(np.array([[[3.0, -4.0, 0.0, 12.0]]]), chunks=1)
    >>> pkd.lp_pool(x, 2, 2).compute()
    array([[[ 5., 12.]]])
    """
    geometry = dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
    return _lazy_pool("lp", x, geometry, dict(p=p, mean=mean), channels_last, backend, ordered)


def pool(x: da.Array, op: str, *args, **kwargs) -> da.Array:
    """The lazy pool named by ``op``: ``pool(x, "max", 2)`` is ``max_pool(x, 2)``.

    Parameters
    ----------
    x : dask.array.Array
        The input.
    op : {"max", "avg", "lp", "min"}
        Which pool.
    *args, **kwargs
        That function's other arguments.

    Raises
    ------
    PoolingConfigError
        ``op`` is not one of the four.

    Examples
    --------
    >>> import dask.array as da, numpy as np, poolkit.dask as pkd
    >>> pkd.pool(da.arange(6.0, chunks=4).reshape(1, 1, 6), "avg", 2).compute()
    array([[[0.5, 2.5, 4.5]]])
    """
    function = {"max": max_pool, "avg": avg_pool, "lp": lp_pool, "min": min_pool}
    return function[check_choice("op", op, OPS)](x, *args, **kwargs)


def pyramid(
    x: da.Array,
    levels: int = 4,
    op: str = "avg",
    factor: int = 2,
    *,
    channels_last: bool = False,
    zarr_path: str | os.PathLike | None = None,
) -> list[da.Array]:
    """A multiscale image pyramid: ``x`` and ``levels - 1`` successive poolings by ``factor``.

    Level ``l + 1`` pools level ``l`` over non-overlapping ``factor``-sized
    windows along every spatial axis, in ceil mode, so no edge cell is lost:
    a level has ``ceil(size / factor)`` cells per axis, and an edge window that
    holds fewer cells averages (or maxes) the cells it has; an axis shorter
    than ``factor`` becomes one cell. Every level keeps level 0's chunk shape
    (clipped to the level's size), the layout OME-Zarr viewers read.

    Parameters
    ----------
    x : dask.array.Array
        ``(N, C, *spatial)``, or ``(N, *spatial, C)`` with ``channels_last``
        (a 2-D image ``img`` is ``img[None, None]``).
    levels : int
        Number of levels, level 0 (``x`` itself) included; at least 1.
    op : {"avg", "max"}
        The reduction.
    factor : int
        Downsampling factor per level and spatial axis, at least 2.
    channels_last : bool
        The layout of ``x``.
    zarr_path : str, path or None
        If given, a Zarr (format 2) group is written there, one array per level
        named ``"0"``, ``"1"``, …, with OME-NGFF 0.4 ``multiscales`` metadata
        (axes ``n, c, z, y, x`` as present, their scale per level). Each level
        is computed from the level stored before it. The returned arrays then
        read from the store.

    Returns
    -------
    list of dask.array.Array
        ``levels`` arrays, full resolution first; lazy unless ``zarr_path``.

    Raises
    ------
    PoolingTypeError
        ``x`` is not a Dask array, or ``levels`` / ``factor`` is not an int.
    PoolingConfigError
        An unknown ``op``, ``levels < 1`` or ``factor < 2``.

    Examples
    --------
    >>> import dask.array as da, numpy as np, poolkit.dask as pkd
    >>> image = da.from_array(np.arange(25.0).reshape(1, 1, 5, 5), chunks=4)
    >>> [level.shape[2:] for level in pkd.pyramid(image, levels=3)]
    [(5, 5), (3, 3), (2, 2)]
    >>> pkd.pyramid(image, levels=2, op="max")[1][0, 0].compute()
    array([[ 6.,  8.,  9.],
           [16., 18., 19.],
           [21., 23., 24.]])
    """
    op = check_choice("op", op, ("avg", "max"))
    levels = _positive_int("levels", levels, 1)
    factor = _positive_int("factor", factor, 2)
    _check_dask("pyramid", x)
    check_flag("channels_last", channels_last)
    spatial = _spatial_axes(x.ndim, channels_last)
    chunk_shape = tuple(max(chunks) for chunks in x.chunks)
    group = None if zarr_path is None else _zarr_group(zarr_path, x, levels, factor, channels_last)
    result = []
    for level in range(levels):
        if level:
            previous = result[-1]
            kernel = tuple(min(factor, previous.shape[axis]) for axis in spatial)
            x = pool(previous, op, kernel_size=kernel, stride=factor, ceil_mode=True, channels_last=channels_last)
        x = x.rechunk(tuple(min(c, s) for c, s in zip(chunk_shape, x.shape)))
        if group is not None:
            da.to_zarr(x, str(zarr_path), component=str(level), zarr_format=2)
            x = da.from_zarr(str(zarr_path), component=str(level))
        result.append(x)
    return result


# ------------------------------------------------------------------ the chunked pipeline


def _lazy_pool(
    op: str, x, geometry: dict, options: dict, channels_last: bool, backend: str, ordered: bool | None
) -> da.Array:
    """The one pipeline behind every public function: check, plan the chunks, map the in-memory op."""
    name = f"poolkit.dask.{op}_pool"
    _check_dask(name, x)
    ordered = check_flag("ordered", ordered, optional=True)
    # A zero-strided stand-in (no memory) gets the in-memory checks of layout, rank and dtype.
    as_pool_input(np.broadcast_to(np.zeros((), dtype=x.dtype), x.shape), None, channels_last, name)
    spatial = _spatial_axes(x.ndim, channels_last)
    window = Window.build(tuple(x.shape[a] for a in spatial), **geometry)
    kernel, stride, dilation = window.kernel_size, window.stride, window.dilation
    # The in-memory op on one window's worth of zeros checks the op's own options and names the result dtype.
    probe_shape = list(x.shape)
    for axis, ax in zip(spatial, window.axes):
        probe_shape[axis] = ax.span
    for axis in set(range(x.ndim)) - set(spatial):
        probe_shape[axis] = 1
    common = dict(kernel_size=kernel, stride=stride, dilation=dilation, channels_last=channels_last, backend=backend)
    probe = _IN_MEMORY[op](np.zeros(probe_shape, x.dtype), padding=0, ceil_mode=False, **common, **options)

    plans = tuple(_AxisPlan.build(ax, x.chunks[axis]) for axis, ax in zip(spatial, window.axes))
    x = x.rechunk({axis: plan.in_chunks for axis, plan in zip(spatial, plans)})
    out_chunks = list(x.chunks)
    for axis, plan in zip(spatial, plans):
        out_chunks[axis] = plan.out_chunks
    # The fallback for blocks whose edge windows the in-memory op cannot reproduce with its own padding:
    # window sums (avg with divisor 1, Lp without the mean), divided by the whole array's counts.
    summed = {**options, **({"divisor_override": 1} if op == "avg" else {"mean": False} if op == "lp" else {})}
    block = functools.partial(
        _pool_block,
        spatial=spatial,
        plans=plans,
        pooled=functools.partial(_IN_MEMORY[op], ceil_mode=False, **common),
        options=options,
        summed=summed,
        fill=_identity(op, options, x.dtype),
        divisor=_divisor_rule(op, options, window),
        padded_divisor=op == "avg" and options["count_include_pad"] and options["divisor_override"] is None,
    )
    halos = {axis: plan.halo for axis, plan in zip(spatial, plans) if plan.halo}
    if not halos:
        return da.map_blocks(block, x, chunks=tuple(out_chunks), dtype=probe.dtype, meta=probe[:0], token=f"{op}_pool")
    return _map_with_halos(block, x, halos, tuple(out_chunks), probe[:0], f"{op}_pool", ordered)


def _map_with_halos(
    block, x: da.Array, halos: dict[int, int], out_chunks: tuple, meta: np.ndarray, name: str, ordered: bool | None
) -> da.Array:
    """``block`` on every chunk of ``x`` extended by the last ``halos[axis]`` cells of the chunks before it.

    Per chunk, two tasks: its tails (copies of its last cells along each set
    of halo axes, for the chunks after it, so that they do not keep the chunk
    alive) and its block (the chunk with the tails of the chunks before it
    put in front).

    Dask's order decides when a chunk is read, and a chunk read for its tails
    before the blocks before its own have run stays in memory until its
    block runs: with halos along two axes, Dask's orders hold one to two rows
    of chunks. Ordered, with halos along two or more axes, a third task per
    chunk marks its block done, and a block waits for those of the blocks
    before it along each halo axis: every order then runs the blocks
    forwards, and only the chunks that idle workers read ahead are in memory
    beside the running blocks. Along one halo axis a backward walk holds one
    chunk more, so there is nothing to order. With ``ordered=None`` the
    layer (:class:`_HaloLayer`) orders a computation that needs every block
    and leaves a partial read unordered.
    """
    token = tokenize(x, block, halos, ordered)
    tails, done, out = f"poolkit-tails-{token}", f"poolkit-done-{token}", f"{name}-{token}"
    axes = sorted(halos)
    corners = [subset for size in range(1, len(axes) + 1) for subset in itertools.combinations(axes, size)]
    chain = len(axes) > 1 and ordered is not False
    graphs: tuple[dict, dict] = ({}, {})  # unordered, ordered
    for index in itertools.product(*(range(n) for n in x.numblocks)):
        chunk = (x.name, *index)
        wanted = [all(index[axis] + 1 < x.numblocks[axis] for axis in subset) for subset in corners]
        before, waits = [], []
        for subset in corners:
            shifted = tuple(i - 1 if axis in subset else i for axis, i in enumerate(index))
            before.append((tails, *shifted) if min(shifted) >= 0 else None)
            if chain and len(subset) == 1 and min(shifted) >= 0:
                waits.append((done, *shifted))
        for graph, after in zip(graphs, ([], waits)):
            graph[(tails, *index)] = (_tails_of, chunk, corners, wanted, halos)
            graph[(out, *index)] = (_joined, block, chunk, before, after, corners, halos, index)
        if chain:
            graphs[1][(done, *index)] = (_done, (out, *index))
    unordered, ordered_graph = graphs
    if not chain:
        layer = MaterializedLayer(unordered)
    elif ordered:
        layer = MaterializedLayer(ordered_graph)
    else:
        outputs = frozenset(key for key in unordered if key[0] == out)
        layer = _HaloLayer(ordered_graph, unordered, outputs)
    return da.Array(HighLevelGraph.from_collections(out, layer, dependencies=[x]), out, out_chunks, meta=meta)


class _HaloLayer(MaterializedLayer):
    """The graph of :func:`_map_with_halos` with ``ordered=None``: its blocks run in order when a
    computation needs all of them (a pass over the whole array: ``compute``, ``persist``, ``to_zarr``,
    ``da.store``), and unordered when it needs only some (a partial read computes just the blocks it
    reads). Dask's optimisation culls every graph before it runs; an uncull'd graph runs every block, so
    the layer's own tasks are the ordered ones."""

    def __init__(self, ordered: dict, unordered: dict, outputs: frozenset):
        super().__init__(ordered)
        self.unordered, self.outputs = unordered, outputs

    def cull(self, keys, all_hlg_keys):
        if self.outputs <= keys:
            return super().cull(keys, all_hlg_keys)
        return MaterializedLayer(self.unordered).cull(keys, all_hlg_keys)


def _tails_of(chunk: np.ndarray, corners: list, wanted: list, halos: dict) -> list:
    """Copies of the last ``halos[axis]`` cells of ``chunk`` along the axes of each subset in ``corners``
    (None where no chunk after it along those axes reads them)."""
    tails = []
    for subset, needed in zip(corners, wanted):
        cut = tuple(slice(-halos[axis], None) if axis in subset else slice(None) for axis in range(chunk.ndim))
        tails.append(chunk[cut].copy() if needed else None)
    return tails


def _done(result: np.ndarray) -> None:
    """The token that a block is done (see ``_map_with_halos``)."""
    return None


def _joined(block, chunk, before: list, after: list, corners: list, halos: dict, index: tuple) -> np.ndarray:
    """``block`` of ``chunk`` with the tails of the chunks before it put in front (``after``, the blocks it
    must run after, is not read)."""
    widths = {axis: halos[axis] if index[axis] else 0 for axis in halos}
    shape = tuple(size + widths.get(axis, 0) for axis, size in enumerate(chunk.shape))
    joined = np.empty(shape, chunk.dtype)
    joined[tuple(slice(widths.get(axis, 0), None) for axis in range(chunk.ndim))] = chunk
    for number, (subset, tails) in enumerate(zip(corners, before)):
        if tails is not None:
            place = [slice(widths.get(axis, 0), None) for axis in range(chunk.ndim)]
            for axis in subset:
                place[axis] = slice(0, widths[axis])
            joined[tuple(place)] = tails[number]
    return block(joined, block_id=index)


class _AxisPlan:
    """How one spatial axis is split: window runs per output chunk, input chunks, left halo.

    Output chunk ``j`` holds the windows whose last cell lies in input chunk
    ``j`` (``out_bounds[j] .. out_bounds[j+1]-1``; the last chunk also holds the
    windows that end in the right padding). Block ``j`` reads its input chunk
    and the last ``halo`` cells of the chunk before it, and nothing of the chunk
    after it, so a block never waits for a chunk that is read later: on a
    Dask array read from disk, each input chunk can be freed once its tails
    are cut and its own block has run. Every input chunk but the last is at
    least ``halo`` cells long.
    """

    def __init__(self, axis: Axis, in_bounds: Sequence[int], out_bounds: Sequence[int]):
        self.axis = axis
        self.in_bounds = np.array(in_bounds)
        self.out_bounds = np.array(out_bounds)
        self.in_chunks = tuple(int(c) for c in np.diff([*in_bounds, axis.size]))
        self.out_chunks = tuple(int(c) for c in np.diff(out_bounds))
        # How far before its chunk the first window of each block after the first starts.
        reach = self.in_bounds[1:] - axis.starts[self.out_bounds[1:-1]]
        self.halo = max(int(reach.max(initial=0)), 0)

    @classmethod
    def build(cls, axis: Axis, chunks: Sequence[int]) -> _AxisPlan:
        tail = axis.span - 1  # from a window's first cell to its last
        edges = np.cumsum(chunks)[:-1]
        firsts = np.searchsorted(axis.starts + tail, edges)  # the windows whose last cell lies before each edge
        in_bounds, out_bounds = [0], [0]
        for edge, first in zip(edges.tolist(), firsts.tolist()):
            # A chunk shorter than a window's reach back from its last cell (the halo it may have to give the next
            # block), or without a window, joins the next.
            if edge - in_bounds[-1] >= max(tail, 1) and out_bounds[-1] < first < axis.out_size:
                in_bounds.append(edge)
                out_bounds.append(first)
        return cls(axis, in_bounds, [*out_bounds, axis.out_size])

    def block(self, index: int) -> tuple[int, int, slice]:
        """For block ``index`` (its halo included): where its first window starts, the cells its windows span,
        and its output windows."""
        first, stop = int(self.out_bounds[index]), int(self.out_bounds[index + 1])
        origin = int(self.in_bounds[index]) - (self.halo if index else 0)
        needed = int(self.axis.starts[stop - 1] - self.axis.starts[first]) + self.axis.span
        return int(self.axis.starts[first]) - origin, needed, slice(first, stop)


def _pool_block(block, *, spatial, plans, pooled, options, summed, fill, divisor, padded_divisor, block_id):
    """Pool one block (with its halo) into exactly the windows of its output chunk.

    Where a block's windows hang over the array's edges, the in-memory op pads
    them itself when it can (per-side padding up to ``kernel // 2``, and the
    same divisors as the whole array's); otherwise the block is padded with the
    reduction's identity and its window sums are divided by the whole array's
    counts.
    """
    pads = [(0, 0)] * block.ndim
    keep = [slice(None)] * block.ndim
    windows = []
    direct = True
    for axis, plan in zip(spatial, plans):
        offset, needed, out = plan.block(block_id[axis])
        pads[axis] = (max(-offset, 0), max(offset + needed - block.shape[axis], 0))
        keep[axis] = slice(max(offset, 0), offset + needed)
        windows.append(out)
        direct &= max(pads[axis]) <= plan.axis.kernel // 2
        # count_include_pad: a ceil-mode window past the right padding counts fewer taps than its kernel.
        direct &= not (padded_divisor and plan.axis.padded_counts[out].min() < plan.axis.kernel)
    block = block[tuple(keep)]
    if direct:
        return pooled(block, padding=tuple(pads[axis] for axis in spatial), **options)
    block = np.pad(block, pads, constant_values=fill)
    result = pooled(block, padding=0, **summed)
    if divisor is None:
        return result
    factors, power = divisor
    scale = _outer_product([factor[out] for factor, out in zip(factors, windows)]) ** power
    shape = [1] * result.ndim
    for axis, size in zip(spatial, scale.shape):
        shape[axis] = size
    return np.divide(result, scale.reshape(shape), out=result, casting="same_kind")


def _identity(op: str, options: dict, dtype: np.dtype):
    """The padding value that no window result can see: the reduction's identity (0 for sums)."""
    if op in ("avg", "lp"):
        return 0
    reduction = reducers.max_reduction(options["nan"]) if op == "max" else reducers.min_reduction(options["nan"])
    return reduction.identity(dtype)


def _divisor_rule(op: str, options: dict, window: Window) -> tuple[tuple[np.ndarray, ...], float] | None:
    """What the window sums of a summed block are divided by: the whole array's per-axis divisor factors
    (:meth:`Window.divisor_factors`) and the power their product is raised to; None for no division."""
    if op == "avg":
        return window.divisor_factors(options["count_include_pad"], options["divisor_override"]), 1.0
    if op == "lp" and options["mean"]:
        return window.divisor_factors(count_include_pad=False), 1.0 / float(options["p"])
    return None


def _spatial_axes(ndim: int, channels_last: bool) -> tuple[int, ...]:
    return tuple(range(1, ndim - 1)) if channels_last else tuple(range(2, ndim))


def _check_dask(name: str, x) -> None:
    if not isinstance(x, da.Array):
        raise PoolingTypeError(
            f"{name} takes a dask.array.Array; got {type(x).__name__}. Wrap an array with "
            "dask.array.from_array(x, chunks=...) (or dask.array.from_zarr), or call the in-memory "
            f"poolkit.{name.rsplit('.', 1)[-1]} for an array that fits in memory"
        )
    if any(np.isnan(size) for size in x.shape):
        raise PoolingConfigError(
            f"{name} needs known chunk sizes; x has shape {x.shape}. Call x.compute_chunk_sizes() first"
        )


def _positive_int(name: str, value, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise PoolingTypeError(f"{name}={value!r} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise PoolingConfigError(f"{name}={value!r} is too small; use {name} >= {minimum}")
    return int(value)


def _zarr_group(path, x: da.Array, levels: int, factor: int, channels_last: bool):
    """A new Zarr group at ``path`` with the OME-NGFF 0.4 ``multiscales`` metadata of the pyramid."""
    import zarr

    spatial = _spatial_axes(x.ndim, channels_last)
    names = ["n"] * x.ndim
    names[x.ndim - 1 if channels_last else 1] = "c"
    space = "zyx"[-len(spatial) :] if len(spatial) <= 3 else [f"s{i}" for i in range(len(spatial))]
    for axis, label in zip(spatial, space):
        names[axis] = label
    axes = [
        {"name": label, **({"type": "channel"} if label == "c" else {"type": "space"} if axis in spatial else {})}
        for axis, label in enumerate(names)
    ]
    datasets = []
    for level in range(levels):
        scale = [float(factor**level) if axis in spatial else 1.0 for axis in range(x.ndim)]
        datasets.append({"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": scale}]})
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.attrs["multiscales"] = [{"version": "0.4", "name": "poolkit pyramid", "axes": axes, "datasets": datasets}]
    return group

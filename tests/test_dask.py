"""poolkit.dask against in-memory poolkit: every option, any chunking, on real worker processes.

The oracle is the in-memory op on the same data: max/min must be identical,
avg/Lp equal within rounding. Hypothesis draws the configuration and the
chunking and runs on the synchronous scheduler (the chunk planning is the
same for every scheduler, and it keeps the many examples fast); the tests
that take the ``client`` fixture compute on a real ``distributed.LocalCluster`` of two worker
processes on 127.0.0.1, one of them losing a worker in mid-computation.
"""

from __future__ import annotations

import itertools
import os
import re
import time
import weakref

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import poolkit as pk
from poolkit import PoolingConfigError, PoolingTypeError

dask = pytest.importorskip("dask", reason="dask[array] (the [dask] extra) is what poolkit.dask runs on")
da = pytest.importorskip("dask.array", reason="dask[array] (the [dask] extra) is what poolkit.dask runs on")
distributed = pytest.importorskip("distributed", reason="distributed (the [dask] extra) runs the LocalCluster")
zarr = pytest.importorskip("zarr", reason="zarr (the [dask] extra) stores the pyramid")
pkd = pytest.importorskip("poolkit.dask")

IN_MEMORY = {"max": pk.max_pool, "min": pk.min_pool, "avg": pk.avg_pool, "lp": pk.lp_pool}
LAZY = {"max": pkd.max_pool, "min": pkd.min_pool, "avg": pkd.avg_pool, "lp": pkd.lp_pool}


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of two single-threaded worker processes, started and closed here."""
    cluster = distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
    )
    with distributed.Client(cluster) as client:
        yield client
    cluster.close()


def _chunkings(draw, shape):
    """A chunking of ``shape``: random cut points per axis (any sizes, not aligned to anything)."""
    chunks = []
    for size in shape:
        cuts = draw(st.sets(st.integers(1, size - 1), max_size=4)) if size > 1 else set()
        edges = [0, *sorted(cuts), size]
        chunks.append(tuple(b - a for a, b in itertools.pairwise(edges)))
    return tuple(chunks)


@st.composite
def cases(draw):
    op = draw(st.sampled_from(list(IN_MEMORY)))
    rank = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(rank))
    stride = draw(st.none() | st.tuples(*[st.integers(1, 4)] * rank))
    padding = draw(
        st.sampled_from(["same", "same_lower", "valid"])
        | st.tuples(*[st.tuples(st.integers(0, k // 2), st.integers(0, k // 2)) for k in kernel])
    )
    channels_last = draw(st.booleans())
    spatial = tuple(draw(st.integers(1, 12 if rank < 3 else 6)) for _ in range(rank))
    batch, channels = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    shape = (batch, *spatial, channels) if channels_last else (batch, channels, *spatial)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype = draw(st.sampled_from([np.float64, np.float32, np.int16]))
    x = (rng.standard_normal(shape) * 10).astype(dtype)
    if dtype != np.int16 and draw(st.booleans()):
        x[rng.random(shape) < 0.1] = np.nan
    kwargs = dict(
        stride=stride,
        padding=padding,
        dilation=tuple(draw(st.integers(1, 2)) for _ in range(rank)),
        ceil_mode=draw(st.booleans()),
        channels_last=channels_last,
    )
    args = ()
    if op in ("max", "min"):
        kwargs["nan"] = draw(st.sampled_from(["propagate", "ignore"]))
    elif op == "avg":
        kwargs["count_include_pad"] = draw(st.booleans())
        kwargs["divisor_override"] = draw(st.none() | st.integers(1, 5))
    else:
        args = (draw(st.sampled_from([1.0, 2.0, 3.5, float("inf")])),)
        kwargs["mean"] = draw(st.booleans())
    return op, x, args, kernel, kwargs, _chunkings(draw, shape), draw(st.sampled_from([None, True, False]))


def _assert_matches(op, lazy, expected):
    assert lazy.dtype == expected.dtype
    result = lazy.compute()
    assert result.shape == expected.shape == lazy.shape
    assert result.dtype == expected.dtype
    if op in ("max", "min"):
        np.testing.assert_array_equal(result, expected)
    else:
        tolerance = 1e-5 if expected.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(result, expected, rtol=tolerance, atol=tolerance)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_any_chunking_matches_the_in_memory_op(case):
    op, x, args, kernel, kwargs, chunks, ordered = case
    try:
        expected = IN_MEMORY[op](x, *args, kernel, **kwargs)
    except PoolingConfigError as err:
        with pytest.raises(PoolingConfigError, match=re.escape(str(err))):
            LAZY[op](da.from_array(x, chunks=chunks), *args, kernel, **kwargs, ordered=ordered)
        return
    lazy = LAZY[op](da.from_array(x, chunks=chunks), *args, kernel, **kwargs, ordered=ordered)
    with _scheduler("sync"):
        _assert_matches(op, lazy, expected)


def _scheduler(name):
    return dask.config.set(scheduler=name)


def test_output_chunks_hold_the_windows_that_end_in_each_input_chunk_and_short_chunks_merge():
    x = np.random.default_rng(1).standard_normal((1, 1, 21))
    # Kernel 5, stride 3, padding 2: windows 0-6 span cells -2..2, 1..5, ..., 16..20. Window 0 ends before
    # the chunk edge 5 and windows 0-2 before 10; the chunk 10..11 is shorter than the 4 cells a window
    # reaches back and merges with the next one, which holds windows 3-6.
    lazy = pkd.max_pool(da.from_array(x, chunks=((1,), (1,), (5, 5, 1, 10))), 5, 3, 2)
    assert lazy.chunks[2] == (1, 2, 4)
    with _scheduler("sync"):
        _assert_matches("max", lazy, pk.max_pool(x, 5, 3, 2))
    # Chunks of one cell are shorter than the 3 cells a window of 4 reaches back: they merge into chunks of
    # 4, 3, 3, 3, 3, 3 and 2 cells (the first 3 cells hold no window's last cell; the last chunk gives no halo).
    lazy = pkd.avg_pool(da.from_array(x, chunks=((1,), (1,), (1,) * 21)), 4, 1)
    assert lazy.chunks[2] == (1, 3, 3, 3, 3, 3, 2)
    with _scheduler("sync"):
        _assert_matches("avg", lazy, pk.avg_pool(x, 4, 1))


def test_chunks_are_kept_unless_too_short_and_building_computes_nothing():
    def refuse(block):
        raise AssertionError("building the graph computed a block")

    source = da.zeros((2, 3, 16, 12), chunks=(1, 3, 4, 6)).map_blocks(refuse, dtype=np.float64)
    assert pkd.avg_pool(source, 2).chunks == ((1, 1), (3,), (2, 2, 2, 2), (3, 3))
    # padding="same" here is (1, 1) per axis: window o ends at cell o + 1, so windows 0-2 end before edge 4.
    same = pkd.max_pool(source, 3, 1, "same")
    assert same.chunks == ((1, 1), (3,), (3, 4, 4, 5), (5, 7))
    assert pkd.max_pool(source, 3, 3).chunks[2:] == ((1, 1, 2, 1), (2, 2))
    for lazy in (same, pkd.avg_pool(source, 2), pkd.max_pool(source, 3, 3)):
        assert not _rechunk_layers(lazy)
    assert _rechunk_layers(pkd.max_pool(source, 6, 1))  # a window reaches back 5 cells, past a chunk of 4


def _rechunk_layers(lazy) -> list[str]:
    return [name for name in lazy.__dask_graph__().layers if name.startswith("rechunk")]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: pkd.max_pool(np.zeros((1, 1, 4, 4)), 2),
            PoolingTypeError,
            r"poolkit\.dask\.max_pool takes a dask\.array\.Array; got ndarray\. Wrap an array with "
            r"dask\.array\.from_array\(x, chunks=\.\.\.\).*or call the in-memory poolkit\.max_pool",
        ),
        (lambda: pkd.pool(da.zeros((1, 1, 4)), "median", 2), PoolingConfigError, r"op='median' is not an option"),
        (lambda: pkd.pyramid(da.zeros((1, 1, 4)), op="min"), PoolingConfigError, r"op='min' is not an option; use"),
        (lambda: pkd.pyramid(np.zeros((1, 1, 4))), PoolingTypeError, r"pyramid takes a dask\.array\.Array"),
        (lambda: pkd.pyramid(da.zeros((1, 1, 4)), levels=0), PoolingConfigError, r"levels=0 is too small"),
        (lambda: pkd.pyramid(da.zeros((1, 1, 4)), factor=1), PoolingConfigError, r"factor=1 is too small"),
        (lambda: pkd.pyramid(da.zeros((1, 1, 4)), factor=2.0), PoolingTypeError, r"factor=2\.0 must be an int"),
        (
            lambda: pkd.avg_pool(da.zeros((1, 1, 4, 4)), 3, padding=2),
            PoolingConfigError,
            r"padding=2 puts 2 cells on one side",
        ),
        (lambda: pkd.max_pool(da.zeros((4, 4)), 2), PoolingConfigError, r"poolkit\.dask\.max_pool takes \(N, C"),
        (
            lambda: pkd.max_pool(da.zeros((1, 1, 4), dtype=complex), 2),
            PoolingTypeError,
            r"needs an array of real numbers .* got dtype complex128",
        ),
        (lambda: pkd.max_pool(da.zeros((1, 1, 4)), 2, nan="drop"), PoolingConfigError, r"nan='drop' is not an option"),
        (lambda: pkd.lp_pool(da.zeros((1, 1, 4)), -1, 2), PoolingConfigError, r"p=-1 is not allowed"),
        (
            lambda: pkd.max_pool(da.zeros((1, 1, 4)), 2, ordered=1),
            PoolingTypeError,
            r"ordered=1 must be True, False or None",
        ),
        (
            lambda: pkd.max_pool(da.zeros((1, 1, 8))[da.zeros(8)[None, None] > 1][None, None], 2),
            PoolingConfigError,
            r"needs known chunk sizes.*compute_chunk_sizes\(\)",
        ),
    ],
)
def test_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_a_chunk_smaller_than_the_halo_is_rechunked_not_refused():
    x = np.arange(40.0).reshape(1, 1, 40)
    lazy = pkd.max_pool(da.from_array(x, chunks=2), 9, 1, "same")
    # A window reaches back 8 cells, so the input is rechunked to (8, 8, 8, 8, 8); with padding 4 on each
    # side window o ends at cell o + 4, and the output chunks hold windows 0-3, 4-11, 12-19, 20-27, 28-39.
    assert lazy.chunks[2] == (4, 8, 8, 8, 12)
    with _scheduler("sync"):
        _assert_matches("max", lazy, pk.max_pool(x, 9, 1, "same"))


class _CountingStore:
    """An on-disk array stand-in for ``da.from_array``: each read makes a new chunk, whose lifetime is counted."""

    def __init__(self, shape):
        self.shape, self.dtype, self.ndim = shape, np.dtype(np.float64), len(shape)
        self.live = self.peak = self.reads = 0

    def __getitem__(self, index):
        chunk = np.ones(self.shape)[index]  # a view of a fresh array: the chunk lives as long as the view
        if chunk.size:  # not Dask's probe for the result's type
            self.reads += 1
            self.live += 1
            self.peak = max(self.peak, self.live)
            weakref.finalize(chunk.base, self._release)
        return chunk

    def _release(self):
        self.live -= 1


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
@pytest.mark.parametrize("ordered", [None, True])
@pytest.mark.parametrize("store", [False, True])
@pytest.mark.parametrize(
    ("shape", "chunks", "args"),
    [
        ((1, 1, 128, 128), (1, 1, 8, 8), (3, 2, 1)),  # a 16 x 16 grid of chunks, halos along both axes
        ((1, 1, 30, 30, 30), (1, 1, 5, 5, 5), (3, 1, 1)),  # a 6 x 6 x 6 grid
        ((1, 1, 96), (1, 1, 8), (5, 1, 2)),  # 1-D: nothing to order
    ],
)
def test_a_whole_pass_keeps_only_a_few_input_chunks_in_memory(scheduler, ordered, store, shape, chunks, args):
    pk.max_pool(np.ones(shape), *args)  # compiled beforehand: a block that compiles lets the other thread read ahead
    source = _CountingStore(shape)
    lazy = pkd.max_pool(da.from_array(source, chunks=chunks), *args, ordered=ordered)
    ordering = [key for key in lazy.__dask_graph__() if isinstance(key, tuple) and key[0].startswith("poolkit-done")]
    assert bool(ordering) == (len(shape) > 3)  # one halo axis (1-D) needs no order
    with dask.config.set(scheduler=scheduler, num_workers=2):
        if store:  # through a rechunk, as before to_zarr
            da.store(lazy.rechunk(16), np.empty(lazy.shape), lock=False)
        else:
            lazy.compute()
    # A row of the 2-D grid is 16 chunks, a plane of the 3-D one 36. The synchronous scheduler runs the
    # graph in Dask's order. With two threads, one reads ahead while the other's block runs: a few chunks
    # (measured 3 to 6; 20 once, while the block compiled on a machine running a second test suite).
    assert source.live == 0 and source.peak <= (6 if scheduler == "sync" else 12), source.peak


def test_unordered_a_whole_pass_holds_rows_of_chunks():
    source = _CountingStore((1, 1, 128, 128))
    with dask.config.set(scheduler="sync"):
        pkd.max_pool(da.from_array(source, chunks=(1, 1, 8, 8)), 3, 2, 1, ordered=False).compute()
    assert source.peak > 16  # more than a row of the 16 x 16 grid: what the default's order avoids


def test_a_partial_read_reads_only_the_chunks_it_needs_unless_ordered():
    source = _CountingStore((1, 1, 64, 64))
    lazy = da.from_array(source, chunks=(1, 1, 8, 8))
    for ordered, reads in ((None, 4), (False, 4), (True, 64)):
        source.reads = 0
        with dask.config.set(scheduler="sync"):
            pkd.max_pool(lazy, 3, 2, 1, ordered=ordered)[..., -1:, -1:].compute()
        # The last window reads the last chunk and the tails of three before it; ordered, every block runs.
        assert source.reads == reads, ordered


@pytest.mark.parametrize("op", ["avg", "max"])
def test_pyramid_levels_match_repeated_in_memory_pooling(op):
    image = np.random.default_rng(2).standard_normal((1, 2, 13, 9))
    levels = pkd.pyramid(da.from_array(image, chunks=(1, 1, 4, 4)), levels=4, op=op)
    expected = image
    assert levels[0].shape == image.shape
    for level in levels[1:]:
        kernel = tuple(min(2, size) for size in expected.shape[2:])
        expected = IN_MEMORY[op](expected, kernel, 2, ceil_mode=True)
        assert level.chunks[2][0] == min(4, expected.shape[2])
        with _scheduler("sync"):
            _assert_matches(op, level, expected)
    assert [level.shape[2:] for level in levels] == [(13, 9), (7, 5), (4, 3), (2, 2)]


def test_ops_on_a_local_cluster(client):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 11, 10)).astype(np.float32)
    chunks = (1, 3, 5, 4)
    cases = [
        ("max", (), 3, dict(stride=2, padding="same", dilation=2)),
        ("avg", (), 3, dict(stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
        ("lp", (2.0,), (2, 3), dict(stride=1, mean=True)),
        ("min", (), 2, dict(stride=3, ceil_mode=True)),
    ]
    lazies = [LAZY[op](da.from_array(x, chunks=chunks), *args, k, **kw) for op, args, k, kw in cases]
    results = client.compute(lazies, sync=True)
    for (op, args, k, kw), result in zip(cases, results):
        expected = IN_MEMORY[op](x, *args, k, **kw)
        if op in ("max", "min"):
            np.testing.assert_array_equal(result, expected)
        else:
            np.testing.assert_allclose(result, expected, rtol=1e-5)


def test_pyramid_written_to_zarr_on_a_local_cluster(client, tmp_path):
    image = np.random.default_rng(4).integers(0, 255, (1, 1, 10, 12)).astype(np.uint8)
    levels = pkd.pyramid(da.from_array(image, chunks=(1, 1, 6, 6)), levels=3, op="max", zarr_path=tmp_path / "p.zarr")
    group = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")
    multiscales = group.attrs["multiscales"][0]
    assert [d["path"] for d in multiscales["datasets"]] == ["0", "1", "2"]
    assert multiscales["datasets"][2]["coordinateTransformations"][0]["scale"] == [1.0, 1.0, 4.0, 4.0]
    assert [a["name"] for a in multiscales["axes"]] == ["n", "c", "y", "x"]
    expected = image
    for name, level in zip("012", levels):
        np.testing.assert_array_equal(group[name][...], expected)
        np.testing.assert_array_equal(level.compute(), expected)
        assert group[name].chunks == tuple(min(c, s) for c, s in zip((1, 1, 6, 6), expected.shape))
        expected = pk.max_pool(expected, 2, ceil_mode=True)


async def _exit_now():
    """Ends the worker process at once, as a crash would (its nanny starts a new one)."""
    os._exit(1)


def _slow_copy(block):
    time.sleep(0.25)
    return block.copy()


def test_killing_a_worker_mid_computation_still_gives_the_right_result(client):
    x = np.random.default_rng(5).standard_normal((1, 1, 48, 32))
    source = da.from_array(x, chunks=(1, 1, 8, 16)).map_blocks(_slow_copy, dtype=x.dtype)
    lazy = pkd.avg_pool(source, 3, 2, 1)
    future = client.compute(lazy)
    victim = None
    deadline = time.monotonic() + 30
    while victim is None and time.monotonic() < deadline:
        holding = {worker: keys for worker, keys in client.has_what().items() if keys}
        victim = next(iter(holding), None)
        time.sleep(0.05)
    assert victim is not None and not future.done(), "the computation ended before a worker could be killed"
    client.run(_exit_now, workers=[victim], wait=False)
    result = future.result(timeout=120)
    np.testing.assert_allclose(result, pk.avg_pool(x, 3, 2, 1), rtol=1e-12)
    client.wait_for_workers(2, timeout=60)
    assert victim not in client.scheduler_info()["workers"]

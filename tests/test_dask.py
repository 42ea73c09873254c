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
    return op, x, args, kernel, kwargs, _chunkings(draw, shape)


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
    op, x, args, kernel, kwargs, chunks = case
    try:
        expected = IN_MEMORY[op](x, *args, kernel, **kwargs)
    except PoolingConfigError as err:
        with pytest.raises(PoolingConfigError, match=re.escape(str(err))):
            LAZY[op](da.from_array(x, chunks=chunks), *args, kernel, **kwargs)
        return
    lazy = LAZY[op](da.from_array(x, chunks=chunks), *args, kernel, **kwargs)
    with _scheduler("sync"):
        _assert_matches(op, lazy, expected)


def _scheduler(name):
    return dask.config.set(scheduler=name)


def test_chunks_that_miss_the_stride_move_to_window_starts_and_short_chunks_merge():
    x = np.random.default_rng(1).standard_normal((1, 1, 21))
    # Window starts (kernel 5, stride 3, padding 2) are -2, 1, 4, 7, 10, 13, 16: the chunk edges 5, 10
    # and 11 move up to the starts 7, 10 and 13, so the input chunks become 7, 3, 3, 8 (each at least
    # the halo of 5 - 3 = 2 cells) and the output chunks hold windows 0-2, 3, 4 and 5-6.
    lazy = pkd.max_pool(da.from_array(x, chunks=((1,), (1,), (5, 5, 1, 10))), 5, 3, 2)
    assert lazy.chunks[2] == (3, 1, 1, 2)
    with _scheduler("sync"):
        _assert_matches("max", lazy, pk.max_pool(x, 5, 3, 2))
    # Chunks of one cell are shorter than the halo (kernel 4, stride 1: 3 cells): they merge.
    lazy = pkd.avg_pool(da.from_array(x, chunks=((1,), (1,), (1,) * 21)), 4, 1)
    assert lazy.chunks[2] == (3, 3, 3, 3, 3, 3)
    with _scheduler("sync"):
        _assert_matches("avg", lazy, pk.avg_pool(x, 4, 1))


def test_aligned_chunks_keep_their_boundaries_and_building_computes_nothing():
    def refuse(block):
        raise AssertionError("building the graph computed a block")

    source = da.zeros((2, 3, 16, 12), chunks=(1, 3, 4, 6)).map_blocks(refuse, dtype=np.float64)
    assert pkd.avg_pool(source, 2).chunks == ((1, 1), (3,), (2, 2, 2, 2), (3, 3))
    # padding="same" here is (1, 1) per axis: window o starts at o - 1, so input edge 4 is window 5's start.
    same = pkd.max_pool(source, 3, 1, "same")
    assert same.chunks == ((1, 1), (3,), (5, 4, 4, 3), (7, 5))
    assert not _rechunk_layers(same) and not _rechunk_layers(pkd.avg_pool(source, 2))
    assert _rechunk_layers(pkd.max_pool(source, 3, 3))  # window starts 0, 3, 6, ...: edge 4 moves to 6


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
    # The halo is 8 cells, so the input is rechunked to (8, 8, 8, 8, 8); with padding 4 on each side,
    # window o starts at o - 4, and the output chunks hold windows 0-11, 12-19, 20-27, 28-35, 36-39.
    assert lazy.chunks[2] == (12, 8, 8, 8, 4)
    with _scheduler("sync"):
        _assert_matches("max", lazy, pk.max_pool(x, 9, 1, "same"))


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

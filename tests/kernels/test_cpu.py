"""The Numba kernels against the NumPy reference: same values, indices and gradients.

Max, min and indices must agree to the last bit; sums within float rounding.
The reference itself is tested against PyTorch and a brute-force loop.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import threading

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import poolkit as pk
from poolkit.kernels import cpu

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = ["float64", "float32", "float16", "int8", "uint8", "int32", "int64", "bool"]


@st.composite
def cases(draw):
    rank = draw(st.integers(1, 3))
    sliding = draw(st.booleans())  # stride-1 windows long enough for the doubling blocks
    if sliding:
        kernel = tuple(draw(st.integers(1, 9)) for _ in range(rank))
        stride = 1
        dilation = 1
    else:
        kernel = tuple(draw(st.integers(1, 4)) for _ in range(rank))
        stride = draw(st.none() | st.tuples(*[st.integers(1, 3)] * rank))
        dilation = tuple(draw(st.integers(1, 2)) for _ in range(rank))
    padding = draw(st.sampled_from(["same", "same_lower"]) | st.tuples(*[st.integers(0, k // 2) for k in kernel]))
    sizes = tuple(draw(st.integers(1, 12 if rank < 3 else 6)) for _ in range(rank))
    if draw(st.booleans()):  # rows too long for small channels-first planes to be pooled as lanes (_as_lanes)
        sizes = (*sizes[:-1], draw(st.integers(cpu.LANE_ROW + 1, cpu.LANE_ROW + 8)))
    shape = (draw(st.integers(0, 2)), draw(st.integers(1, 5)), *sizes)
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if dtype == "bool":
        x = rng.random(shape) < 0.5
    elif np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        x = rng.integers(max(info.min, -100), min(info.max, 100), shape, endpoint=True).astype(dtype)
        x.flat[:: max(1, x.size // 3)] = info.min if draw(st.booleans()) else info.max
    else:
        x = rng.integers(-3, 4, shape).astype(dtype)  # ties
        if draw(st.booleans()):
            x = (x + rng.standard_normal(shape)).astype(dtype)
        if draw(st.booleans()):
            x[rng.random(shape) < 0.25] = np.nan
    layout = draw(st.sampled_from(["first", "last", "reversed"]))
    return dict(
        x=x,
        layout=layout,
        kernel=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        ceil_mode=draw(st.booleans()),
        rng=rng,
    )


@pytest.fixture(autouse=True)
def _threads_for_every_size(monkeypatch):
    """Split even the tests' small inputs across threads, as large inputs are."""
    monkeypatch.setattr(cpu, "SERIAL_CELLS", 0)


def _arrange(x, layout):
    """The same values as channels-first ``x``, passed in the case's layout."""
    if layout == "last":
        return np.ascontiguousarray(np.moveaxis(x, 1, -1)), True
    if layout == "reversed":  # a negative-stride, non-contiguous view
        return x[:, ::-1][:, ::-1], False
    return x, False


def _geometry(case):
    return {name: case[name] for name in ("stride", "padding", "dilation", "ceil_mode")}


def _both(op, case, *args, **params):
    x, channels_last = _arrange(case["x"], case["layout"])
    results = []
    for backend in ("numba", "numpy"):
        try:
            results.append(pk.vjp(op, x, *args, channels_last=channels_last, backend=backend, **params))
        except pk.PoolingConfigError as err:
            results.append(str(err))
    return results


def _assert_close_values(fast, ref, tolerances):
    """Sums agree within the rounding of their dtype (the kernels add in another order)."""
    assert fast.dtype == ref.dtype
    tolerance = tolerances[ref.dtype.type]
    np.testing.assert_allclose(fast, ref, rtol=tolerance, atol=tolerance)


def _assert_same_gradient(fast, ref, case, exact):
    (y_fast, pull_fast), (_, pull_ref) = fast, ref
    y = y_fast[0] if isinstance(y_fast, tuple) else y_fast
    dy = case["rng"].standard_normal(y.shape)
    dx_fast, dx_ref = pull_fast(dy), pull_ref(dy)
    assert dx_fast.dtype == dx_ref.dtype and dx_fast.shape == dx_ref.shape
    if exact:
        np.testing.assert_array_equal(dx_fast, dx_ref)
    else:
        # Numba accumulates into dx's own dtype, the reference in float64
        tolerance = {np.dtype(np.float16): 1e-2, np.dtype(np.float32): 1e-5}.get(dx_ref.dtype, 1e-10)
        np.testing.assert_allclose(dx_fast, dx_ref, rtol=tolerance, atol=tolerance)


@SETTINGS
@given(cases(), st.sampled_from(["max", "min"]), st.sampled_from(["propagate", "ignore"]), st.booleans())
def test_selects_match_reference(case, op, nan, return_indices):
    fn = pk.max_pool if op == "max" else pk.min_pool
    geometry = _geometry(case)
    fast, ref = _both(fn, case, case["kernel"], return_indices=return_indices, nan=nan, **geometry)
    if isinstance(ref, str):
        assert fast == ref
        return
    if return_indices:
        (y_fast, i_fast), (y_ref, i_ref) = fast[0], ref[0]
        np.testing.assert_array_equal(i_fast, i_ref)
    else:
        y_fast, y_ref = fast[0], ref[0]
    assert y_fast.dtype == y_ref.dtype == case["x"].dtype
    np.testing.assert_array_equal(y_fast, y_ref)  # NaN-aware, exact
    # the pullback sums dy per chosen cell; with overlaps the order of additions may differ
    _assert_same_gradient(fast, ref, case, exact=False)


@SETTINGS
@given(cases(), st.booleans(), st.none() | st.integers(1, 7))
def test_avg_matches_reference(case, count_include_pad, divisor_override):
    geometry = _geometry(case)
    fast, ref = _both(
        pk.avg_pool,
        case,
        case["kernel"],
        count_include_pad=count_include_pad,
        divisor_override=divisor_override,
        **geometry,
    )
    if isinstance(ref, str):
        assert fast == ref
        return
    _assert_close_values(fast[0], ref[0], {np.float16: 2e-3, np.float32: 1e-6, np.float64: 1e-12})
    _assert_same_gradient(fast, ref, case, exact=False)


@SETTINGS
@given(cases(), st.sampled_from([0.5, 1.0, 2.0, 3.0, float("inf")]), st.booleans())
def test_lp_matches_reference(case, p, mean):
    geometry = _geometry(case)
    fast, ref = _both(pk.lp_pool, case, p, case["kernel"], mean=mean, **geometry)
    if isinstance(ref, str):
        assert fast == ref
        return
    _assert_close_values(fast[0], ref[0], {np.float16: 2e-3, np.float32: 1e-5, np.float64: 1e-10})
    if case["x"].dtype.kind == "f" and not np.isnan(case["x"]).any():
        _assert_same_gradient(fast, ref, case, exact=False)


@pytest.mark.parametrize("op", [pk.max_pool2d, pk.avg_pool2d, pk.min_pool2d])
def test_big_endian_and_read_only_inputs(op):
    """Numba takes native byte order only: other orders are converted, and the result keeps the dtype."""
    x = np.random.default_rng(3).standard_normal((2, 3, 7, 7))
    frozen = x.copy()
    frozen.flags.writeable = False
    want = op(x, 3, 2, 1, backend="numpy")
    for arr in (x.astype(">f8"), frozen):
        got = op(arr, 3, 2, 1, backend="numba")
        assert got.dtype == arr.dtype
        np.testing.assert_allclose(got, want, rtol=1e-12)
        y, pullback = pk.vjp(op, arr, 3, 2, 1, backend="numba")
        dx = pullback(np.ones(y.shape, dtype=">f8"))
        _, reference = pk.vjp(op, x, 3, 2, 1, backend="numpy")
        np.testing.assert_allclose(dx, reference(np.ones(y.shape)), rtol=1e-12)


def _compiled_signatures() -> int:
    return sum(len(f.signatures) for f in vars(cpu).values() if isinstance(f, numba.core.dispatcher.Dispatcher))


@pytest.mark.parametrize("op", [pk.max_pool2d, pk.avg_pool2d, pk.lp_pool2d, pk.adaptive_max_pool2d])
@pytest.mark.parametrize("shape", [(2, 3, 9, 9), (1, 2, 40, 40)])  # small planes as lanes, larger one by one
def test_read_only_inputs_run_the_kernels_compiled_for_writeable_ones(op, shape):
    """A read-only input (a Dask chunk, a memory map) and a read-only gradient compile nothing more, give the
    same bits and are not written."""
    args = (3,) if op is pk.adaptive_max_pool2d else (2, 3, 2) if op is pk.lp_pool2d else (3, 2, 1)
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    y, pullback = pk.vjp(op, x, *args)
    dx = pullback(np.ones_like(y))
    before = _compiled_signatures()
    frozen, ones = x.copy(), np.ones_like(y)
    frozen.flags.writeable = ones.flags.writeable = False
    y_frozen, pullback_frozen = pk.vjp(op, frozen, *args)
    dx_frozen = pullback_frozen(ones)
    assert _compiled_signatures() == before
    np.testing.assert_array_equal(y_frozen, y)
    np.testing.assert_array_equal(dx_frozen, dx)
    np.testing.assert_array_equal(frozen, x)
    assert (ones == 1).all() and not frozen.flags.writeable


def test_integer_windows_are_never_summed_in_their_own_dtype():
    """The fused pass of sums is not compiled for integers (they are summed as float64 cell values): reached
    anyway, it raises instead of returning wrong sums."""
    geom, taps = cpu._tables(pk.Window.build((8,), 2, stride=2))
    cells, sums = np.arange(8, dtype=np.int32).reshape(1, 8, 1), np.zeros((1, 4, 1), dtype=np.int32)
    with pytest.raises(AssertionError, match="integer windows are summed in float64"):
        cpu._line_pass(cpu.SUM, cpu.KEEP_NANS, cells, sums, geom[2], taps[2], np.int32(0))
    cpu._line_pass(cpu.MAX, cpu.KEEP_NANS, cells, sums, geom[2], taps[2], np.int32(-(2**31)))
    np.testing.assert_array_equal(sums.reshape(-1), [1, 3, 5, 7])  # the same call for a select pools


def test_averages_divide_like_the_reference_and_torch():
    """``sum / divisor``, not ``sum * (1 / divisor)``: the same last bit as the reference."""
    x = np.random.default_rng(4).standard_normal((2, 3, 200))
    np.testing.assert_array_equal(pk.avg_pool1d(x, 3, backend="numba"), pk.avg_pool1d(x, 3, backend="numpy"))
    assert pk.avg_pool(np.array([[[0.1, 0.2, 0.3]]]), 3).item() == 0.20000000000000004


def test_sliding_sums_of_negative_zeros_are_positive_zero():
    """A direct sum starts from +0.0, so a window of -0.0 sums to +0.0; the doubling blocks must agree."""
    x = np.full((1, 1, 6), -0.0)
    for kernel in (3, 5):
        assert not np.signbit(pk.avg_pool(x, kernel, 1, backend="numba")).any()


def test_extended_precision_uses_the_reference():
    x = np.arange(8, dtype=np.longdouble).reshape(1, 1, 8)
    assert pk.max_pool(x, 2, backend="numba").dtype == np.longdouble
    np.testing.assert_array_equal(pk.avg_pool(x, 2, backend="numba"), [[[0.5, 2.5, 4.5, 6.5]]])


def test_rank_above_three_uses_the_reference():
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 4, 5, 6))
    np.testing.assert_array_equal(pk.max_pool(x, 2, backend="numba"), pk.max_pool(x, 2, backend="numpy"))


def test_concurrent_calls_from_python_threads():
    """Several Python threads pooling at once each get their own, correct, result."""
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((4, 8, 40, 40)).astype(np.float32) for _ in range(6)]
    expected = [pk.max_pool2d(x, 3, 2, 1, backend="numpy") for x in inputs]
    results, errors = [None] * len(inputs), []

    def work(i):
        try:
            for _ in range(5):
                results[i] = pk.max_pool2d(inputs[i], 3, 2, 1, backend="numba")
        except Exception as err:  # collected and re-raised in the main thread
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.integers(2, 6), st.sampled_from(["max", "min", "argmax", "avg", "lp"]))
def test_bands_of_rows_give_the_results_of_one_thread(case, threads, op):
    """Fewer planes than threads: each plane is cut into bands of output rows, with the same bits as one thread."""
    base = case["x"][:1, :2]
    x, channels_last = _arrange(base, case["layout"])
    fn = {
        "max": pk.max_pool,
        "min": pk.min_pool,
        "argmax": lambda data, *args, **kw: pk.max_pool(data, *args, return_indices=True, **kw),
        "avg": pk.avg_pool,
        "lp": lambda data, *args, **kw: pk.lp_pool(data, 3.0, *args, **kw),
    }[op]
    params = dict(_geometry(case), channels_last=channels_last, backend="numba")
    if op == "avg":
        params.pop("dilation")
    banded, real_bands = [], cpu._bands
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cpu, "SERIAL_CELLS", 0)
        patch.setenv("POOLKIT_NUM_THREADS", "1")
        try:
            want = fn(x, case["kernel"], **params)
        except pk.PoolingConfigError:
            return
        patch.setattr(cpu, "_bands", lambda *args: banded.append(len(real_bands(*args))) or real_bands(*args))
        patch.setenv("POOLKIT_NUM_THREADS", str(threads))
        got = fn(x, case["kernel"], **params)
    got_parts, want_parts = (r if isinstance(r, tuple) else (r,) for r in (got, want))
    for got_part, want_part in zip(got_parts, want_parts, strict=True):  # values, and indices for argmax
        np.testing.assert_array_equal(got_part, want_part)
    planes = base.shape[0] if channels_last else base.shape[0] * base.shape[1]
    if not 0 < planes < threads:
        assert banded == []


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (1, 2, 5, 40, 9), (1, 1, 90)])
def test_a_plane_is_pooled_in_bands_by_every_thread(monkeypatch, channels_last, shape):
    """Fewer planes than four threads: each plane's output rows (first spatial axis) are cut into bands, a call each."""
    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    if channels_last:
        x = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 1, -1)), -1, 1)
    want = pk.avg_pool(x, 3, stride=2, padding=1, backend="numpy")
    monkeypatch.setenv("POOLKIT_NUM_THREADS", "4")
    calls = []
    real_run = cpu._run
    monkeypatch.setattr(cpu, "_run", lambda work: calls.append(sum(map(len, work))) or real_run(work))
    np.testing.assert_allclose(pk.avg_pool(x, 3, stride=2, padding=1), want, rtol=1e-6, atol=1e-6)
    planes = 1 if channels_last else shape[1]
    assert calls[0] == planes * min(-(-4 // planes), want.shape[2])


def test_calls_side_by_side_share_the_threads(monkeypatch):
    """Two calls running at once (two Dask blocks, say) get half the threads each, then one gets them all."""
    monkeypatch.setenv("POOLKIT_NUM_THREADS", "4")
    both_in, seen = threading.Barrier(2), []

    @cpu._shared
    def side_by_side():
        both_in.wait(timeout=30)
        seen.append(cpu.thread_count())
        both_in.wait(timeout=30)

    def two_at_once():
        seen.clear()
        threads = [threading.Thread(target=side_by_side) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return seen

    alone = cpu._shared(cpu.thread_count)
    assert two_at_once() == [2, 2] and alone() == 4 == cpu.thread_count()
    for entry in (cpu.forward, cpu.backward, cpu.bins_forward, cpu.bins_backward):
        assert entry.__wrapped__  # counted by _shared
    monkeypatch.setenv("POOLKIT_NUM_THREADS", "1")
    assert two_at_once() == [1, 1]  # never below one


def test_thread_count_follows_environment(monkeypatch):
    import numba

    monkeypatch.delenv("POOLKIT_NUM_THREADS", raising=False)
    assert cpu.thread_count() == numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        assert cpu.thread_count() == 1
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    monkeypatch.setenv("POOLKIT_NUM_THREADS", "3")
    assert cpu.thread_count() == 3
    x = np.random.default_rng(1).standard_normal((3, 5, 9, 9))
    np.testing.assert_allclose(pk.avg_pool2d(x, 2), pk.avg_pool2d(x, 2, backend="numpy"), rtol=1e-12, atol=1e-15)
    monkeypatch.setenv("POOLKIT_NUM_THREADS", "many")
    with pytest.raises(pk.PoolingConfigError, match=r"POOLKIT_NUM_THREADS='many' must be a positive integer"):
        pk.avg_pool2d(x, 2)
    monkeypatch.setenv("POOLKIT_NUM_THREADS", "0")
    with pytest.raises(pk.PoolingConfigError, match=r"POOLKIT_NUM_THREADS='0' must be a positive integer"):
        pk.avg_pool2d(x, 2)


def test_import_compiles_nothing():
    """``import poolkit`` loads neither Numba nor a kernel; the first call does."""
    code = "import sys, poolkit; print('numba' in sys.modules, 'poolkit.kernels.cpu' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_BOUNDSCHECK"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["False", "False"]


def test_backend_choice():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(pk.max_pool2d(x, 2, backend="auto"), pk.max_pool2d(x, 2, backend="numba"))
    with pytest.raises(
        pk.PoolingConfigError, match=r"backend='gpu' is not available; use one of 'auto', 'numba', 'numpy'"
    ):
        pk.max_pool2d(x, 2, backend="gpu")


def test_environment_chooses_the_auto_backend(monkeypatch):
    from poolkit.kernels import get_backend, numpy_ref

    monkeypatch.setenv("POOLKIT_BACKEND", "numpy")
    assert get_backend("auto") is numpy_ref
    assert get_backend("numba") is cpu  # an explicit choice wins
    monkeypatch.setenv("POOLKIT_BACKEND", "numba")
    assert get_backend("auto") is cpu
    monkeypatch.setenv("POOLKIT_BACKEND", "cuda")
    with pytest.raises(pk.PoolingConfigError, match=r"POOLKIT_BACKEND='cuda' is not a backend; set it to 'numba' or"):
        pk.max_pool2d(np.ones((1, 1, 4, 4)), 2)


def test_without_numba_auto_falls_back_to_numpy_and_numba_is_refused(monkeypatch):
    from poolkit import kernels

    monkeypatch.delenv("POOLKIT_BACKEND", raising=False)
    monkeypatch.setattr(kernels, "_compiled", lambda: ImportError("No module named 'numba'"))
    assert kernels.get_backend("auto") is kernels.numpy_ref
    with pytest.raises(
        pk.PoolingConfigError,
        match=r"backend='numba' needs Numba, which does not import here \(No module named 'numba'\); install numba",
    ):
        kernels.get_backend("numba")


REDUCTIONS = {
    "max": pk.reducers.max_reduction(),
    "min": pk.reducers.min_reduction(),
    "max-ignore-nan": pk.reducers.max_reduction("ignore"),
    "avg": pk.reducers.avg_reduction(),
    "l2": pk.reducers.lp_reduction(2.0),
    "l3-mean": pk.reducers.lp_reduction(3.0, mean=True),
    "linf": pk.reducers.lp_reduction(np.inf),
}


@st.composite
def bins_cases(draw):
    rank = draw(st.integers(1, 3))
    sizes = tuple(draw(st.integers(1, 9)) for _ in range(rank))
    output = tuple(draw(st.none() | st.integers(1, 10)) for _ in range(rank))
    shape = (draw(st.integers(0, 2)), draw(st.integers(1, 4)), *sizes)
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.integers(-3, 4, shape).astype(dtype) if dtype != "bool" else rng.random(shape) < 0.5
    if x.dtype.kind == "f":
        if draw(st.booleans()):
            x[rng.random(shape) < 0.1] = np.nan
        x[x == 0] = rng.choice([0.0, -0.0], int((x == 0).sum()))
    return x, pk.geometry.Bins.adaptive(sizes, output), draw(st.booleans()), draw(st.integers(1, 64))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bins_cases(), st.sampled_from(sorted(REDUCTIONS)), st.booleans())
def test_bins_match_reference(case, name, want_indices):
    x, bins, channels_last, group_cells = case
    reduction = REDUCTIONS[name]
    if channels_last:
        x = np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 1, -1)), -1, 1)
    want_indices = want_indices and reduction.selects
    saved, cpu.GROUP_CELLS = cpu.GROUP_CELLS, group_cells  # many groups per call, as large inputs have
    try:
        y, indices = cpu.bins_forward(x, bins, reduction, want_indices)
    finally:
        cpu.GROUP_CELLS = saved
    expected, expected_indices = pk.kernels.numpy_ref.bins_forward(x, bins, reduction, want_indices)
    assert y.dtype == expected.dtype
    if reduction.selects:
        np.testing.assert_array_equal(y, expected)
        assert (np.signbit(y) == np.signbit(expected)).all()  # +0.0 / -0.0 ties go to the first
    else:
        np.testing.assert_allclose(y, expected, rtol=1e-6 if y.dtype.itemsize < 8 else 1e-12)
    if not want_indices and reduction.selects:
        return
    np.testing.assert_array_equal(indices, expected_indices)
    dy = np.random.default_rng(0).standard_normal(y.shape)
    dx = cpu.bins_backward(dy, x, y, indices, bins, reduction)
    expected_dx = pk.kernels.numpy_ref.bins_backward(dy, x, expected, expected_indices, bins, reduction)
    # Numba accumulates overlapping bins into dx's own dtype, the reference in float64: where they cancel, a
    # float32 cell is off by a few units in the last place of the cells that cancelled
    tolerance = 1e-5 if dx.dtype.itemsize < 8 else 1e-12
    np.testing.assert_allclose(dx, expected_dx, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["max", "min", "max-ignore-nan"])
@pytest.mark.parametrize("length", [15, 16, 49, 100])
def test_selects_by_bits_agree_bit_for_bit(dtype, name, length):
    """Long float runs select by the integer maxima of their bits; NaN payloads, signed zeros and infinities
    come out as the scan's."""
    rng = np.random.default_rng(length)
    x = rng.standard_normal((64, length)).astype(dtype)
    x[1:8] = rng.choice(np.array([0.0, -0.0], dtype=dtype), (7, length))  # zero ties: the first zero wins
    x[8:12, rng.integers(0, length, 4)] = np.inf
    x[12:16, rng.integers(0, length, 4)] = -np.inf
    payloads = np.arange(1, 9, dtype=np.int32 if dtype == np.float32 else np.int64)
    nans = (np.array([np.nan], dtype=dtype).view(payloads.dtype) | payloads).view(dtype)
    x[16:24, rng.integers(0, length, 8)] = nans  # NaNs of eight payloads in each row
    x[24:28, :] = np.nan
    x[28:30, :] = -nans[:, None][:2]  # NaNs alone, of another sign and payload: the first one stays
    x[30:32, ::2] = -np.nan
    x[32:40] = np.abs(x[32:40]) * rng.choice([-1, 1], (8, 1))  # rows of one sign
    x = x.reshape(1, 1, 64, length)  # each row a bin of its own: runs of exactly `length` cells
    reduction = REDUCTIONS[name]
    bins = pk.geometry.Bins.adaptive((64, length), (64, 1))
    y, _ = cpu.bins_forward(x, bins, reduction)
    expected, _ = pk.kernels.numpy_ref.bins_forward(x, bins, reduction)
    bits = np.int32 if dtype == np.float32 else np.int64
    np.testing.assert_array_equal(y.view(bits), expected.view(bits))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
@pytest.mark.parametrize("name", ["max", "min", "max-ignore-nan"])
@pytest.mark.parametrize(
    ("shape", "output"), [((3, 2, 23, 37), (5, 4)), ((2, 1, 6, 9, 11), (2, 3, 4)), ((1, 2, 8, 9), (3, 9))]
)
def test_selects_along_columns_first_agree_bit_for_bit(dtype, name, shape, output):
    """Channels-first selects pooled along H (and D) before W: zero ties and NaN payloads come out as the
    row-major scan's, with many bins all zeros, all NaNs, or holding NaNs of several payloads."""
    rng = np.random.default_rng(sum(shape))
    x = rng.integers(-2, 3, shape).astype(dtype)
    bins = pk.geometry.Bins.adaptive(shape[2:], output)
    if x.dtype.kind == "f":
        x[x == 0] = rng.choice(np.array([0.0, -0.0], dtype=dtype), int((x == 0).sum()))
        x[0, 0] = np.abs(x[0, 0]) * 0  # a plane of zeros of both signs
        bits = np.int32 if dtype == np.float32 else np.int64
        payloads = np.arange(1, 9, dtype=bits)
        nans = (np.array([np.nan], dtype=dtype).view(bits) | payloads).view(dtype)
        flat = x.reshape(-1)
        flat[rng.choice(flat.size, flat.size // 20, replace=False)] = rng.choice(
            np.concatenate([nans, -nans]), flat.size // 20
        )
        x[-1, -1] = -nans[3]  # a plane of one NaN
    reduction = REDUCTIONS[name]
    y, _ = cpu.bins_forward(x, bins, reduction)
    expected, _ = pk.kernels.numpy_ref.bins_forward(x, bins, reduction)
    view = {np.float32: np.int32, np.float64: np.int64, np.int16: np.int16}[dtype]
    np.testing.assert_array_equal(y.view(view), expected.view(view))


@pytest.mark.parametrize("dy_dtype", [np.float16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("op", ["avg", "lp"])
def test_pullbacks_of_sums_take_dy_of_any_dtype(op, dy_dtype):
    """The kernels divide ``dy`` themselves: a dy of a dtype they do not compile (float16, integers) is widened."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 9, 10)).astype(np.float32)
    fn, args = (pk.avg_pool2d, (3,)) if op == "avg" else (pk.lp_pool2d, (3.0, 3))
    dy = rng.integers(-3, 4, fn(x, *args, stride=2, padding=1).shape).astype(dy_dtype)
    dx = [pk.vjp(fn, x, *args, stride=2, padding=1, backend=backend)[1](dy) for backend in ("numba", "numpy")]
    assert dx[0].dtype == dx[1].dtype == np.float32
    np.testing.assert_allclose(dx[0], dx[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    ("kernel", "stride"), [(2, 1), (3, 1), (4, 1), (2, 2), (3, 2), (4, 2), (3, 3), (4, 4), (2, 3), (4, 3)]
)
@pytest.mark.parametrize("op", [pk.max_pool2d, pk.min_pool2d, pk.avg_pool2d])
def test_windows_of_adjacent_taps_agree_bit_for_bit(op, kernel, stride, channels_last):
    """Fused windows (all taps in one loop), at the edges and inside, on rows and lanes: the scan's bits.

    Signed zeros and NaNs of several payloads test the scan order of a select;
    small integers make every sum exact, so averages must agree to the bit too.
    Strides 3 with 2 or 4 taps go along rows by the tap loops.
    """
    rng = np.random.default_rng(kernel * 10 + stride)
    nans = (np.array([np.nan] * 3, dtype=np.float32).view(np.int32) | np.arange(1, 4, dtype=np.int32)).view(np.float32)
    choices = np.concatenate([[0.0, -0.0, 1.0, -1.0, 2.0, np.inf, -np.inf], nans]).astype(np.float32)
    paddings = [(0, False), (kernel // 2, False), (kernel // 2, True), ("same", False), ("same_lower", False)]
    # Channels-first planes of (13, 29) are pooled as lanes (_as_lanes), of (5, 41) one by one along rows.
    for shape, (padding, ceil_mode) in itertools.product([(2, 3, 13, 29), (1, 2, 5, 41), (1, 2, 1, 2)], paddings):
        x = rng.choice(choices[:5] if op is pk.avg_pool2d else choices, size=shape)  # (1, 2): taps outside the line
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if channels_last else x
        params = dict(stride=stride, padding=padding, ceil_mode=ceil_mode, channels_last=channels_last)
        try:
            expected = op(x, kernel, backend="numpy", **params)
        except pk.PoolingConfigError as err:
            with pytest.raises(pk.PoolingConfigError, match=re.escape(str(err))):
                op(x, kernel, backend="numba", **params)
            continue
        fast = op(x, kernel, backend="numba", **params)
        np.testing.assert_array_equal(fast.view(np.int32), expected.view(np.int32))


@pytest.mark.parametrize(
    ("shape", "kernel", "stride", "padding", "dilation", "ceil_mode", "channels_last"),
    [
        ((2, 3, 300, 301), 3, 2, 1, 1, False, False),
        ((1, 2, 300, 300), 3, 1, 1, 1, True, False),
        ((2, 3, 257, 190), (4, 3), (3, 2), (2, 1), (2, 1), True, True),
        ((1, 2, 129, 400), (3, 5), (1, 2), (1, 2), (3, 1), False, False),
    ],
)
@pytest.mark.parametrize("op", ["max", "min", "avg", "lp"])
def test_large_planes_pooled_in_strips(shape, kernel, stride, padding, dilation, ceil_mode, channels_last, op):
    """Planes larger than one strip (STRIP_CELLS) go strip by strip; values and gradients as the reference."""
    rng = np.random.default_rng(sum(shape))
    x = rng.integers(-3, 4, shape).astype(np.float32)
    x[rng.random(shape) < 0.01] = np.nan
    x[x == 0] = rng.choice(np.array([0.0, -0.0], dtype=np.float32), int((x == 0).sum()))
    x, _ = _arrange(x, "last" if channels_last else "first")
    fn = getattr(pk, f"{op}_pool2d")
    args = (2.0,) if op == "lp" else ()
    params = dict(stride=stride, padding=padding, ceil_mode=ceil_mode, channels_last=channels_last)
    if op != "avg":  # avg pools the same planes undilated
        params["dilation"] = dilation
    (y, pull), (y_ref, pull_ref) = (
        pk.vjp(fn, x, *args, kernel, backend=backend, **params) for backend in ("numba", "numpy")
    )
    dy = rng.standard_normal(y.shape)
    if op in ("max", "min"):
        np.testing.assert_array_equal(y, y_ref)
        assert (np.signbit(y) == np.signbit(y_ref)).all()
    else:
        np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    # overlapping windows add into float32 dx here, in float64 in the reference
    np.testing.assert_allclose(pull(dy), pull_ref(dy), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "kernel", "channels_last", "lanes", "extent"),
    [
        ((1, 2, 3, 60, 400), (1, 9, 5), False, 400, 60 + 9 - 1),  # the H pass: lanes are the 400 cells of a row
        ((1, 600, 1, 12, 30), (1, 5, 13), True, 600, 30 + 13 - 1),  # the W pass: lanes are the 600 channels
    ],
)
@pytest.mark.parametrize("op", ["max", "min", "avg"])
def test_sliding_windows_over_more_lanes_than_one_doubling_block(shape, kernel, channels_last, lanes, extent, op):
    """Stride-1 windows whose lines hold more lanes than one doubling block (``DOUBLING_CELLS // extent``)
    pool a block at a time through the buffer, not straight into the output; values and gradients as the
    reference."""
    assert max(cpu.LANE_BLOCK, cpu.DOUBLING_CELLS // extent) < lanes
    rng = np.random.default_rng(lanes)
    x = rng.standard_normal(shape).astype(np.float32)  # few ties: a window short of a cell shows
    zeros = rng.random(shape) < 0.02
    x[zeros] = rng.choice(np.array([0.0, -0.0], dtype=np.float32), int(zeros.sum()))
    x[rng.random(shape) < 0.001] = np.nan
    x, _ = _arrange(x, "last" if channels_last else "first")
    fn = getattr(pk, f"{op}_pool3d")
    params = dict(stride=1, padding=tuple(k // 2 for k in kernel), channels_last=channels_last)
    (y, pull), (y_ref, pull_ref) = (pk.vjp(fn, x, kernel, backend=b, **params) for b in ("numba", "numpy"))
    plain = fn(x, kernel, **params)  # without a pullback a select pools as a sum does, by the doubling blocks
    for result in (y, plain):
        if op == "avg":
            np.testing.assert_allclose(result, y_ref, rtol=1e-5, atol=1e-5)
        else:
            np.testing.assert_array_equal(result, y_ref)
            assert (np.signbit(result) == np.signbit(y_ref)).all()
    dy = rng.standard_normal(y.shape)
    np.testing.assert_allclose(pull(dy), pull_ref(dy), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["max", "avg"])
def test_one_input_plane_padded_into_two_output_planes_is_not_pooled_as_one_strip_plane(op):
    """Depth 1 with padding along D gives two output planes: the strip path (one plane out) must not take it."""
    x = np.random.default_rng(6).standard_normal((1, 1, 1, 300, 300)).astype(np.float32)
    fn = getattr(pk, f"{op}_pool3d")
    (y, pull), (y_ref, pull_ref) = (
        pk.vjp(fn, x, (2, 3, 3), stride=1, padding=1, backend=backend) for backend in ("numba", "numpy")
    )
    assert y.shape == (1, 1, 2, 300, 300)
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-6)
    dy = np.random.default_rng(7).standard_normal(y.shape)
    np.testing.assert_allclose(pull(dy), pull_ref(dy), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["max", "avg", "l3-mean"])
def test_global_pooling_of_four_axes_runs_compiled(name):
    """Four spatial axes pooled whole merge into one run, so the compiled kernels take them."""
    x = np.random.default_rng(4).standard_normal((2, 3, 3, 4, 2, 5))
    bins = pk.geometry.Bins.adaptive(x.shape[2:], 1)
    assert bins.merged_bins.rank == 1
    y, _ = cpu.bins_forward(x, bins, REDUCTIONS[name])
    expected, _ = pk.kernels.numpy_ref.bins_forward(x, bins, REDUCTIONS[name])
    np.testing.assert_allclose(y, expected, rtol=1e-12)

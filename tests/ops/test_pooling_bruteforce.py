"""Max, min, Lp and avg pooling against a brute-force, per-output-element oracle.

The oracle below is written from the semantic contract (DESIGN.md §3) alone: it
derives padding, output sizes and window positions itself and never imports
``poolkit.geometry``, ``poolkit.reducers`` or ``poolkit.kernels``. It visits
every output cell, walks the window's taps in row-major order and reduces the
real (non-padding) cells with plain Python scalars. Hypothesis draws the
configurations (rank 1..3, kernel, stride, dilation, every padding form,
ceil mode, channels-last); where the oracle finds a configuration invalid
(a numeric padding above ``k // 2``, no output, or a window that reads only
padding), poolkit must raise :class:`poolkit.PoolingConfigError`, and only there.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import poolkit as pk

# --------------------------------------------------------------------------------------
# The oracle: geometry
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AxisGeometry:
    size: int
    kernel: int
    stride: int
    dilation: int
    pad_before: int
    pad_after: int
    out: int

    def positions(self, o: int) -> list[int]:
        return [o * self.stride - self.pad_before + j * self.dilation for j in range(self.kernel)]


@dataclass(frozen=True)
class Geometry:
    axes: tuple[AxisGeometry, ...]
    refused: str | None  # why poolkit must refuse the configuration, or None

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(a.out for a in self.axes)


def oracle_axis(size, kernel, stride, dilation, pad, ceil_mode) -> tuple[AxisGeometry, str | None]:
    """One axis from the formulas of the contract.

    ``pad`` is an int (PyTorch's form, at most ``kernel // 2``), a ``(before, after)`` pair (ONNX's form, any
    size) or a mode string.
    """
    stride = kernel if stride is None else stride
    refused = None
    if isinstance(pad, str):
        if pad == "valid":
            before = after = 0
        else:
            same_out = -(-size // stride)
            total = max((same_out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
            if pad == "same":
                before = total // 2
                after = total - before
            else:  # same_lower
                after = total // 2
                before = total - after
    elif isinstance(pad, int):
        before = after = pad
        if pad > kernel // 2:
            refused = "numeric padding above kernel // 2"
    else:
        before, after = pad
    numerator = size + before + after - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = math.floor(numerator / stride) + 1
    if ceil_mode and (out - 1) * stride >= size + before:
        out -= 1
    axis = AxisGeometry(size, kernel, stride, dilation, before, after, out)
    if refused is None and dilation * (kernel - 1) + 1 > size + before + after:
        refused = "window longer than the padded input"  # in every mode, ceil included
    if refused is None and out < 1:
        refused = "no output"
    if refused is None:
        for o in range(out):
            if not any(0 <= p < size for p in axis.positions(o)):
                refused = f"window {o} reads only padding"
                break
    return axis, refused


def oracle_geometry(spatial, kernel, stride, dilation, pads, ceil_mode) -> Geometry:
    axes, reasons = [], []
    for i, size in enumerate(spatial):
        axis, why = oracle_axis(size, kernel[i], None if stride is None else stride[i], dilation[i], pads[i], ceil_mode)
        axes.append(axis)
        if why:
            reasons.append(f"axis {i}: {why}")
    return Geometry(tuple(axes), "; ".join(reasons) or None)


def oracle_windows(geo: Geometry):
    """For every output cell (row-major): its multi-index, the flat indices of its real cells
    in row-major tap order, and its number of taps inside the padded extent."""
    spatial = [a.size for a in geo.axes]
    result = []
    for out_index in itertools.product(*(range(a.out) for a in geo.axes)):
        per_axis = [a.positions(o) for a, o in zip(geo.axes, out_index)]
        real, padded = [], 0
        for cell in itertools.product(*per_axis):
            if all(-a.pad_before <= p < a.size + a.pad_after for a, p in zip(geo.axes, cell)):
                padded += 1
            if all(0 <= p < n for p, n in zip(cell, spatial)):
                flat = 0
                for p, n in zip(cell, spatial):
                    flat = flat * n + p
                real.append(flat)
        result.append((out_index, real, padded))
    return result


# --------------------------------------------------------------------------------------
# The oracle: reductions on plain Python scalars
# --------------------------------------------------------------------------------------


def _isnan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def select(values, flats, kind, nan):
    """(value, flat index) of the max/min of a window, PyTorch's ties and the contract's NaN rules."""
    better = (lambda a, b: a > b) if kind == "max" else (lambda a, b: a < b)
    kept, kept_index = None, None
    for v, i in zip(values, flats):
        if kept_index is None:
            take = True
        elif nan == "propagate":
            take = _isnan(v) or better(v, kept)
        else:  # ignore: skip NaNs; a NaN kept from the first cell gives way to any number
            take = not _isnan(v) and (_isnan(kept) or better(v, kept))
        if take:
            kept, kept_index = v, i
    return kept, kept_index


def lp_value(values, p, mean):
    if p == math.inf:
        return float(max(abs(v) for v in values))
    total = sum(float(abs(v)) ** p for v in values)
    if mean:
        total = total / len(values)
    return total ** (1.0 / p)


def avg_value(values, real_count, padded_count, count_include_pad, divisor_override):
    if divisor_override is not None:
        divisor = divisor_override
    else:
        divisor = padded_count if count_include_pad else real_count
    return sum(float(v) for v in values) / divisor


def oracle_pool(x, geo, reduce_window, out_dtype, with_indices=False):
    """Apply ``reduce_window(values, flats, real_count, padded_count)`` to every window of
    every (n, c) plane of the channels-first array ``x``."""
    n_batch, n_chan = x.shape[:2]
    out = np.zeros((n_batch, n_chan, *geo.out_shape), dtype=out_dtype)
    idx = np.zeros(out.shape, dtype=np.int64)
    windows = oracle_windows(geo)
    for n in range(n_batch):
        for c in range(n_chan):
            plane = x[n, c].ravel().tolist()
            for out_index, flats, padded in windows:
                values = [plane[i] for i in flats]
                value = reduce_window(values, flats, len(flats), padded)
                if with_indices:
                    value, where = value
                    idx[(n, c, *out_index)] = where
                out[(n, c, *out_index)] = value
    return (out, idx) if with_indices else out


# --------------------------------------------------------------------------------------
# Configurations
# --------------------------------------------------------------------------------------

MAX_SIZE = {1: 9, 2: 7, 3: 5}
MAX_KERNEL = {1: 4, 2: 4, 3: 3}
LARGE_SIZE = {1: 16, 2: 9}
LARGE_KERNEL = {1: 9, 2: 6}


@dataclass
class Config:
    batch: int
    channels: int
    spatial: tuple[int, ...]
    kwargs: dict  # kernel_size, stride, padding, dilation, ceil_mode, backend as passed to poolkit
    geo: Geometry
    channels_last: bool
    other_memory: bool  # store the input in the other layout's memory order (a strided view)


def _int_or_tuple(draw, values):
    """Pass per-axis values as one int (when they agree, sometimes) or as a tuple."""
    if len(set(values)) == 1 and draw(st.booleans()):
        return values[0]
    return tuple(values)


BACKENDS = st.sampled_from(["numpy", "numba"])


@st.composite
def configs(draw, ranks=(1, 2, 3), paddings=("int", "sequence", "valid", "same", "same_lower"), large=False):
    """A pooling configuration and the oracle's geometry for it.

    ``large=True`` draws stride-1, undilated windows of 5 taps or more on rank 1 and 2 (the
    regime where fast kernels switch to running-max / prefix-sum algorithms)."""
    rank = draw(st.sampled_from([r for r in ranks if r < 3] if large else ranks))
    if large:
        kernel = [draw(st.integers(5, LARGE_KERNEL[rank])) for _ in range(rank)]
        stride = [1] * rank if draw(st.booleans()) else [draw(st.sampled_from([1, 1, 2])) for _ in range(rank)]
        dil = [1] * rank
        max_size = LARGE_SIZE[rank]
    else:
        kernel = [draw(st.integers(1, MAX_KERNEL[rank])) for _ in range(rank)]
        stride_form = draw(st.sampled_from(["none", "shared", "per-axis"]))
        if stride_form == "none":
            stride = None
        elif stride_form == "shared":
            stride = [draw(st.integers(1, 3))] * rank
        else:
            stride = [draw(st.integers(1, 3)) for _ in range(rank)]
        dil = [draw(st.integers(1, 2)) for _ in range(rank)]
        max_size = MAX_SIZE[rank]
    # Mostly inputs at least as large as the dilated kernel; sometimes any size, to reach the
    # refusals (and the ceil-mode windows that start inside the input but overhang it).
    any_size = draw(st.integers(0, 4)) == 0
    spatial = tuple(
        draw(st.integers(1 if any_size else min(d * (k - 1) + 1, max_size), max_size)) for k, d in zip(kernel, dil)
    )
    # Occasionally allow numeric padding one above the limit: poolkit must refuse it.
    over = 1 if draw(st.integers(0, 9)) == 0 else 0
    form = draw(st.sampled_from(paddings))
    if form == "int":
        value = draw(st.integers(0, min(kernel) // 2 + over))
        padding, pads = value, [value] * rank
    elif form == "sequence":
        padding, pads = [], []
        for k in kernel:
            if draw(st.booleans()):
                value = draw(st.integers(0, k // 2 + over))
                padding.append(value)
                pads.append(value)
            else:
                pair = (draw(st.integers(0, k // 2 + over)), draw(st.integers(0, k // 2 + over)))
                padding.append(pair)
                pads.append(pair)
        padding = tuple(padding) if draw(st.booleans()) else padding
    else:
        padding, pads = form, [form] * rank
    ceil = draw(st.booleans())
    kwargs = {
        "kernel_size": _int_or_tuple(draw, kernel),
        "stride": None if stride is None else _int_or_tuple(draw, stride),
        "padding": padding,
        "ceil_mode": ceil,
        "dilation": _int_or_tuple(draw, dil),
        "backend": draw(BACKENDS),
    }
    geo = oracle_geometry(spatial, kernel, stride, dil, pads, ceil)
    return Config(
        batch=draw(st.integers(1, 2)),
        channels=draw(st.integers(1, 2)),
        spatial=spatial,
        kwargs=kwargs,
        geo=geo,
        channels_last=draw(st.booleans()),
        other_memory=draw(st.booleans()),
    )


def make_data(cfg: Config, seed: int, kind: str, dtype=np.float64, nan: str = "none") -> np.ndarray:
    """Channels-first test data: ``kind`` is "ties" (small integers), "signed" (reals of both
    signs, some zeros) or "dtype" (the full range of an integer dtype); ``nan`` injects NaNs."""
    rng = np.random.default_rng(seed)
    shape = (cfg.batch, cfg.channels, *cfg.spatial)
    if kind == "ties":
        x = rng.integers(-3, 4, size=shape).astype(dtype)
    elif kind == "signed":
        x = rng.normal(size=shape) * rng.choice([0.0, 0.5, 3.0], size=shape)
        x = x.astype(dtype)
    else:
        dtype = np.dtype(dtype)
        if dtype.kind == "b":
            x = rng.integers(0, 2, size=shape).astype(bool)
        else:
            info = np.iinfo(dtype)
            x = rng.integers(info.min, int(info.max) + 1, size=shape, dtype=np.int64)
            extremes = rng.random(size=shape) < 0.3
            x[extremes] = rng.choice([info.min, info.max], size=int(extremes.sum()))
            x = x.astype(dtype)
    if nan != "none":
        if nan == "sparse":
            mask = rng.random(size=shape) < 0.15
        elif nan == "dense":
            mask = rng.random(size=shape) < 0.7
        else:  # "plane": a whole (n, c) plane of NaNs, so every one of its windows is all-NaN
            mask = np.zeros(shape, dtype=bool)
            mask[rng.integers(cfg.batch), rng.integers(cfg.channels)] = True
            mask |= rng.random(size=shape) < 0.1
        x[mask] = np.nan
    return x


def to_user(x: np.ndarray, cfg: Config) -> np.ndarray:
    """The channels-first ``x`` in the layout the op is told (``cfg.channels_last``), stored in
    that layout's own memory order or, with ``cfg.other_memory``, in the other one."""
    channels_last_memory = cfg.channels_last != cfg.other_memory
    stored = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if channels_last_memory else np.ascontiguousarray(x)
    logical = np.moveaxis(stored, -1, 1) if channels_last_memory else stored  # (N, C, *spatial)
    return np.moveaxis(logical, 1, -1) if cfg.channels_last else logical


def from_user(y: np.ndarray, channels_last: bool) -> np.ndarray:
    return np.moveaxis(y, -1, 1) if channels_last else y


def call_or_refused(cfg: Config, fn):
    """Run ``fn``; it must raise PoolingConfigError exactly when the oracle refuses the configuration."""
    if cfg.geo.refused is not None:
        event("refused")
        with pytest.raises(pk.PoolingConfigError):
            fn()
        return None
    event(f"rank {len(cfg.spatial)}, {int(np.prod(cfg.geo.out_shape))} output cells per plane")
    return fn()


def check_sum(got, want, dtype=np.float64):
    assert got.dtype == dtype
    assert got.shape == want.shape
    if dtype == np.float64:
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    elif dtype == np.float32:
        np.testing.assert_allclose(got, want.astype(dtype), rtol=1e-6, atol=1e-6)
    else:  # float16: one rounding of the float64 result, or two through float32
        np.testing.assert_allclose(got, want.astype(dtype), rtol=2e-3, atol=1e-3)


SETTINGS = settings(max_examples=150, deadline=None)
seeds = st.integers(0, 2**32 - 1)


# --------------------------------------------------------------------------------------
# Max and min: values, indices, ties, NaNs
# --------------------------------------------------------------------------------------


@SETTINGS
@given(
    cfg=configs(),
    seed=seeds,
    kind=st.sampled_from(["max", "min"]),
    nan_mode=st.sampled_from(["propagate", "ignore"]),
    nans=st.sampled_from(["none", "sparse", "dense", "plane"]),
)
def test_max_min_values_and_indices_match_oracle(cfg, seed, kind, nan_mode, nans):
    x = make_data(cfg, seed, "ties", nan=nans)
    op = pk.max_pool if kind == "max" else pk.min_pool
    got = call_or_refused(
        cfg,
        lambda: op(
            to_user(x, cfg),
            **cfg.kwargs,
            return_indices=True,
            channels_last=cfg.channels_last,
            nan=nan_mode,
        ),
    )
    if got is None:
        return
    y, idx = (from_user(a, cfg.channels_last) for a in got)
    want, want_idx = oracle_pool(
        x, cfg.geo, lambda v, f, n, m: select(v, f, kind, nan_mode), np.float64, with_indices=True
    )
    assert y.dtype == np.float64 and idx.dtype == np.int64
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(idx, want_idx)
    # Without return_indices the values are the same.
    plain = op(to_user(x, cfg), **cfg.kwargs, channels_last=cfg.channels_last, nan=nan_mode)
    np.testing.assert_array_equal(from_user(plain, cfg.channels_last), want)


@SETTINGS
@given(cfg=configs(), seed=seeds)
def test_min_pool_default_nan_and_ties(cfg, seed):
    """min_pool with default arguments: first minimum wins ties, NaN propagates (last NaN's index)."""
    x = make_data(cfg, seed, "ties", nan="sparse")
    got = call_or_refused(
        cfg,
        lambda: pk.min_pool(to_user(x, cfg), **cfg.kwargs, return_indices=True, channels_last=cfg.channels_last),
    )
    if got is None:
        return
    y, idx = (from_user(a, cfg.channels_last) for a in got)
    want, want_idx = oracle_pool(
        x, cfg.geo, lambda v, f, n, m: select(v, f, "min", "propagate"), np.float64, with_indices=True
    )
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(idx, want_idx)


def test_nan_rules_on_one_window():
    """The NaN rules spelled out on one window, independently of Hypothesis."""
    nan = np.nan
    x = np.array([[[1.0, nan, 3.0, nan, 2.0]]])
    y, idx = pk.max_pool(x, 5, return_indices=True)
    assert np.isnan(y[0, 0, 0]) and idx[0, 0, 0] == 3  # last NaN in scan order
    y, idx = pk.max_pool(x, 5, return_indices=True, nan="ignore")
    assert y[0, 0, 0] == 3.0 and idx[0, 0, 0] == 2
    y, idx = pk.min_pool(x, 5, return_indices=True, nan="ignore")
    assert y[0, 0, 0] == 1.0 and idx[0, 0, 0] == 0
    all_nan = np.full((1, 1, 3), nan)
    for op in (pk.max_pool, pk.min_pool):
        y, idx = op(all_nan, 3, return_indices=True, nan="ignore")
        assert np.isnan(y[0, 0, 0]) and idx[0, 0, 0] == 0  # first cell of an all-NaN window
        y, idx = op(all_nan, 3, return_indices=True, nan="propagate")
        assert np.isnan(y[0, 0, 0]) and idx[0, 0, 0] == 2
    # A NaN first, numbers after: ignore gives the best number.
    y, idx = pk.min_pool(np.array([[[nan, 4.0, -1.0, -1.0]]]), 4, return_indices=True, nan="ignore")
    assert y[0, 0, 0] == -1.0 and idx[0, 0, 0] == 2


# --------------------------------------------------------------------------------------
# Lp
# --------------------------------------------------------------------------------------

P_VALUES = st.sampled_from([0.5, 1, 1.5, 2, 3, math.inf])


@SETTINGS
@given(cfg=configs(), seed=seeds, p=P_VALUES, mean=st.booleans())
def test_lp_pool_matches_oracle(cfg, seed, p, mean):
    x = make_data(cfg, seed, "signed")
    got = call_or_refused(
        cfg,
        lambda: pk.lp_pool(to_user(x, cfg), p, **cfg.kwargs, mean=mean, channels_last=cfg.channels_last),
    )
    if got is None:
        return
    want = oracle_pool(x, cfg.geo, lambda v, f, n, m: lp_value(v, p, mean), np.float64)
    got = from_user(got, cfg.channels_last)
    if p == math.inf:
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, want)
    else:
        check_sum(got, want)


def test_lp_uses_absolute_value_and_real_cells_only():
    """Odd p on negative inputs, and a ceil-mode partial window, by hand."""
    x = np.array([[[-1.0, -2.0, 2.0]]])
    np.testing.assert_allclose(pk.lp_pool(x, 3, 2, ceil_mode=True), [[[9 ** (1 / 3), 2.0]]], rtol=1e-14)
    np.testing.assert_allclose(pk.lp_pool(x, 1, 2, ceil_mode=True, mean=True), [[[1.5, 2.0]]], rtol=1e-14)


# --------------------------------------------------------------------------------------
# Avg
# --------------------------------------------------------------------------------------


@SETTINGS
@given(
    cfg=configs(), seed=seeds, count_include_pad=st.booleans(), divisor_override=st.sampled_from([None, None, 1, 3, -2])
)
def test_avg_pool_matches_oracle(cfg, seed, count_include_pad, divisor_override):
    x = make_data(cfg, seed, "signed")
    got = call_or_refused(
        cfg,
        lambda: pk.avg_pool(
            to_user(x, cfg),
            **cfg.kwargs,
            count_include_pad=count_include_pad,
            divisor_override=divisor_override,
            channels_last=cfg.channels_last,
        ),
    )
    if got is None:
        return
    want = oracle_pool(
        x, cfg.geo, lambda v, f, n, m: avg_value(v, n, m, count_include_pad, divisor_override), np.float64
    )
    check_sum(from_user(got, cfg.channels_last), want)


# --------------------------------------------------------------------------------------
# SAME / SAME_LOWER
# --------------------------------------------------------------------------------------


def run_op(cfg: Config, user, op: str, **extra):
    """Call poolkit's generic ``op`` on the user-layout array with the configuration's arguments."""
    fn = {"max": pk.max_pool, "min": pk.min_pool, "avg": pk.avg_pool, "lp": pk.lp_pool}[op]
    args = (extra.pop("p"),) if op == "lp" else ()
    return call_or_refused(cfg, lambda: fn(user, *args, **cfg.kwargs, channels_last=cfg.channels_last, **extra))


@SETTINGS
@given(
    cfg=configs(paddings=("same", "same_lower")),
    seed=seeds,
    op=st.sampled_from(["max", "avg-pad", "avg-nopad", "lp"]),
    p=P_VALUES,
)
def test_same_padding_matches_oracle(cfg, seed, op, p):
    x = make_data(cfg, seed, "ties" if op == "max" else "signed")
    user = to_user(x, cfg)
    include = op == "avg-pad"
    if op == "max":
        got = run_op(cfg, user, "max", return_indices=True)
    elif op == "lp":
        got = run_op(cfg, user, "lp", p=p)
    else:
        got = run_op(cfg, user, "avg", count_include_pad=include)
    if got is None:
        return
    if not cfg.kwargs["ceil_mode"]:
        assert cfg.geo.out_shape == tuple(-(-size // a.stride) for size, a in zip(cfg.spatial, cfg.geo.axes))
    if op == "max":
        y, idx = (from_user(a, cfg.channels_last) for a in got)
        want, want_idx = oracle_pool(
            x, cfg.geo, lambda v, f, n, m: select(v, f, "max", "propagate"), np.float64, with_indices=True
        )
        np.testing.assert_array_equal(y, want)
        np.testing.assert_array_equal(idx, want_idx)
    elif op == "lp":
        want = oracle_pool(x, cfg.geo, lambda v, f, n, m: lp_value(v, p, False), np.float64)
        got = from_user(got, cfg.channels_last)
        if p == math.inf:
            np.testing.assert_array_equal(got, want)
        else:
            check_sum(got, want)
    else:
        want = oracle_pool(x, cfg.geo, lambda v, f, n, m: avg_value(v, n, m, include, None), np.float64)
        check_sum(from_user(got, cfg.channels_last), want)


def test_same_padding_splits_odd_cell():
    """SAME puts the odd padding cell after, SAME_LOWER before; visible in avg with the pad counted."""
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    # k=2, s=1: out 4, total 1. SAME pads (0, 1); SAME_LOWER pads (1, 0).
    np.testing.assert_allclose(pk.avg_pool(x, 2, 1, "same"), [[[1.5, 2.5, 3.5, 2.0]]], rtol=1e-14)
    np.testing.assert_allclose(pk.avg_pool(x, 2, 1, "same_lower"), [[[0.5, 1.5, 2.5, 3.5]]], rtol=1e-14)
    np.testing.assert_allclose(
        pk.avg_pool(x, 2, 1, "same", count_include_pad=False), [[[1.5, 2.5, 3.5, 4.0]]], rtol=1e-14
    )


# --------------------------------------------------------------------------------------
# Large stride-1 windows (SPP-like), where fast kernels use other algorithms
# --------------------------------------------------------------------------------------


@SETTINGS
@given(
    cfg=configs(large=True),
    seed=seeds,
    op=st.sampled_from(["max", "min", "avg", "lp"]),
    nan_mode=st.sampled_from(["propagate", "ignore"]),
    nans=st.sampled_from(["none", "none", "sparse", "dense"]),
    p=P_VALUES,
    mean=st.booleans(),
    count_include_pad=st.booleans(),
)
def test_large_stride1_windows_match_oracle(cfg, seed, op, nan_mode, nans, p, mean, count_include_pad):
    user = None
    if op in ("max", "min"):
        x = make_data(cfg, seed, "ties", nan=nans)
        user = to_user(x, cfg)
        got = run_op(cfg, user, op, return_indices=True, nan=nan_mode)
        if got is None:
            return
        y, idx = (from_user(a, cfg.channels_last) for a in got)
        want, want_idx = oracle_pool(
            x, cfg.geo, lambda v, f, n, m: select(v, f, op, nan_mode), np.float64, with_indices=True
        )
        np.testing.assert_array_equal(y, want)
        np.testing.assert_array_equal(idx, want_idx)
        values_only = run_op(cfg, user, op, nan=nan_mode)
        np.testing.assert_array_equal(from_user(values_only, cfg.channels_last), want)
        return
    x = make_data(cfg, seed, "signed")
    user = to_user(x, cfg)
    if op == "avg":
        got = run_op(cfg, user, "avg", count_include_pad=count_include_pad)
        reduce_window = lambda v, f, n, m: avg_value(v, n, m, count_include_pad, None)  # noqa: E731
    else:
        got = run_op(cfg, user, "lp", p=p, mean=mean)
        reduce_window = lambda v, f, n, m: lp_value(v, p, mean)  # noqa: E731
    if got is None:
        return
    want = oracle_pool(x, cfg.geo, reduce_window, np.float64)
    got = from_user(got, cfg.channels_last)
    if op == "lp" and p == math.inf:
        np.testing.assert_array_equal(got, want)
    else:
        check_sum(got, want)


@SETTINGS
@given(cfg=st.one_of(configs(), configs(large=True)), seed=seeds, kind=st.sampled_from(["max", "min"]))
def test_signed_zero_ties_keep_the_first_cell(cfg, seed, kind):
    """-0.0 and 0.0 compare equal, so a window of zeros is a tie: the value (its sign bit)
    must be that of the first zero in scan order, as the index says (PyTorch's rule)."""
    rng = np.random.default_rng(seed)
    x = rng.choice([-0.0, 0.0, -1.0 if kind == "max" else 1.0], size=(cfg.batch, cfg.channels, *cfg.spatial))
    user = to_user(x, cfg)
    for with_indices in (True, False):
        got = run_op(cfg, user, kind, return_indices=with_indices)
        if got is None:
            return
        y = from_user(got[0] if with_indices else got, cfg.channels_last)
        want, want_idx = oracle_pool(
            x, cfg.geo, lambda v, f, n, m: select(v, f, kind, "propagate"), np.float64, with_indices=True
        )
        np.testing.assert_array_equal(y, want)
        if with_indices:
            np.testing.assert_array_equal(from_user(got[1], cfg.channels_last), want_idx)
        np.testing.assert_array_equal(np.signbit(y), np.signbit(want), err_msg=f"with_indices={with_indices}")


# --------------------------------------------------------------------------------------
# Dtypes
# --------------------------------------------------------------------------------------


@SETTINGS
@given(
    cfg=configs(),
    seed=seeds,
    op=st.sampled_from(["max", "min", "avg", "lp"]),
    p=P_VALUES,
    dtype=st.sampled_from([np.float32, np.float32, np.float16]),
)
def test_float32_and_float16_keep_dtype(cfg, seed, op, p, dtype):
    x = make_data(cfg, seed, "signed", dtype=dtype)
    user = to_user(x, cfg)
    if op in ("max", "min"):
        got = run_op(cfg, user, op, return_indices=True)
        if got is None:
            return
        y, idx = (from_user(a, cfg.channels_last) for a in got)
        want, want_idx = oracle_pool(
            x, cfg.geo, lambda v, f, n, m: select(v, f, op, "propagate"), dtype, with_indices=True
        )
        assert y.dtype == dtype
        np.testing.assert_array_equal(y, want)
        np.testing.assert_array_equal(idx, want_idx)
        return
    if op == "avg":
        got = run_op(cfg, user, "avg")
        if got is None:
            return
        want = oracle_pool(x, cfg.geo, lambda v, f, n, m: avg_value(v, n, m, True, None), np.float64)
    else:
        got = run_op(cfg, user, "lp", p=p)
        if got is None:
            return
        want = oracle_pool(x, cfg.geo, lambda v, f, n, m: lp_value(v, p, False), np.float64)
    check_sum(from_user(got, cfg.channels_last), want, dtype=dtype)


INT_DTYPES = st.sampled_from([np.int8, np.uint8, np.int32, np.bool_])


@SETTINGS
@given(cfg=configs(), seed=seeds, dtype=INT_DTYPES, kind=st.sampled_from(["max", "min"]))
def test_integer_and_bool_select_keep_dtype(cfg, seed, dtype, kind):
    x = make_data(cfg, seed, "dtype", dtype=dtype)
    op = pk.max_pool if kind == "max" else pk.min_pool
    got = call_or_refused(
        cfg,
        lambda: op(to_user(x, cfg), **cfg.kwargs, return_indices=True, channels_last=cfg.channels_last),
    )
    if got is None:
        return
    y, idx = (from_user(a, cfg.channels_last) for a in got)
    want, want_idx = oracle_pool(
        x, cfg.geo, lambda v, f, n, m: select(v, f, kind, "propagate"), dtype, with_indices=True
    )
    assert y.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(idx, want_idx)


@SETTINGS
@given(
    cfg=configs(),
    seed=seeds,
    dtype=INT_DTYPES,
    op=st.sampled_from(["avg", "lp"]),
    p=P_VALUES,
    mean=st.booleans(),
    count_include_pad=st.booleans(),
)
def test_integer_and_bool_avg_lp_give_float64(cfg, seed, dtype, op, p, mean, count_include_pad):
    x = make_data(cfg, seed, "dtype", dtype=dtype)
    user = to_user(x, cfg)
    if op == "avg":
        got = run_op(cfg, user, "avg", count_include_pad=count_include_pad)
        if got is None:
            return
        want = oracle_pool(x, cfg.geo, lambda v, f, n, m: avg_value(v, n, m, count_include_pad, None), np.float64)
    else:
        got = run_op(cfg, user, "lp", p=p, mean=mean)
        if got is None:
            return
        want = oracle_pool(x, cfg.geo, lambda v, f, n, m: lp_value(v, p, mean), np.float64)
    check_sum(from_user(got, cfg.channels_last), want)


@pytest.mark.parametrize("p", [1, 2, 3, math.inf])
def test_lp_int8_minimum_has_no_overflow(p):
    """|-128| is 128, not -128: the absolute value is taken after widening."""
    x = np.array([[[-128, -128, 127, 0]]], dtype=np.int8)
    y = pk.lp_pool(x, p, 2)
    assert y.dtype == np.float64
    first = 128.0 if p == math.inf else (2 * 128.0**p) ** (1 / p)
    np.testing.assert_allclose(y, [[[first, 127.0]]], rtol=1e-14)


# --------------------------------------------------------------------------------------
# Fixed-rank functions on unbatched input
# --------------------------------------------------------------------------------------

FIXED = {
    ("lp", 1): pk.lp_pool1d,
    ("lp", 2): pk.lp_pool2d,
    ("lp", 3): pk.lp_pool3d,
    ("min", 1): pk.min_pool1d,
    ("min", 2): pk.min_pool2d,
    ("min", 3): pk.min_pool3d,
}


@SETTINGS
@given(
    cfg=configs(), seed=seeds, op=st.sampled_from(["lp", "min"]), p=P_VALUES, mean=st.booleans(), batched=st.booleans()
)
def test_fixed_rank_functions_unbatched(cfg, seed, op, p, mean, batched):
    rank = len(cfg.spatial)
    fn = FIXED[(op, rank)]
    x = make_data(cfg, seed, "ties" if op == "min" else "signed")
    user = to_user(x, cfg)
    if not batched:
        user = user[0]  # (C, *spatial) or (*spatial, C)
    if op == "lp":
        got = call_or_refused(cfg, lambda: fn(user, p, **cfg.kwargs, mean=mean, channels_last=cfg.channels_last))
    else:
        got = call_or_refused(cfg, lambda: fn(user, **cfg.kwargs, return_indices=True, channels_last=cfg.channels_last))
    if got is None:
        return
    if op == "lp":
        want = oracle_pool(x, cfg.geo, lambda v, f, n, m: lp_value(v, p, mean), np.float64)
        pieces = [got]
    else:
        want, want_idx = oracle_pool(
            x, cfg.geo, lambda v, f, n, m: select(v, f, "min", "propagate"), np.float64, with_indices=True
        )
        pieces = list(got)
    if not batched:
        expected_ndim = rank + 1
        assert all(a.ndim == expected_ndim for a in pieces)
        pieces = [a[np.newaxis] for a in pieces]
        want = want[:1]
        if op == "min":
            want_idx = want_idx[:1]
    pieces = [from_user(a, cfg.channels_last) for a in pieces]
    if op == "lp":
        if p == math.inf:
            np.testing.assert_array_equal(pieces[0], want)
        else:
            check_sum(pieces[0], want)
    else:
        np.testing.assert_array_equal(pieces[0], want)
        np.testing.assert_array_equal(pieces[1], want_idx)


# --------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(cfg=configs(), op=st.sampled_from(["max", "min", "avg", "lp"]))
def test_refused_exactly_when_the_oracle_refuses(cfg, op):
    """Shapes only (no values): poolkit raises PoolingConfigError iff the oracle finds the
    configuration invalid, and otherwise returns the oracle's output shape."""
    x = np.zeros((cfg.batch, cfg.channels, *cfg.spatial))
    user = to_user(x, cfg)
    common = {**cfg.kwargs, "channels_last": cfg.channels_last}
    calls = {
        "max": lambda: pk.max_pool(user, **common),
        "min": lambda: pk.min_pool(user, **common),
        "avg": lambda: pk.avg_pool(user, **common),
        "lp": lambda: pk.lp_pool(user, 2, **common),
    }
    got = call_or_refused(cfg, calls[op])
    if got is not None:
        assert from_user(got, cfg.channels_last).shape == (cfg.batch, cfg.channels, *cfg.geo.out_shape)


@pytest.mark.parametrize(
    ("spatial", "kwargs"),
    [
        ((4,), {"kernel_size": 3, "padding": 2}),  # numeric padding above k // 2
        ((4,), {"kernel_size": 2, "padding": [(0, 2)]}),  # a pair may pass k // 2, but window 2 reads padding only
        ((4,), {"kernel_size": 4, "padding": (3,)}),  # one int per axis above the limit
        ((2,), {"kernel_size": 3}),  # kernel larger than the input
        ((3,), {"kernel_size": 2, "dilation": 3}),  # dilated span 4 > 3
        ((1,), {"kernel_size": 2, "dilation": 3, "padding": "same"}),  # taps at -1 and 2: padding only
        ((2, 2), {"kernel_size": (2, 5)}),
    ],
)
def test_refusals_by_hand(spatial, kwargs):
    kernel = kwargs["kernel_size"]
    rank = len(spatial)
    kernel_t = (kernel,) * rank if isinstance(kernel, int) else kernel
    dil = kwargs.get("dilation", 1)
    pad = kwargs.get("padding", 0)
    if isinstance(pad, str):
        pads = [pad] * rank
    elif isinstance(pad, int):
        pads = [pad] * rank
    else:  # one int or (before, after) pair per axis
        pads = [tuple(v) if isinstance(v, (tuple, list)) else v for v in pad]
    geo = oracle_geometry(spatial, kernel_t, None, (dil,) * rank, pads, False)
    assert geo.refused is not None
    with pytest.raises(pk.PoolingConfigError):
        pk.max_pool(np.zeros((1, 1, *spatial)), **kwargs)


@pytest.mark.parametrize(
    ("x", "kwargs"),
    [
        # out = floor((1 - 1 - 1 + 1) / 2) + 1 = 1 in ceil mode, but the kernel (2) is longer than the input (1).
        ([7.0], {"kernel_size": 2, "ceil_mode": True}),
        # span 5 > 4 padded cells, though the ceil formula gives one window (taps -1, 1, 3).
        ([7.0, 9.0], {"kernel_size": 3, "padding": 1, "dilation": 2, "ceil_mode": True}),
    ],
)
def test_ceil_mode_window_longer_than_the_padded_input(x, kwargs):
    """A window longer than the padded input is refused in ceil mode too (the core issue's rule;
    PyTorch's avg_pool3d refuses it as well, while its max_pool and avg_pool1d/2d return one
    partial window), with a message that gives the sizes."""
    arr = np.array([[x]])
    geo = oracle_geometry(
        (len(x),),
        (kwargs["kernel_size"],),
        kwargs.get("stride"),
        (kwargs.get("dilation", 1),),
        [(kwargs.get("padding", 0),) * 2],
        kwargs["ceil_mode"],
    )
    assert "window longer than the padded input" in geo.refused
    for fn in (pk.max_pool, pk.avg_pool):
        with pytest.raises(pk.PoolingConfigError, match=r"is larger than the padded input \(\d+ after padding"):
            fn(arr, **kwargs)


def test_fixed_rank_functions_bind_arguments_as_python_does():
    """The fixed-rank wrappers read their arguments like the generic functions, errors included."""
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    expected = pk.avg_pool(x, 2, 1, 0, True, False)
    np.testing.assert_array_equal(pk.avg_pool2d(x, 2, 1, 0, True, False), expected)
    np.testing.assert_array_equal(
        pk.avg_pool2d(x, kernel_size=2, stride=1, ceil_mode=True, count_include_pad=False), expected
    )
    np.testing.assert_array_equal(pk.lp_pool2d(x, 2, 2), pk.lp_pool(x, 2, 2))
    with pytest.raises(TypeError, match=r"missing a required argument: 'kernel_size'"):
        pk.max_pool2d(x)
    with pytest.raises(TypeError, match=r"multiple values for argument 'kernel_size'"):
        pk.max_pool2d(x, 2, kernel_size=2)
    with pytest.raises(TypeError, match=r"got an unexpected keyword argument 'kernel'"):
        pk.max_pool2d(x, 2, kernel=2)
    with pytest.raises(TypeError, match=r"too many positional arguments"):
        pk.max_pool2d(x, 2, 2, 0, 1, False, False, True)

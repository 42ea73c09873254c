"""Gradients from :func:`poolkit.vjp` against central finite differences, and the pullback contract.

For an op ``f`` and a random output gradient ``dy``, the pullback must give the
gradient of ``L(x) = sum(dy * f(x))``; each component is checked against
``(L(x + h e_i) - L(x - h e_i)) / (2 h)`` in float64. Inputs are drawn so that the
finite difference is meaningful: Lp inputs stay away from 0, and max/min/Lp-inf
inputs have distinct values (magnitudes), so a step of ``h`` never changes the
selected cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from gradients import finite_difference_grad
from hypothesis import given, reject, settings
from hypothesis import strategies as st

import poolkit as pk

SETTINGS = settings(max_examples=100, deadline=None)
seeds = st.integers(0, 2**32 - 1)
BACKENDS = ["numpy", "numba"]

GENERIC = {"max": pk.max_pool, "min": pk.min_pool, "avg": pk.avg_pool, "lp": pk.lp_pool}
FIXED = {
    ("max", 1): pk.max_pool1d, ("max", 2): pk.max_pool2d, ("max", 3): pk.max_pool3d,
    ("min", 1): pk.min_pool1d, ("min", 2): pk.min_pool2d, ("min", 3): pk.min_pool3d,
    ("avg", 1): pk.avg_pool1d, ("avg", 2): pk.avg_pool2d, ("avg", 3): pk.avg_pool3d,
    ("lp", 1): pk.lp_pool1d, ("lp", 2): pk.lp_pool2d, ("lp", 3): pk.lp_pool3d,
}  # fmt: skip


@dataclass
class GradConfig:
    shape: tuple[int, ...]  # the user-layout input shape
    rank: int
    fixed_rank: bool  # call the rank-specific function (which also takes unbatched input)
    kwargs: dict
    fortran_order: bool  # store x and dy in Fortran order


@st.composite
def grad_configs(draw, large=False):
    """Small valid configurations: each axis at least as long as the dilated kernel, numeric
    padding at most kernel // 2, and overlapping windows (stride < kernel) often.

    ``large=True``: stride-1, undilated windows of 5 taps or more on 1 or 2 axes (where fast
    kernels may switch algorithm)."""
    if large:
        rank = draw(st.integers(1, 2))
        max_size = {1: 12, 2: 7}[rank]
        kernel = [draw(st.integers(5, 6)) for _ in range(rank)]
        dil = [1] * rank
        stride = 1
    else:
        rank = draw(st.integers(1, 3))
        max_size = {1: 7, 2: 5, 3: 3}[rank]
        kernel = [draw(st.integers(1, 3)) for _ in range(rank)]
        dil = [draw(st.integers(1, 2)) if k > 1 else 1 for k in kernel]
        spans = [d * (k - 1) + 1 for k, d in zip(kernel, dil)]
        kernel = [k if s <= max_size else 1 for k, s in zip(kernel, spans)]
        dil = [d if k > 1 else 1 for k, d in zip(kernel, dil)]
        stride = draw(st.one_of(st.none(), st.integers(1, 3), st.tuples(*[st.integers(1, 3)] * rank)))
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dil)]
    spatial = [draw(st.integers(s, max_size)) for s in spans]
    form = draw(st.sampled_from(["int", "pairs", "same", "same_lower", "valid"]))
    if form == "int":
        padding = draw(st.integers(0, min(kernel) // 2))
    elif form == "pairs":
        padding = [(draw(st.integers(0, k // 2)), draw(st.integers(0, k // 2))) for k in kernel]
    else:
        padding = form
    kwargs = {
        "kernel_size": tuple(kernel),
        "stride": stride,
        "padding": padding,
        "ceil_mode": draw(st.booleans()),
        "channels_last": draw(st.booleans()),
        "backend": draw(st.sampled_from(BACKENDS)),
        "dilation": tuple(dil),
    }
    batch, channels = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    fixed_rank = draw(st.booleans())
    unbatched = fixed_rank and draw(st.booleans())
    lead = () if unbatched else (batch,)
    if kwargs["channels_last"]:
        shape = (*lead, *spatial, channels)
    else:
        shape = (*lead, channels, *spatial)
    return GradConfig(shape=shape, rank=rank, fixed_rank=fixed_rank, kwargs=kwargs, fortran_order=draw(st.booleans()))


def the_op(cfg: GradConfig, name: str):
    return FIXED[(name, cfg.rank)] if cfg.fixed_rank else GENERIC[name]


def check_gradient(cfg: GradConfig, name: str, x, args, extra, seed):
    """vjp's forward equals the op, and its pullback equals the finite-difference gradient."""
    op, kwargs = the_op(cfg, name), {**cfg.kwargs, **extra}
    if cfg.fortran_order:  # any strides must work, for x and for dy
        x = np.asfortranarray(x)
    try:
        expected_y = op(x, *args, **kwargs)
    except pk.PoolingConfigError:
        reject()  # a window of padding only (possible with dilation and "same"); not this file's subject
    y, pullback = pk.vjp(op, x, *args, **kwargs)
    np.testing.assert_array_equal(y, expected_y)
    dy = np.random.default_rng(seed + 1).normal(size=y.shape)
    if cfg.fortran_order:
        dy = np.asfortranarray(dy)
    dx = pullback(dy)
    assert dx.shape == x.shape
    assert dx.dtype == np.float64
    want = finite_difference_grad(lambda z: op(z, *args, **kwargs), x, dy)
    np.testing.assert_allclose(dx, want, rtol=1e-6, atol=1e-7)
    return dx


def away_from_zero(shape, rng):
    """Magnitudes in [0.5, 2] with random signs."""
    return rng.uniform(0.5, 2.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)


def distinct(shape, rng, signed_magnitudes=False):
    """Values (or magnitudes, with random signs) at least 0.25 apart: no ties for max/min/|x|."""
    n = int(np.prod(shape))
    values = (rng.permutation(n) + 1) * 0.25 + rng.uniform(-0.05, 0.05, size=n)
    if signed_magnitudes:
        values *= rng.choice([-1.0, 1.0], size=n)
    else:
        values -= n * 0.125
    return values.reshape(shape)


# --------------------------------------------------------------------------------------
# Finite differences
# --------------------------------------------------------------------------------------


@SETTINGS
@given(cfg=grad_configs(), seed=seeds, p=st.sampled_from([1, 1.5, 2, 3, 4]), mean=st.booleans())
def test_lp_pool_gradient(cfg, seed, p, mean):
    x = away_from_zero(cfg.shape, np.random.default_rng(seed))
    check_gradient(cfg, "lp", x, (p,), {"mean": mean}, seed)


@SETTINGS
@given(cfg=grad_configs(), seed=seeds, mean=st.booleans())
def test_lp_pool_inf_gradient(cfg, seed, mean):
    x = distinct(cfg.shape, np.random.default_rng(seed), signed_magnitudes=True)
    check_gradient(cfg, "lp", x, (math.inf,), {"mean": mean}, seed)


@SETTINGS
@given(
    cfg=grad_configs(),
    seed=seeds,
    count_include_pad=st.booleans(),
    divisor_override=st.sampled_from([None, None, 2, 5]),
)
def test_avg_pool_gradient(cfg, seed, count_include_pad, divisor_override):
    x = np.random.default_rng(seed).normal(size=cfg.shape)
    kwargs = {"count_include_pad": count_include_pad, "divisor_override": divisor_override}
    check_gradient(cfg, "avg", x, (), kwargs, seed)


@SETTINGS
@given(cfg=grad_configs(), seed=seeds, kind=st.sampled_from(["max", "min"]))
def test_max_min_pool_gradient(cfg, seed, kind):
    x = distinct(cfg.shape, np.random.default_rng(seed))
    dx = check_gradient(cfg, kind, x, (), {}, seed)
    # Each output sends its dy to one cell: the total is preserved.
    y, pullback = pk.vjp(the_op(cfg, kind), x, **cfg.kwargs)
    ones = pullback(np.ones_like(y))
    assert ones.sum() == y.size and np.all(ones == np.round(ones))
    assert np.all(dx[ones == 0] == 0)


@SETTINGS
@given(
    cfg=grad_configs(large=True),
    seed=seeds,
    op=st.sampled_from(["max", "min", "avg", "lp"]),
    p=st.sampled_from([1, 2, 3, math.inf]),
    mean=st.booleans(),
    count_include_pad=st.booleans(),
)
def test_large_stride1_window_gradients(cfg, seed, op, p, mean, count_include_pad):
    rng = np.random.default_rng(seed)
    if op in ("max", "min"):
        check_gradient(cfg, op, distinct(cfg.shape, rng), (), {}, seed)
    elif op == "avg":
        kwargs = {"count_include_pad": count_include_pad}
        check_gradient(cfg, "avg", rng.normal(size=cfg.shape), (), kwargs, seed)
    else:
        x = distinct(cfg.shape, rng, signed_magnitudes=True) if p == math.inf else away_from_zero(cfg.shape, rng)
        check_gradient(cfg, "lp", x, (p,), {"mean": mean}, seed)


@SETTINGS
@given(cfg=grad_configs(), seed=seeds, op=st.sampled_from(["max", "avg", "lp"]))
def test_pullback_is_deterministic(cfg, seed, op):
    rng = np.random.default_rng(seed)
    x = distinct(cfg.shape, rng, signed_magnitudes=True)
    args = (2,) if op == "lp" else ()
    try:
        y, pullback = pk.vjp(the_op(cfg, op), x, *args, **cfg.kwargs)
    except pk.PoolingConfigError:
        reject()
    dy = rng.normal(size=y.shape)
    first = pullback(dy)
    np.testing.assert_array_equal(pullback(dy), first)
    np.testing.assert_array_equal(pullback(dy.copy()), first)
    # The pullback is linear in dy.
    np.testing.assert_allclose(pullback(2.5 * dy), 2.5 * first, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("op", ["max", "avg", "lp"])
def test_pullback_is_bitwise_deterministic_on_a_larger_input(op, channels_last, backend):
    """Large enough for a parallel backend to split the work: repeated pullbacks of overlapping
    windows are identical bit for bit, and agree with the other backend to rounding."""
    rng = np.random.default_rng(3)
    shape = (3, 32, 33, 5) if channels_last else (3, 5, 32, 33)
    x = rng.normal(size=shape)
    args = (3,) if op == "lp" else ()
    kwargs = {"kernel_size": 3, "stride": 1, "padding": 1, "channels_last": channels_last}
    y, pullback = pk.vjp(GENERIC[op], x, *args, **kwargs, backend=backend)
    dy = rng.normal(size=y.shape)
    first = pullback(dy)
    for _ in range(3):
        np.testing.assert_array_equal(pullback(dy), first)
    other = "numpy" if backend == "numba" else "numba"
    _, other_pullback = pk.vjp(GENERIC[op], x, *args, **kwargs, backend=other)
    np.testing.assert_allclose(other_pullback(dy), first, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------
# Worked examples
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_overlapping_windows_accumulate(backend):
    x = np.array([[0.0, 5.0, 0.0, 0.0]])  # unbatched (C, W)
    y, pullback = pk.vjp(pk.max_pool1d, x, 3, 1, backend=backend)
    # Windows [0, 5, 0] and [5, 0, 0]: both pick position 1.
    np.testing.assert_array_equal(y, [[5.0, 5.0]])
    np.testing.assert_array_equal(pullback(np.ones_like(y)), [[0.0, 2.0, 0.0, 0.0]])
    # With padding 1: windows {0,1}, {0,1,2}, {1,2,3}, {2,3}: 5 wins the first three; the last
    # window's maximum is the first of its two zeros, position 2.
    y, pullback = pk.vjp(pk.max_pool1d, x, 3, 1, 1, backend=backend)
    np.testing.assert_array_equal(y, [[5.0, 5.0, 5.0, 0.0]])
    dx = pullback(np.ones_like(y))
    np.testing.assert_array_equal(dx, [[0.0, 3.0, 1.0, 0.0]])
    np.testing.assert_array_equal(pullback(np.ones_like(y)), dx)
    np.testing.assert_array_equal(pullback(np.array([[1.0, 10.0, 100.0, 1000.0]])), [[0.0, 111.0, 1000.0, 0.0]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_avg_gradient_by_hand(backend):
    x = np.arange(4.0).reshape(1, 1, 4)
    _, pullback = pk.vjp(pk.avg_pool, x, 3, 1, 1, backend=backend)  # divisors 3 (pad counted)
    np.testing.assert_allclose(pullback(np.ones((1, 1, 4))), [[[2 / 3, 1.0, 1.0, 2 / 3]]], rtol=1e-14)
    _, pullback = pk.vjp(pk.avg_pool, x, 3, 1, 1, count_include_pad=False, backend=backend)  # divisors 2, 3, 3, 2
    np.testing.assert_allclose(
        pullback(np.ones((1, 1, 4))), [[[1 / 2 + 1 / 3, 1 / 2 + 2 / 3, 2 / 3 + 1 / 2, 1 / 3 + 1 / 2]]], rtol=1e-14
    )
    _, pullback = pk.vjp(pk.avg_pool, x, 3, 1, 1, divisor_override=4, backend=backend)
    np.testing.assert_allclose(pullback(np.ones((1, 1, 4))), [[[0.5, 0.75, 0.75, 0.5]]], rtol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["max", "min"])
def test_ties_send_the_gradient_to_the_first_cell(kind, backend):
    op1, op2 = (pk.max_pool1d, pk.max_pool2d) if kind == "max" else (pk.min_pool1d, pk.min_pool2d)
    x = np.array([[1.0, 3.0, 3.0, 2.0]]) if kind == "max" else np.array([[4.0, 1.0, 1.0, 2.0]])
    _, pullback = pk.vjp(op1, x, 4, backend=backend)
    np.testing.assert_array_equal(pullback(np.array([[7.0]])), [[0.0, 7.0, 0.0, 0.0]])
    # 2-D: row-major scan order, so (0, 1) beats (1, 0) and the whole window of equal values
    # sends everything to (0, 0).
    x = np.array([[[0.0, 3.0], [3.0, 3.0]]]) if kind == "max" else np.array([[[5.0, 3.0], [3.0, 3.0]]])
    _, pullback = pk.vjp(op2, x, 2, backend=backend)
    np.testing.assert_array_equal(pullback(np.ones((1, 1, 1))), [[[0.0, 1.0], [0.0, 0.0]]])
    _, pullback = pk.vjp(op2, np.full((1, 2, 2), 4.0), 2, backend=backend)
    np.testing.assert_array_equal(pullback(np.ones((1, 1, 1))), [[[1.0, 0.0], [0.0, 0.0]]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_lp_inf_gradient_has_the_sign_of_the_selected_cell(backend):
    x = np.array([[[-3.0, 2.0, 1.0, -0.5]]])
    y, pullback = pk.vjp(pk.lp_pool, x, math.inf, 2, backend=backend)
    np.testing.assert_array_equal(y, [[[3.0, 1.0]]])
    np.testing.assert_array_equal(pullback(np.array([[[2.0, 5.0]]])), [[[-2.0, 0.0, 5.0, 0.0]]])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p", [1, 1.5, 2, 3, 4])
@pytest.mark.parametrize("mean", [False, True])
def test_lp_gradient_of_an_all_zero_window_is_zero(p, mean, backend):
    x = np.array([[[0.0, 0.0, 1.0, -2.0]]])
    y, pullback = pk.vjp(pk.lp_pool, x, p, 2, mean=mean, backend=backend)
    assert y[0, 0, 0] == 0.0
    with np.errstate(all="raise"):
        dx = pullback(np.array([[[1.0, 1.0]]]))
    assert np.all(np.isfinite(dx))
    np.testing.assert_array_equal(dx[0, 0, :2], [0.0, 0.0])
    # The non-zero window is differentiable: compare with finite differences there.
    want = finite_difference_grad(lambda z: pk.lp_pool(z, p, 2, mean=mean), x, np.array([[[1.0, 1.0]]]))
    np.testing.assert_allclose(dx[0, 0, 2:], want[0, 0, 2:], rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------------------
# Layouts and the pullback's contract
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["max", "avg", "lp"])
def test_unbatched_and_channels_last_pullbacks_keep_the_input_layout(op, backend):
    rng = np.random.default_rng(7)
    base = distinct((2, 3, 5, 4), rng, signed_magnitudes=True)  # (N, C, H, W)
    args = (2,) if op == "lp" else ()
    kwargs = {"kernel_size": (3, 2), "stride": (2, 1), "padding": 1, "backend": backend}
    y_ref, pull_ref = pk.vjp(GENERIC[op], base, *args, **kwargs)
    dy_ref = rng.normal(size=y_ref.shape)
    dx_ref = pull_ref(dy_ref)
    assert dx_ref.shape == base.shape

    layouts = {
        # name: (input, dy, how to turn dx back into (N, C, H, W), op, channels_last)
        "channels_last": (base.transpose(0, 2, 3, 1), dy_ref.transpose(0, 2, 3, 1), (0, 3, 1, 2), GENERIC[op], True),
        "unbatched": (base[0], dy_ref[0], None, FIXED[(op, 2)], False),
        "unbatched_channels_last": (
            base[0].transpose(1, 2, 0),
            dy_ref[0].transpose(1, 2, 0),
            None,
            FIXED[(op, 2)],
            True,
        ),
    }
    for name, (x, dy, back, fn, channels_last) in layouts.items():
        y, pullback = pk.vjp(fn, x, *args, **kwargs, channels_last=channels_last)
        assert y.shape == dy.shape, name
        dx = pullback(dy)
        assert dx.shape == x.shape, name
        if name == "channels_last":
            np.testing.assert_allclose(dx.transpose(back), dx_ref, rtol=1e-13, atol=1e-15)
        elif name == "unbatched":
            np.testing.assert_allclose(dx, dx_ref[0], rtol=1e-13, atol=1e-15)
        else:
            np.testing.assert_allclose(dx.transpose(2, 0, 1), dx_ref[0], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("channels_last", [False, True])
def test_pullback_rejects_a_dy_of_the_wrong_shape(channels_last):
    x = np.zeros((1, 2, 6, 4)) if not channels_last else np.zeros((1, 6, 4, 2))
    y, pullback = pk.vjp(pk.max_pool, x, 2, channels_last=channels_last)
    wrong = [np.ones((*y.shape[:-1], y.shape[-1] + 1)), np.ones(y.shape[1:]), np.ones(np.moveaxis(y, 1, -1).shape)]
    for dy in wrong:
        assert dy.shape != y.shape
        with pytest.raises(pk.PoolingConfigError) as info:
            pullback(dy)
        assert str(y.shape) in str(info.value)
        assert str(dy.shape) in str(info.value)


def test_vjp_of_an_unregistered_function():
    x = np.zeros((1, 1, 4))
    for fn in (np.max, lambda z: pk.max_pool(z, 2)):
        with pytest.raises(pk.PoolingTypeError, match="has no registered gradient"):
            pk.vjp(fn, x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", [pk.max_pool, pk.min_pool])
def test_vjp_with_return_indices(op, backend):
    x = np.array([[[[1.0, 4.0, 2.0], [6.0, 5.0, 0.0], [3.0, 8.0, 7.0]]]])
    (y, idx), pullback = pk.vjp(op, x, 2, 1, return_indices=True, backend=backend)
    want_y, want_idx = op(x, 2, 1, return_indices=True)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(idx, want_idx)
    assert idx.dtype == np.int64
    dy = np.array([[[[1.0, 10.0], [100.0, 1000.0]]]])
    dx = pullback(dy)
    want = np.zeros(9)
    np.add.at(want, idx.ravel(), dy.ravel())
    np.testing.assert_array_equal(dx, want.reshape(x.shape))
    with pytest.raises(pk.PoolingConfigError):
        pullback(np.ones((1, 1, 3, 3)))


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_pullback_does_not_share_arrays_with_the_caller(backend):
    """Changing the returned values or indices in place must not change (or crash) the pullback."""
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    (y, idx), pullback = pk.vjp(pk.max_pool2d, x, 2, return_indices=True, backend=backend)
    expected = pullback(np.ones_like(y))
    idx[...] = 10**12
    y[...] = -1.0
    np.testing.assert_array_equal(pullback(np.ones_like(y)), expected)
    z, lp_pullback = pk.vjp(pk.lp_pool, np.array([[[3.0, 4.0, 1.0, 1.0]]]), 2, 2, backend=backend)
    z *= 2
    np.testing.assert_allclose(lp_pullback(np.ones_like(z)), [[[0.6, 0.8, 2**-0.5, 2**-0.5]]])

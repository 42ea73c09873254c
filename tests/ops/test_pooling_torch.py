"""poolkit against PyTorch CPU: forward values, indices and gradients of max and avg pooling.

Configurations come from Hypothesis: 1-D/2-D/3-D, both layouts, padding,
dilation, ceil mode, count_include_pad, divisor_override, ties and NaN. Where
PyTorch refuses a configuration poolkit must refuse it too; where poolkit
refuses one that PyTorch accepts, PyTorch must be returning its garbage for a
window of padding alone (-inf and an out-of-range index), or the window must be
longer than the padded input (which PyTorch's avg_pool3d refuses, and its
other pools accept in ceil mode only).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import poolkit as pk

torch = pytest.importorskip("torch", reason="torch==2.13.0 (the [test] extra) is the oracle here")
F = torch.nn.functional

TORCH_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
TORCH_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
PK_MAX = {1: pk.max_pool1d, 2: pk.max_pool2d, 3: pk.max_pool3d}
PK_AVG = {1: pk.avg_pool1d, 2: pk.avg_pool2d, 3: pk.avg_pool3d}
TORCH_CHANNELS_LAST = {2: "channels_last", 3: "channels_last_3d"}

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def pool_cases(draw, op):
    rank = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(rank))
    stride = draw(st.none() | st.tuples(*[st.integers(1, 3)] * rank))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(rank)) if op == "max" else (1,) * rank
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    sizes = tuple(draw(st.integers(1, 8)) for _ in range(rank))
    batch, channels = draw(st.integers(1, 2)), draw(st.integers(1, 5))
    data = draw(st.sampled_from(["normal", "ties", "nan"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (batch, channels, *sizes)
    if data == "normal":
        x = rng.standard_normal(shape)
    else:
        x = rng.integers(0, 3, shape).astype(np.float64)
        if data == "nan":
            x[rng.random(shape) < 0.2] = np.nan
    case = dict(
        rank=rank,
        x=x,
        kernel=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        ceil_mode=draw(st.booleans()),
        channels_last=draw(st.booleans()),
        backend=draw(st.sampled_from(["numba", "numpy"])),
        dy_rng=rng,
    )
    if op == "avg":
        case["count_include_pad"] = draw(st.booleans())
        case["divisor_override"] = draw(st.none() | st.integers(1, 5)) if rank > 1 else None
    return case


def _to_torch(x_cf, rank, channels_last):
    tensor = torch.from_numpy(x_cf.copy()).requires_grad_(True)
    if channels_last and rank in TORCH_CHANNELS_LAST:
        fmt = getattr(torch, TORCH_CHANNELS_LAST[rank])
        tensor = tensor.detach().to(memory_format=fmt).requires_grad_(True)
    return tensor


def _user_layout(a, channels_last):
    return np.ascontiguousarray(np.moveaxis(a, 1, -1)) if channels_last else a


def _from_user(a, channels_last):
    return np.moveaxis(a, -1, 1) if channels_last else a


def _longer_than_padded_input(case):
    return any(
        d * (k - 1) + 1 > n + 2 * p
        for d, k, n, p in zip(case["dilation"], case["kernel"], case["x"].shape[2:], case["padding"])
    )


def _check_refusal(err, case, y_t):
    """poolkit refused what PyTorch computed: only for the two documented reasons."""
    if "read only padding" in str(err):
        assert torch.isneginf(y_t).any(), "PyTorch computed real values where poolkit saw padding only"
    else:
        assert "larger than the padded input" in str(err) and _longer_than_padded_input(case)
        assert case["ceil_mode"]


def _run_torch(fn, case, **kw):
    xt = _to_torch(case["x"], case["rank"], case["channels_last"])
    try:
        out = fn(xt, case["kernel"], case["stride"], case["padding"], **kw)
    except RuntimeError as err:
        return xt, None, err
    return xt, out, None


@SETTINGS
@given(pool_cases("max"))
def test_max_pool_matches_torch(case):
    rank, cl = case["rank"], case["channels_last"]
    xt, out, torch_err = _run_torch(
        TORCH_MAX[rank], case, dilation=case["dilation"], ceil_mode=case["ceil_mode"], return_indices=True
    )
    x_user = _user_layout(case["x"], cl)
    call = dict(
        stride=case["stride"],
        padding=case["padding"],
        dilation=case["dilation"],
        ceil_mode=case["ceil_mode"],
        return_indices=True,
        channels_last=cl,
        backend=case["backend"],
    )
    if torch_err is not None:
        with pytest.raises(pk.PoolingConfigError):
            PK_MAX[rank](x_user, case["kernel"], **call)
        return
    y_t, idx_t = out
    try:
        (y, idx), pullback = pk.vjp(PK_MAX[rank], x_user, case["kernel"], **call)
    except pk.PoolingConfigError as err:
        _check_refusal(err, case, y_t)
        return
    np.testing.assert_array_equal(_from_user(y, cl), y_t.detach().numpy())
    np.testing.assert_array_equal(_from_user(idx, cl), idx_t.numpy())
    assert idx.dtype == np.int64

    dy = case["dy_rng"].standard_normal(tuple(y_t.shape))
    y_t.backward(torch.from_numpy(dy))
    dx = pullback(_user_layout(dy, cl))
    np.testing.assert_allclose(_from_user(dx, cl), xt.grad.numpy(), rtol=1e-12, atol=1e-12)


@SETTINGS
@given(pool_cases("avg"))
def test_avg_pool_matches_torch(case):
    rank, cl = case["rank"], case["channels_last"]
    kw = dict(ceil_mode=case["ceil_mode"], count_include_pad=case["count_include_pad"])
    if case["divisor_override"] is not None:
        kw["divisor_override"] = case["divisor_override"]
    xt, y_t, torch_err = _run_torch(TORCH_AVG[rank], case, **kw)
    x_user = _user_layout(case["x"], cl)
    call = dict(stride=case["stride"], padding=case["padding"], channels_last=cl, backend=case["backend"], **kw)
    if torch_err is not None and rank == 3 and not _longer_than_padded_input(case):
        # avg_pool3d alone refuses an unpadded input smaller than the kernel even where padding
        # makes it fit (avg_pool2d and max_pool3d accept it); the brute-force tests check the values.
        assert "smaller than kernel size" in str(torch_err)
        assert any(k > n for k, n in zip(case["kernel"], case["x"].shape[2:]))
        assert PK_AVG[rank](x_user, case["kernel"], **call).size > 0
        return
    if torch_err is not None:
        with pytest.raises(pk.PoolingConfigError):
            PK_AVG[rank](x_user, case["kernel"], **call)
        return
    try:
        y, pullback = pk.vjp(PK_AVG[rank], x_user, case["kernel"], **call)
    except pk.PoolingConfigError as err:
        _check_refusal(err, case, y_t)
        return
    np.testing.assert_allclose(_from_user(y, cl), y_t.detach().numpy(), rtol=1e-12, atol=1e-14)

    dy = case["dy_rng"].standard_normal(tuple(y_t.shape))
    y_t.backward(torch.from_numpy(dy))
    dx = pullback(_user_layout(dy, cl))
    np.testing.assert_allclose(_from_user(dx, cl), xt.grad.numpy(), rtol=1e-12, atol=1e-14)


@settings(max_examples=40, deadline=None)
@given(
    rank=st.integers(1, 3),
    data=st.data(),
)
def test_generic_functions_match_fixed_rank(rank, data):
    """The N-D functions pool the same as the fixed-rank ones on batched input."""
    kernel = data.draw(st.integers(1, 3))
    x = np.random.default_rng(data.draw(st.integers(0, 999))).standard_normal((2, 3, *[5] * rank))
    np.testing.assert_array_equal(pk.max_pool(x, kernel), PK_MAX[rank](x, kernel))
    np.testing.assert_array_equal(pk.avg_pool(x, kernel, 1), PK_AVG[rank](x, kernel, 1))


def test_unbatched_input_matches_torch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 7, 6)).astype(np.float32)
    y, idx = pk.max_pool2d(x, 3, 2, 1, return_indices=True)
    y_t, idx_t = F.max_pool2d(torch.from_numpy(x), 3, 2, 1, return_indices=True)
    assert y.shape == (3, 4, 3)
    np.testing.assert_array_equal(y, y_t.numpy())
    np.testing.assert_array_equal(idx, idx_t.numpy())
    np.testing.assert_allclose(pk.avg_pool1d(x[0], 2), F.avg_pool1d(torch.from_numpy(x[0]), 2).numpy())


def test_resnet_stem_float32_matches_torch():
    """The issue's headline calls, on a realistic float32 input."""
    x = np.random.default_rng(1).standard_normal((2, 64, 56, 56)).astype(np.float32)
    xt = torch.from_numpy(x)
    y = pk.max_pool2d(x, 3, 2, 1)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, F.max_pool2d(xt, 3, 2, 1).numpy())

    y, pull = pk.vjp(pk.avg_pool, x, 2)
    xg = xt.clone().requires_grad_(True)
    y_t = F.avg_pool2d(xg, 2)
    np.testing.assert_allclose(y, y_t.detach().numpy(), rtol=1e-6, atol=1e-6)  # torch sums in float32
    dy = np.random.default_rng(2).standard_normal(y.shape).astype(np.float32)
    y_t.backward(torch.from_numpy(dy))
    dx = pull(dy)
    assert dx.dtype == np.float32
    np.testing.assert_allclose(dx, xg.grad.numpy(), rtol=1e-6, atol=1e-7)


def test_padding_only_window_is_refused_where_torch_returns_garbage():
    """PyTorch's answer here is -inf with indices past the end of the plane."""
    x = np.random.default_rng(0).standard_normal((1, 1, 1, 5))
    y_t, idx_t = F.max_pool2d(torch.from_numpy(x), (2, 1), 1, (1, 0), (2, 1), return_indices=True)
    assert torch.isneginf(y_t).all() and (idx_t >= 5).all()
    with pytest.raises(pk.PoolingConfigError, match="read only padding"):
        pk.max_pool2d(x, (2, 1), 1, (1, 0), (2, 1))

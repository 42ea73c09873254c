"""Global, adaptive and GeM pooling against PyTorch, ONNX Runtime, NumPy reductions and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from gradients import finite_difference_grad
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layout import from_layout, to_layout

import poolkit as pk

torch = pytest.importorskip("torch", reason="torch==2.13.0 (the [test] extra) is the oracle here")
F = torch.nn.functional

BACKENDS = ["numba", "numpy"]
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TORCH_ADAPTIVE_MAX = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}
TORCH_ADAPTIVE_AVG = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}
PK_ADAPTIVE_MAX = {1: pk.adaptive_max_pool1d, 2: pk.adaptive_max_pool2d, 3: pk.adaptive_max_pool3d}
PK_ADAPTIVE_AVG = {1: pk.adaptive_avg_pool1d, 2: pk.adaptive_avg_pool2d, 3: pk.adaptive_avg_pool3d}


@st.composite
def adaptive_cases(draw):
    rank = draw(st.integers(1, 3))
    sizes = tuple(draw(st.integers(1, 9)) for _ in range(rank))
    output = tuple(draw(st.one_of(st.none(), st.integers(1, 11))) for _ in range(rank))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 4)), *sizes)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    data = draw(st.sampled_from(["normal", "ties", "nan"]))
    if data == "normal":
        x = rng.standard_normal(shape)
    else:
        x = rng.integers(-1, 2, shape).astype(np.float64)
        if data == "nan":
            x[rng.random(shape) < 0.15] = np.nan
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return dict(
        rank=rank,
        x=x.astype(dtype),
        output=output,
        channels_last=draw(st.booleans()),
        backend=draw(st.sampled_from(BACKENDS)),
    )


def torch_output_size(case):
    """PyTorch's output size, None resolved to the input size (PyTorch's 1-D pools take no None)."""
    sizes = tuple(size or length for size, length in zip(case["output"], case["x"].shape[2:]))
    return sizes if case["rank"] > 1 else sizes[0]


@SETTINGS
@given(adaptive_cases())
def test_adaptive_max_pool_matches_torch(case):
    x, rank, channels_last = case["x"], case["rank"], case["channels_last"]
    xt = torch.from_numpy(x).requires_grad_(True)
    expected, expected_idx = TORCH_ADAPTIVE_MAX[rank](xt, torch_output_size(case), return_indices=True)
    dy = np.random.default_rng(0).standard_normal(tuple(expected.shape)).astype(x.dtype)
    expected.backward(torch.from_numpy(dy))
    (y, idx), pullback = pk.vjp(
        PK_ADAPTIVE_MAX[rank], to_layout(x, channels_last), case["output"], return_indices=True,
        channels_last=channels_last, backend=case["backend"],
    )  # fmt: skip
    np.testing.assert_array_equal(from_layout(y, channels_last), expected.detach().numpy())
    np.testing.assert_array_equal(from_layout(idx, channels_last), expected_idx.numpy())
    dx = from_layout(pullback(to_layout(dy, channels_last)), channels_last)
    # PyTorch adds the gradients of bins that share a cell in float32; a cell may collect hundreds
    tolerance = 1e-5 if x.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=tolerance, atol=tolerance)


@SETTINGS
@given(adaptive_cases())
def test_adaptive_avg_pool_matches_torch(case):
    x, rank, channels_last = case["x"], case["rank"], case["channels_last"]
    x = np.nan_to_num(x)
    xt = torch.from_numpy(x).requires_grad_(True)
    expected = TORCH_ADAPTIVE_AVG[rank](xt, torch_output_size(case))
    dy = np.random.default_rng(1).standard_normal(tuple(expected.shape)).astype(x.dtype)
    expected.backward(torch.from_numpy(dy))
    y, pullback = pk.vjp(
        pk.adaptive_avg_pool, to_layout(x, channels_last), case["output"], channels_last=channels_last,
        backend=case["backend"],
    )  # fmt: skip
    tol = 1e-5 if x.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(from_layout(y, channels_last), expected.detach().numpy(), rtol=tol, atol=tol)
    dx = from_layout(pullback(to_layout(dy, channels_last)), channels_last)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unbatched_fixed_rank_and_output_larger_than_input(backend):
    x = np.arange(12.0).reshape(2, 2, 3)
    y, idx = pk.adaptive_max_pool2d(x, (4, 5), return_indices=True, backend=backend)
    expected, expected_idx = F.adaptive_max_pool2d(torch.from_numpy(x), (4, 5), return_indices=True)
    np.testing.assert_array_equal(y, expected.numpy())
    np.testing.assert_array_equal(idx, expected_idx.numpy())
    np.testing.assert_array_equal(
        pk.adaptive_avg_pool1d(x[0], 7, backend=backend), F.adaptive_avg_pool1d(torch.from_numpy(x[0]), 7).numpy()
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.bool_])
def test_adaptive_pools_of_integers(backend, dtype):
    x = np.random.default_rng(3).integers(0, 50, (2, 3, 7, 5)).astype(dtype)
    y, idx = pk.adaptive_max_pool(x, 3, return_indices=True, backend=backend)
    assert y.dtype == dtype
    expected, expected_idx = F.adaptive_max_pool2d(torch.from_numpy(x.astype(np.float64)), 3, return_indices=True)
    np.testing.assert_array_equal(y, expected.numpy().astype(dtype))
    np.testing.assert_array_equal(idx, expected_idx.numpy())
    mean = pk.adaptive_avg_pool(x, (2, 4), backend=backend)
    assert mean.dtype == np.float64
    np.testing.assert_allclose(mean, F.adaptive_avg_pool2d(torch.from_numpy(x.astype(np.float64)), (2, 4)).numpy())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("spatial", [(7,), (5, 6), (3, 4, 2), (2, 3, 2, 3)])
def test_global_pools_match_numpy_reductions(backend, channels_last, spatial):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, *spatial)).astype(np.float32)
    axes = tuple(range(2, x.ndim))
    user = to_layout(x, channels_last)
    kw = dict(channels_last=channels_last, backend=backend)
    np.testing.assert_array_equal(pk.global_max_pool(user, **kw), x.max(axis=axes))
    np.testing.assert_allclose(pk.global_avg_pool(user, **kw), x.mean(axis=axes, dtype=np.float64), rtol=1e-6)
    lp3 = (np.abs(x.astype(np.float64)) ** 3).sum(axis=axes) ** (1 / 3)
    np.testing.assert_allclose(pk.global_lp_pool(user, 3, **kw), lp3, rtol=1e-6)
    kept = pk.global_avg_pool(user, keepdims=True, **kw)
    assert kept.shape == to_layout(x.mean(axis=axes, keepdims=True), channels_last).shape
    assert pk.global_max_pool(user, **kw).dtype == np.float32


@pytest.mark.parametrize("backend", BACKENDS)
def test_global_max_propagates_nan_and_keeps_the_first_zero(backend):
    x = np.array([[[-0.0, 0.0, -1.0], [1.0, np.nan, 2.0], [0.0, -0.0, -3.0]]])
    y = pk.global_max_pool(x[:, :, None, :], backend=backend)
    assert np.isnan(y[0, 1])
    assert np.signbit(y[0, 0]) and not np.signbit(y[0, 2])


@pytest.mark.parametrize("op_type, function, attrs", [
    ("GlobalMaxPool", pk.global_max_pool, {}),
    ("GlobalAveragePool", pk.global_avg_pool, {}),
    ("GlobalLpPool", lambda x, **kw: pk.global_lp_pool(x, 2, **kw), {}),
    ("GlobalLpPool", lambda x, **kw: pk.global_lp_pool(x, 3, **kw), {"p": 3}),
])  # fmt: skip
@pytest.mark.parametrize("spatial", [(9,), (7, 7), (3, 4, 5)])
def test_global_pools_match_onnx_runtime(op_type, function, attrs, spatial):
    onnx = pytest.importorskip("onnx", reason="onnx (the [test] extra) builds the oracle model")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime (the [test] extra) is the oracle here")
    from onnx import TensorProto, helper

    x = np.random.default_rng(5).standard_normal((2, 3, *spatial)).astype(np.float32)
    node = helper.make_node(op_type, ["x"], ["y"], **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x})[0]
    del onnx
    np.testing.assert_allclose(function(x, keepdims=True), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("name, call", [
    ("global_max_pool", lambda x, **kw: pk.vjp(pk.global_max_pool, x, **kw)),
    ("global_avg_pool", lambda x, **kw: pk.vjp(pk.global_avg_pool, x, keepdims=True, **kw)),
    ("global_lp_pool", lambda x, **kw: pk.vjp(pk.global_lp_pool, x, 3.0, **kw)),
    ("adaptive_avg_pool", lambda x, **kw: pk.vjp(pk.adaptive_avg_pool, x, (2, None), **kw)),
    ("adaptive_max_pool", lambda x, **kw: pk.vjp(pk.adaptive_max_pool, x, (3, 2), **kw)),
])  # fmt: skip
def test_gradients_by_finite_differences(backend, channels_last, name, call):
    rng = np.random.default_rng(6)
    x = rng.permutation(np.arange(2 * 3 * 5 * 4, dtype=np.float64) / 7 + 0.5).reshape(2, 3, 5, 4)
    x = to_layout(x * rng.choice([-1, 1], x.shape), channels_last)
    kw = dict(channels_last=channels_last, backend=backend)
    y, pullback = call(x, **kw)
    dy = rng.standard_normal(y.shape)
    numeric = finite_difference_grad(lambda v: call(v, **kw)[0], x, dy)
    np.testing.assert_allclose(pullback(dy), numeric, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("output_size", [1, (2, 3), (None, 2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_gem_matches_torch_formula_with_autograd(backend, output_size, channels_last):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 5, 6))  # negatives are clamped to eps
    xt = torch.from_numpy(x).requires_grad_(True)
    pt = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    expected = F.adaptive_avg_pool2d(xt.clamp(min=1e-6).pow(pt), output_size).pow(1.0 / pt)
    dy = rng.standard_normal(tuple(expected.shape))
    expected.backward(torch.from_numpy(dy))
    y, pullback = pk.vjp(
        pk.gem_pool, to_layout(x, channels_last), p=2.5, output_size=output_size, channels_last=channels_last,
        backend=backend,
    )  # fmt: skip
    np.testing.assert_allclose(from_layout(y, channels_last), expected.detach().numpy(), rtol=1e-12)
    dx, dp = pullback(to_layout(dy, channels_last))
    np.testing.assert_allclose(from_layout(dx, channels_last), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dp, pt.grad.item(), rtol=1e-10)


def test_gem_gradients_by_finite_differences():
    rng = np.random.default_rng(8)
    x = rng.uniform(0.2, 2.0, (1, 2, 4, 5))
    y, pullback = pk.vjp(pk.gem_pool, x, 3.0, output_size=(2, 2))
    dy = rng.standard_normal(y.shape)
    dx, dp = pullback(dy)
    numeric_dx = finite_difference_grad(lambda v: pk.gem_pool(v, 3.0, output_size=(2, 2)), x, dy)
    np.testing.assert_allclose(dx, numeric_dx, rtol=1e-5, atol=1e-8)
    h = 1e-6
    numeric_dp = (np.sum(dy * pk.gem_pool(x, 3.0 + h, output_size=(2, 2))) - np.sum(
        dy * pk.gem_pool(x, 3.0 - h, output_size=(2, 2))
    )) / (2 * h)  # fmt: skip
    np.testing.assert_allclose(dp, numeric_dp, rtol=1e-6)


def test_gem_keeps_float32_and_p1_is_the_mean():
    x = np.random.default_rng(9).uniform(0.1, 1, (2, 3, 4, 4)).astype(np.float32)
    y = pk.gem_pool(x, p=1.0)
    assert y.dtype == np.float32 and y.shape == (2, 3, 1, 1)
    np.testing.assert_allclose(y[..., 0, 0], x.mean(axis=(2, 3)), rtol=1e-6)


@pytest.mark.parametrize("call, error, match", [
    (lambda x: pk.adaptive_max_pool(x, 0), pk.PoolingConfigError, r"asks for 0 bins along spatial axis 0"),
    (lambda x: pk.adaptive_avg_pool(x, (2, -1)), pk.PoolingConfigError, r"asks for -1 bins along spatial axis 1"),
    (lambda x: pk.adaptive_avg_pool(x, (2, 2, 2)), pk.PoolingConfigError, r"has 3 entries for an input of 2 spatial"),
    (lambda x: pk.adaptive_avg_pool(x, 2.5), pk.PoolingTypeError, r"output_size=2.5 must be an int, None or a seq"),
    (lambda x: pk.adaptive_max_pool2d(x[0, 0], 2), pk.PoolingConfigError, r"takes \(N, C, H, W\) or unbatched"),
    (lambda x: pk.gem_pool(x, p=0), pk.PoolingConfigError, r"p=0 is not allowed; use a finite positive number"),
    (lambda x: pk.gem_pool(x, p=-2.0), pk.PoolingConfigError, r"p=-2.0 is not allowed"),
    (lambda x: pk.gem_pool(x, eps=0.0), pk.PoolingConfigError, r"eps=0.0 is not allowed"),
    (lambda x: pk.global_lp_pool(x, 0), pk.PoolingConfigError, r"p=0 is not allowed"),
    (lambda x: pk.global_max_pool(x, keepdims=1), pk.PoolingTypeError, r"keepdims=1 must be True or False"),
])  # fmt: skip
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(np.ones((1, 2, 4, 4)))


@pytest.mark.parametrize("call", [
    lambda x: pk.adaptive_avg_pool(x, 2), lambda x: pk.global_max_pool(x), lambda x: pk.gem_pool(x),
])  # fmt: skip
def test_an_empty_spatial_axis_is_refused(call):
    with pytest.raises(pk.PoolingConfigError, match=r"spatial axis 1 of the input shape \(3, 0\) has size 0"):
        call(np.ones((1, 2, 3, 0)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batches_and_channels(backend):
    for shape in [(0, 2, 3, 4), (2, 0, 3, 4)]:
        x = np.ones(shape)
        y, pullback = pk.vjp(pk.global_avg_pool, x, backend=backend)
        assert y.shape == shape[:2] and pullback(y).shape == shape
        y, pullback = pk.vjp(pk.adaptive_max_pool, x, 2, backend=backend)
        assert y.shape == (*shape[:2], 2, 2) and pullback(y).shape == shape
        assert pk.spatial_pyramid_pool(x, (2, 1)).shape == (shape[0], shape[1] * 5)

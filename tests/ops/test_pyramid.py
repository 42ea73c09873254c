"""Spatial pyramid pooling and YOLO's SPP block against PyTorch compositions and a brute-force loop."""

from __future__ import annotations

import math

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


def torch_spp(xt, levels, op):
    pool = F.adaptive_max_pool2d if op == "max" else F.adaptive_avg_pool2d
    return torch.cat([pool(xt, n).reshape(xt.shape[0], -1) for n in levels], dim=1)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    levels=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    size=st.tuples(st.integers(1, 13), st.integers(1, 13)),
    op=st.sampled_from(["max", "avg"]),
    channels_last=st.booleans(),
    backend=st.sampled_from(BACKENDS),
    seed=st.integers(0, 2**32 - 1),
)
def test_adaptive_spp_matches_torch_composition(levels, size, op, channels_last, backend, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, *size))
    xt = torch.from_numpy(x).requires_grad_(True)
    expected = torch_spp(xt, levels, op)
    dy = rng.standard_normal(tuple(expected.shape))
    expected.backward(torch.from_numpy(dy))
    y, pullback = pk.vjp(
        pk.spatial_pyramid_pool, to_layout(x, channels_last), levels, op, channels_last=channels_last, backend=backend
    )
    assert y.shape == (2, 3 * sum(n * n for n in levels))
    np.testing.assert_allclose(y, expected.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(from_layout(pullback(dy), channels_last), xt.grad.numpy(), rtol=1e-12, atol=1e-12)


def brute_force_sppnet(x, levels, op):
    """SPPNet by the paper's formula, one window at a time: window ceil(a/n), stride floor(a/n)."""
    n_batch, channels, height, width = x.shape
    features = []
    for n in levels:
        kh, kw = math.ceil(height / n), math.ceil(width / n)
        sh, sw = height // n, width // n
        level = np.empty((n_batch, channels, n, n))
        for i in range(n):
            for j in range(n):
                box = x[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw]
                level[:, :, i, j] = box.max(axis=(2, 3)) if op == "max" else box.mean(axis=(2, 3))
        features.append(level.reshape(n_batch, -1))
    return np.concatenate(features, axis=1)


@pytest.mark.parametrize("op", ["max", "avg"])
@pytest.mark.parametrize("size", [(13, 13), (12, 8), (6, 9), (4, 4)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_sppnet_mode_matches_the_papers_formula(op, size, backend):
    x = np.random.default_rng(0).standard_normal((2, 3, *size))
    levels = (3, 2, 1) if min(size) < 8 else (4, 2, 1)
    y = pk.spatial_pyramid_pool(x, levels, op, mode="sppnet", backend=backend)
    np.testing.assert_allclose(y, brute_force_sppnet(x, levels, op), rtol=1e-12)


def test_sppnet_mode_refuses_sizes_its_formula_cannot_split():
    with pytest.raises(
        pk.PoolingConfigError,
        match=r"mode='sppnet' cannot split spatial axis 0 of size 7 into 4 bins: window ceil\(7/4\)=2 with stride "
        r"floor\(7/4\)=1 gives 6; use mode='adaptive'",
    ):
        pk.spatial_pyramid_pool(np.ones((1, 1, 7, 8)), (4,), mode="sppnet")
    with pytest.raises(pk.PoolingConfigError, match=r"size 3 into 4 bins: .* stride floor\(3/4\)=0 gives 0"):
        pk.spatial_pyramid_pool(np.ones((1, 1, 3, 8)), (4,), mode="sppnet")


def test_length_is_fixed_for_any_input_size_and_rank():
    lengths = {pk.spatial_pyramid_pool(np.ones((2, 5, h, w))).shape for h, w in [(5, 5), (13, 7), (32, 3)]}
    assert lengths == {(2, 5 * 21)}
    assert pk.spatial_pyramid_pool(np.ones((2, 5, 6, 7, 8)), (2, 1)).shape == (2, 5 * 9)
    assert pk.spatial_pyramid_pool(np.ones((2, 5, 6)), 3).shape == (2, 15)


@pytest.mark.parametrize("op", ["max", "avg"])
@pytest.mark.parametrize("mode", ["adaptive", "sppnet"])
def test_spp_gradient_by_finite_differences(op, mode):
    rng = np.random.default_rng(1)
    x = rng.permutation(np.arange(2 * 2 * 8 * 6, dtype=np.float64)).reshape(2, 2, 8, 6) / 10
    y, pullback = pk.vjp(pk.spatial_pyramid_pool, x, (3, 2), op, mode)
    dy = rng.standard_normal(y.shape)
    numeric = finite_difference_grad(lambda v: pk.spatial_pyramid_pool(v, (3, 2), op, mode), x, dy)
    np.testing.assert_allclose(pullback(dy), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("levels, error, match", [
    ((4, 0, 1), pk.PoolingConfigError, r"levels=\(4, 0, 1\) holds 0; every entry must be a positive int"),
    ((-2,), pk.PoolingConfigError, r"levels=\(-2,\) holds -2"),
    ((), pk.PoolingConfigError, r"levels=\(\) is empty"),
    ((2.5,), pk.PoolingTypeError, r"levels=2.5 must be an integer"),
])  # fmt: skip
def test_levels_errors(levels, error, match):
    with pytest.raises(error, match=match):
        pk.spatial_pyramid_pool(np.ones((1, 1, 8, 8)), levels)


def test_op_is_a_parameter_of_spp_not_of_vjp():
    x = np.arange(32.0).reshape(1, 2, 4, 4)
    y, pullback = pk.vjp(pk.spatial_pyramid_pool, x, op="avg", levels=(2,))
    np.testing.assert_array_equal(y, pk.spatial_pyramid_pool(x, (2,), "avg"))
    assert pullback(np.ones_like(y)).shape == x.shape


@pytest.mark.parametrize("kernel_sizes, error, match", [
    ((), pk.PoolingConfigError, r"kernel_sizes=\(\) is empty; give at least one positive int, e.g. \(5, 9, 13\)"),
    ((5, 0), pk.PoolingConfigError, r"kernel_sizes=\(5, 0\) holds 0; every entry must be a positive int"),
    ((5.0,), pk.PoolingTypeError, r"kernel_sizes=5.0 must be an integer"),
])  # fmt: skip
def test_spp_concat_kernel_size_errors(kernel_sizes, error, match):
    with pytest.raises(error, match=match):
        pk.spp_concat(np.ones((1, 1, 8, 8)), kernel_sizes)


def test_unknown_op_and_mode():
    with pytest.raises(pk.PoolingConfigError, match=r"op='min' is not an option; use 'max' or 'avg'"):
        pk.spatial_pyramid_pool(np.ones((1, 1, 8, 8)), op="min")
    with pytest.raises(pk.PoolingConfigError, match=r"mode='fixed' is not an option"):
        pk.spatial_pyramid_pool(np.ones((1, 1, 8, 8)), mode="fixed")


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_spp_concat_matches_torch(rank, channels_last, backend):
    pools = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
    rng = np.random.default_rng(rank)
    x = rng.standard_normal((2, 3, *(9,) * rank)).astype(np.float32)
    kernels = (3, 5) if rank == 3 else (5, 9, 13)
    xt = torch.from_numpy(x).requires_grad_(True)
    expected = torch.cat([xt, *(pools[rank](xt, k, 1, k // 2) for k in kernels)], dim=1)
    dy = rng.standard_normal(tuple(expected.shape)).astype(np.float32)
    expected.backward(torch.from_numpy(dy))
    y, pullback = pk.vjp(
        pk.spp_concat, to_layout(x, channels_last), kernels, channels_last=channels_last, backend=backend
    )
    np.testing.assert_array_equal(from_layout(y, channels_last), expected.detach().numpy())
    dx = from_layout(pullback(to_layout(dy, channels_last)), channels_last)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-6, atol=1e-6)
    assert dx.dtype == np.float32


def test_spp_concat_even_kernel_keeps_the_size_and_its_gradient():
    rng = np.random.default_rng(2)
    x = rng.permutation(np.arange(2 * 7 * 6, dtype=np.float64)).reshape(1, 2, 7, 6)
    y, pullback = pk.vjp(pk.spp_concat, x, (2, 3))
    assert y.shape == (1, 6, 7, 6)
    np.testing.assert_array_equal(y[:, 2:4], pk.max_pool(x, 2, 1, "same"))
    dy = rng.standard_normal(y.shape)
    numeric = finite_difference_grad(lambda v: pk.spp_concat(v, (2, 3)), x, dy)
    np.testing.assert_allclose(pullback(dy), numeric, rtol=1e-6, atol=1e-6)

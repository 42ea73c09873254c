"""Mixed pooling, blur pooling and anti-aliased max pooling against PyTorch compositions."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
from gradients import finite_difference_grad
from layout import from_layout, to_layout

import poolkit as pk

torch = pytest.importorskip("torch", reason="torch==2.13.0 (the [test] extra) is the oracle here")
F = torch.nn.functional

BACKENDS = ["numba", "numpy"]


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kernel, stride, padding", [(2, None, 0), (3, 2, 1), ((3, 2), 1, (1, 0))])
def test_mixed_pool_matches_torch_composition(per_channel, channels_last, backend, kernel, stride, padding):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 6))
    alpha = rng.uniform(0, 1, 3) if per_channel else 0.3
    xt = torch.from_numpy(x).requires_grad_(True)
    at = torch.tensor(alpha, dtype=torch.float64, requires_grad=True)
    weight = at.reshape(1, 3, 1, 1) if per_channel else at
    expected = weight * F.max_pool2d(xt, kernel, stride, padding) + (1 - weight) * F.avg_pool2d(
        xt, kernel, stride, padding
    )
    dy = rng.standard_normal(tuple(expected.shape))
    expected.backward(torch.from_numpy(dy))
    y, pullback = pk.vjp(
        pk.mixed_pool, to_layout(x, channels_last), kernel, stride, padding, alpha, channels_last=channels_last,
        backend=backend,
    )  # fmt: skip
    np.testing.assert_allclose(from_layout(y, channels_last), expected.detach().numpy(), rtol=1e-12, atol=1e-15)
    dx, dalpha = pullback(to_layout(dy, channels_last))
    np.testing.assert_allclose(from_layout(dx, channels_last), xt.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dalpha, at.grad.numpy(), rtol=1e-12)
    assert np.shape(dalpha) == np.shape(alpha)


def test_mixed_pool_gradients_by_finite_differences():
    rng = np.random.default_rng(1)
    x = rng.permutation(np.arange(2 * 2 * 6 * 5, dtype=np.float64)).reshape(2, 2, 6, 5) / 10
    alpha = np.array([0.2, 0.9])
    y, pullback = pk.vjp(pk.mixed_pool, x, 3, 2, 1, alpha)
    dy = rng.standard_normal(y.shape)
    dx, dalpha = pullback(dy)
    numeric_dx = finite_difference_grad(lambda v: pk.mixed_pool(v, 3, 2, 1, alpha), x, dy)
    np.testing.assert_allclose(dx, numeric_dx, rtol=1e-6, atol=1e-7)
    numeric_dalpha = finite_difference_grad(lambda a: pk.mixed_pool(x, 3, 2, 1, a), alpha, dy)
    np.testing.assert_allclose(dalpha, numeric_dalpha, rtol=1e-6)


def test_mixed_pool_ends_are_max_and_avg_and_float32_stays():
    x = np.random.default_rng(2).standard_normal((1, 2, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(pk.mixed_pool(x, 2, alpha=1.0), pk.max_pool(x, 2))
    np.testing.assert_allclose(pk.mixed_pool(x, 2, alpha=0.0), pk.avg_pool(x, 2), rtol=1e-6)
    assert pk.mixed_pool(x, 2).dtype == np.float32


@pytest.mark.parametrize("alpha, error, match", [
    (1.5, pk.PoolingConfigError, r"alpha=1.5 must lie in \[0, 1\]"),
    (-0.1, pk.PoolingConfigError, r"alpha=-0.1 must lie in \[0, 1\]"),
    (float("nan"), pk.PoolingConfigError, r"alpha=nan must lie in \[0, 1\]"),
    (np.array([0.5, 0.5, 0.5]), pk.PoolingConfigError, r"alpha of shape \(3,\) does not fit an input of 2 channels"),
    (np.ones((2, 1)) / 2, pk.PoolingConfigError, r"alpha of shape \(2, 1\) does not fit"),
    ("half", pk.PoolingTypeError, r"alpha='half' must be a real number or an array of 2 per-channel weights"),
    (True, pk.PoolingTypeError, r"alpha=True must be a real number"),
    (None, pk.PoolingTypeError, r"alpha=None must be a real number"),
])  # fmt: skip
def test_mixed_pool_alpha_errors(alpha, error, match):
    with pytest.raises(error, match=match):
        pk.mixed_pool(np.ones((1, 2, 4, 4)), 2, alpha=alpha)


def torch_blur(xt, stride, filter_size, padding_mode):
    """Zhang's BlurPool as PyTorch ops: pad, then a depthwise conv2d with the normalised binomial filter."""
    taps = torch.tensor([comb(filter_size - 1, j) for j in range(filter_size)], dtype=xt.dtype)
    kernel = taps[:, None] * taps[None, :]
    kernel = (kernel / kernel.sum()).expand(xt.shape[1], 1, filter_size, filter_size)
    before, after = (filter_size - 1) // 2, filter_size // 2
    mode = {"zeros": "constant"}.get(padding_mode, padding_mode)
    padded = F.pad(xt, [before, after, before, after], mode=mode)
    return F.conv2d(padded, kernel, stride=stride, groups=xt.shape[1])


@pytest.mark.parametrize("filter_size", range(1, 8))
@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "zeros"])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_blur_pool_matches_torch_depthwise_conv(filter_size, padding_mode, stride):
    rng = np.random.default_rng(filter_size * 10 + stride)
    x = rng.standard_normal((2, 3, 9, 8))
    xt = torch.from_numpy(x).requires_grad_(True)
    expected = torch_blur(xt, stride, filter_size, padding_mode)
    dy = rng.standard_normal(tuple(expected.shape))
    expected.backward(torch.from_numpy(dy))
    y, pullback = pk.vjp(pk.blur_pool, x, stride, filter_size, padding_mode)
    np.testing.assert_allclose(y, expected.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(pullback(dy), xt.grad.numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("channels_last", [False, True])
def test_blur_pool_float32_channels_last_and_1d_3d(channels_last):
    x = np.random.default_rng(3).standard_normal((2, 4, 10, 7)).astype(np.float32)
    y = pk.blur_pool(to_layout(x, channels_last), 2, 5, channels_last=channels_last)
    assert y.dtype == np.float32
    expected = torch_blur(torch.from_numpy(x), 2, 5, "reflect").numpy()
    np.testing.assert_allclose(from_layout(y, channels_last), expected, rtol=1e-5, atol=1e-6)
    line = x[:, :, :, 0]
    as_2d = pk.blur_pool(line[:, :, :, None], (2, 1), padding_mode="replicate")[..., 0]
    np.testing.assert_allclose(as_2d, pk.blur_pool(line, padding_mode="replicate"), rtol=1e-6)
    assert pk.blur_pool(np.ones((1, 1, 5, 6, 7)), (1, 2, 3)).shape == (1, 1, 5, 3, 3)


def test_blur_pool_gradient_by_finite_differences():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 2, 6, 5))
    y, pullback = pk.vjp(pk.blur_pool, x, 2, 4, "reflect")
    dy = rng.standard_normal(y.shape)
    numeric = finite_difference_grad(lambda v: pk.blur_pool(v, 2, 4, "reflect"), x, dy)
    np.testing.assert_allclose(pullback(dy), numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 2), (2, 3)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_antialiased_max_pool_matches_torch(kernel, stride, backend):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 11, 9))
    xt = torch.from_numpy(x).requires_grad_(True)
    expected = torch_blur(F.max_pool2d(xt, kernel, 1), stride, 3, "reflect")
    dy = rng.standard_normal(tuple(expected.shape))
    expected.backward(torch.from_numpy(dy))
    y, pullback = pk.vjp(pk.antialiased_max_pool, x, kernel, stride, backend=backend)
    np.testing.assert_allclose(y, expected.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(pullback(dy), xt.grad.numpy(), rtol=1e-12, atol=1e-13)


def test_antialiased_max_pool_is_steadier_under_shifts_than_max_pool():
    x = np.zeros((1, 1, 32))
    x[0, 0, 11] = 1.0  # a shift by one moves max_pool's output from window 5 to window 6
    shifted = np.roll(x, 1, axis=-1)
    max_change = np.abs(pk.max_pool(x, 2) - pk.max_pool(shifted, 2)).sum()
    blur_change = np.abs(pk.antialiased_max_pool(x, 2) - pk.antialiased_max_pool(shifted, 2)).sum()
    assert (max_change, blur_change) == (2.0, 1.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"filter_size": 0}, r"filter_size=0 is not available; use a binomial filter of 1 to 7 taps"),
    ({"filter_size": 8}, r"filter_size=8 is not available"),
    ({"padding_mode": "circular"}, r"padding_mode='circular' is not an option; use 'reflect' or 'replicate' or"),
    ({"stride": 0}, r"stride=0 must be positive"),
])  # fmt: skip
def test_blur_pool_errors(kwargs, match):
    with pytest.raises(pk.PoolingConfigError, match=match):
        pk.blur_pool(np.ones((1, 1, 8, 8)), **kwargs)


def test_blur_pool_refuses_a_missing_stride_and_an_empty_axis():
    with pytest.raises(pk.PoolingTypeError, match=r"stride=None must be an integer"):
        pk.blur_pool(np.ones((1, 1, 8, 8)), stride=None)
    with pytest.raises(
        pk.PoolingConfigError, match=r"blur_pool needs at least one cell along every spatial axis; spatial axis 0 has 0"
    ):
        pk.blur_pool(np.ones((1, 1, 0, 8)), padding_mode="zeros")


def test_reflect_padding_needs_an_axis_longer_than_the_padding():
    with pytest.raises(
        pk.PoolingConfigError,
        match=r"padding_mode='reflect' needs spatial axis 1 longer than its padding of 3 \(filter_size=7\); it has 3",
    ):
        pk.blur_pool(np.ones((1, 1, 8, 3)), filter_size=7)
    assert pk.blur_pool(np.ones((1, 1, 8, 3)), filter_size=7, padding_mode="replicate").shape == (1, 1, 4, 2)

"""Max unpooling against PyTorch's max_unpool1d/2d/3d: values, output sizes, their validation, gradients."""

from __future__ import annotations

import numpy as np
import pytest
from gradients import finite_difference_grad
from hypothesis import given, settings
from hypothesis import strategies as st

import poolkit as pk

torch = pytest.importorskip("torch")
F = torch.nn.functional

TORCH_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
TORCH_UNPOOL = {1: F.max_unpool1d, 2: F.max_unpool2d, 3: F.max_unpool3d}
PK_UNPOOL = {1: pk.max_unpool1d, 2: pk.max_unpool2d, 3: pk.max_unpool3d}


@st.composite
def unpool_cases(draw):
    """A max pool made by PyTorch (values and indices), and its arguments."""
    rank = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    spatial = tuple(draw(st.integers(k, k + 5)) for k in kernel)
    ceil_mode = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    x = np.random.default_rng(seed).standard_normal((2, 3, *spatial))
    y, idx = TORCH_POOL[rank](torch.from_numpy(x), kernel, stride, padding, ceil_mode=ceil_mode, return_indices=True)
    return rank, x.shape, y.numpy(), idx.numpy(), dict(kernel_size=kernel, stride=stride, padding=padding)


@settings(max_examples=60, deadline=None)
@given(case=unpool_cases(), explicit_size=st.booleans(), channels_last=st.booleans())
def test_matches_torch(case, explicit_size, channels_last):
    rank, in_shape, y, idx, args = case
    size = list(in_shape[2:]) if explicit_size else None
    try:
        expected = TORCH_UNPOOL[rank](torch.from_numpy(y), torch.from_numpy(idx), output_size=size, **args).numpy()
    except (ValueError, RuntimeError) as err:  # PyTorch refuses: the default size is too small for an index
        with pytest.raises(pk.PoolingConfigError):
            pk.max_unpool(y, idx, output_size=size, **args)
        assert "invalid max index" in str(err) or "output_size" in str(err)
        return
    if expected.size == 0:  # PyTorch drops every value into an output without cells; poolkit refuses
        with pytest.raises(pk.PoolingConfigError, match="every size must be >= 1"):
            pk.max_unpool(y, idx, output_size=size, **args)
        return
    got = pk.max_unpool(y, idx, output_size=size, **args)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(PK_UNPOOL[rank](y, idx, output_size=size, **args), expected)
    if channels_last:
        y_last, idx_last = np.moveaxis(y, 1, -1), np.moveaxis(idx, 1, -1)
        got_last = pk.max_unpool(y_last, idx_last, output_size=size, channels_last=True, **args)
        np.testing.assert_array_equal(got_last, np.moveaxis(expected, 1, -1))


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_gradient_matches_torch_and_finite_differences(rank):
    rng = np.random.default_rng(rank)
    x = rng.standard_normal((2, 2, *(5,) * rank))
    y, idx = pk.max_pool(x, 2, return_indices=True, backend="numpy")  # kernel = stride: every index is distinct
    out, pullback = pk.vjp(PK_UNPOOL[rank], y, idx, 2, output_size=x.shape)
    dy = rng.standard_normal(out.shape)
    y_t = torch.from_numpy(y).requires_grad_()
    TORCH_UNPOOL[rank](y_t, torch.from_numpy(idx), 2, output_size=list(x.shape[2:])).backward(torch.from_numpy(dy))
    np.testing.assert_array_equal(pullback(dy), y_t.grad.numpy())
    numeric = finite_difference_grad(lambda v: pk.max_unpool(v, idx, 2, output_size=x.shape), y, dy)
    np.testing.assert_allclose(pullback(dy), numeric, atol=1e-8)


def test_shared_index_keeps_the_last_value_and_only_it_gets_the_gradient():
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    idx = np.array([[[1, 1, 2, 3]]])
    y, pullback = pk.vjp(pk.max_unpool1d, x, idx, 2, 1)
    expected = F.max_unpool1d(torch.from_numpy(x), torch.from_numpy(idx), 2, 1).numpy()
    np.testing.assert_array_equal(y, expected)  # [0, 2, 3, 4, 0]: the later value stays, as in PyTorch
    dy = np.array([[[10.0, 20.0, 30.0, 40.0, 50.0]]])
    numeric = finite_difference_grad(lambda v: pk.max_unpool1d(v, idx, 2, 1), x, dy)
    np.testing.assert_allclose(pullback(dy), numeric, atol=1e-8)
    np.testing.assert_array_equal(pullback(dy), [[[0.0, 20.0, 30.0, 40.0]]])  # PyTorch gives 20 to both


def test_channels_last_gradient_and_unbatched_input():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 6))  # unbatched (C, H, W)
    y, idx = pk.max_pool2d(x, 2, return_indices=True, backend="numpy")
    out, pullback = pk.vjp(pk.max_unpool2d, y, idx, 2)
    assert out.shape == (3, 4, 6)
    dy = rng.standard_normal(out.shape)
    np.testing.assert_array_equal(
        pullback(dy), np.take_along_axis(dy.reshape(3, -1), idx.reshape(3, -1), 1).reshape(y.shape)
    )
    y_last, idx_last = np.moveaxis(y, 0, -1)[None], np.moveaxis(idx, 0, -1)[None]
    out_last, pullback_last = pk.vjp(pk.max_unpool, y_last, idx_last, 2, channels_last=True)
    np.testing.assert_array_equal(out_last[0], np.moveaxis(out, 0, -1))
    np.testing.assert_array_equal(pullback_last(np.moveaxis(dy, 0, -1)[None])[0], np.moveaxis(pullback(dy), 0, -1))


@pytest.mark.parametrize("offset", range(-3, 4))
def test_output_size_range_is_pytorchs(offset):
    x = np.arange(8.0).reshape(1, 2, 4)
    idx = np.array([[[0, 3, 6, 9]] * 2]).reshape(1, 2, 4)
    size = [(4 - 1) * 3 + 3 + offset]  # default 12, stride 3: PyTorch takes 10..14
    try:
        expected = F.max_unpool1d(torch.from_numpy(x), torch.from_numpy(idx), 3, output_size=size).numpy()
    except ValueError:
        with pytest.raises(pk.PoolingConfigError, match=r"spatial axis 0 must be between 10 and 14"):
            pk.max_unpool(x, idx, 3, output_size=size)
    else:
        np.testing.assert_array_equal(pk.max_unpool(x, idx, 3, output_size=size), expected)
        np.testing.assert_array_equal(pk.max_unpool(x, idx, 3, output_size=(1, 2, *size)), expected)


def test_integer_values_keep_their_dtype_and_unsigned_indices_work():
    y = np.array([[[3, 7]]], dtype=np.int16)
    out, pullback = pk.vjp(pk.max_unpool, y, np.array([[[1, 2]]], dtype=np.uint64), 2)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, [[[0, 3, 7, 0]]])
    assert pullback(np.ones((1, 1, 4))).dtype == np.float64


ERRORS = [
    (dict(indices=np.array([[[0.0, 2.0]]])), pk.PoolingTypeError, r"needs integer indices .* got dtype float64"),
    (dict(indices=np.array([[[0, 2]]], dtype=bool)), pk.PoolingTypeError, r"needs integer indices .* got dtype bool"),
    (dict(indices=np.array([[0, 2]])), pk.PoolingConfigError, r"indices of shape \(1, 2\) for x of shape \(1, 1, 2\)"),
    (dict(indices=np.array([[[0, 4]]])), pk.PoolingConfigError, r"indices\[0, 0, 1\] = 4 is outside the output plane"),
    (dict(indices=np.array([[[-1, 2]]])), pk.PoolingConfigError, r"indices\[0, 0, 0\] = -1 is outside"),
    (dict(output_size=(5, 5)), pk.PoolingConfigError, r"output_size with 1 spatial sizes or the full shape"),
    (dict(output_size=(2, 1, 4)), pk.PoolingConfigError, r"does not match x's batch and channel sizes.*\(1, 1, 4\)"),
    (dict(output_size=(6,)), pk.PoolingConfigError, r"must be between 3 and 5 .* the default is 4"),
    (dict(output_size=4), pk.PoolingTypeError, r"output_size=4 must be a sequence of ints"),
    (dict(padding="same"), pk.PoolingConfigError, r"takes numeric padding, not 'same'"),
    (dict(kernel_size=0), pk.PoolingConfigError, r"kernel_size=0 must be positive"),
    (dict(kernel_size=1, padding=(0, 0)), pk.PoolingConfigError, r"padding=\(0, 0\) has 2 entries"),
]


@pytest.mark.parametrize(("change", "error", "message"), ERRORS)
def test_errors(change, error, message):
    args = dict(x=np.array([[[5.0, 6.0]]]), indices=np.array([[[0, 2]]]), kernel_size=2) | change
    with pytest.raises(error, match=message):
        pk.max_unpool(**args)


def test_empty_batch():
    out, pullback = pk.vjp(pk.max_unpool2d, np.zeros((0, 2, 2, 3)), np.zeros((0, 2, 2, 3), dtype=np.int64), 2)
    assert out.shape == (0, 2, 4, 6)
    assert pullback(out).shape == (0, 2, 2, 3)


def test_an_output_without_cells_is_refused():
    # kernel 2, padding 1: one pooled cell unpools to (1 - 1) * 2 - 2 + 2 = 0 cells by default.
    with pytest.raises(pk.PoolingConfigError, match=r"output of spatial shape \(0,\); every size must be >= 1"):
        pk.max_unpool1d(np.ones((1, 1)), np.zeros((1, 1), dtype=np.int64), 2, padding=1)
    np.testing.assert_array_equal(
        pk.max_unpool1d(np.ones((1, 1)), np.zeros((1, 1), dtype=np.int64), 2, padding=1, output_size=(1,)), [[1.0]]
    )

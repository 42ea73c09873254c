"""Fractional max pooling against PyTorch with the same ``_random_samples``: bit-exact values and indices."""

from __future__ import annotations

import numpy as np
import pytest
from gradients import finite_difference_grad
from hypothesis import given, settings
from hypothesis import strategies as st

import poolkit as pk
from poolkit.ops.fractional import interval_starts

torch = pytest.importorskip("torch")
F = torch.nn.functional
TORCH = {2: F.fractional_max_pool2d, 3: F.fractional_max_pool3d}


def torch_pool(x, kernel, output_size, samples, **kwargs):
    rank = len(kernel)
    y, idx = TORCH[rank](
        torch.from_numpy(x), kernel, output_size=output_size, _random_samples=torch.from_numpy(samples),
        return_indices=True, **kwargs,
    )  # fmt: skip
    return y.numpy(), idx.numpy()


def draw_samples(rng, shape, dtype):
    return np.minimum(rng.random(shape).astype(dtype), np.nextafter(dtype(1), dtype(0)))


@st.composite
def cases(draw):
    rank = draw(st.sampled_from([2, 3]))
    dtype = draw(st.sampled_from([np.float16, np.float32, np.float64]))
    spatial = tuple(draw(st.integers(2, 16 if rank == 2 else 7)) for _ in range(rank))
    kernel = tuple(draw(st.integers(1, min(3, s - 1))) for s in spatial)
    # PyTorch's 3-D check is strict (output + kernel - 1 < L); its 2-D one is not.
    slack = 0 if rank == 2 else 1
    out = tuple(draw(st.integers(1, s - k + 1 - slack)) for s, k in zip(spatial, kernel))
    batch, channels = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal((batch, channels, *spatial)).astype(dtype)
    x[rng.random(x.shape) < 0.2] = 0  # ties
    return x, kernel, out, draw_samples(rng, (batch, channels, rank), dtype)


@settings(max_examples=80, deadline=None)
@given(case=cases(), channels_last=st.booleans())
def test_bit_exact_with_torch(case, channels_last):
    x, kernel, out, samples = case
    expected_y, expected_idx = torch_pool(x, kernel, out, samples)
    y, idx = pk.fractional_max_pool(x, kernel, out, random_samples=samples, return_indices=True)
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(idx, expected_idx)
    assert y.dtype == x.dtype and idx.dtype == np.int64
    if channels_last:
        last = np.moveaxis(x, 1, -1)
        y_last, idx_last = pk.fractional_max_pool(last, kernel, out, None, samples, None, True, channels_last=True)
        np.testing.assert_array_equal(y_last, np.moveaxis(expected_y, 1, -1))
        np.testing.assert_array_equal(idx_last, np.moveaxis(expected_idx, 1, -1))


@pytest.mark.parametrize(
    ("dtype", "size", "kernel", "out", "sample"),
    [
        (np.float32, 1472, 3, 622, 0.5895020365715027),  # float64 arithmetic would place some windows elsewhere
        (np.float16, 166, 3, 76, 0.062347412109375),  # float32 arithmetic would too
    ],
)
def test_interval_arithmetic_is_done_in_the_input_float_type(dtype, size, kernel, out, sample):
    wider = np.float64 if dtype == np.float32 else np.float32
    in_type = interval_starts(np.array([sample], dtype=dtype), size, out, kernel)
    in_wider = interval_starts(np.array([sample], dtype=wider), size, out, kernel)
    assert not np.array_equal(in_type, in_wider)  # the case tells the two apart
    x = np.random.default_rng(0).standard_normal((1, 1, 2, size)).astype(dtype)
    samples = np.array([[[sample, 0.5]]], dtype=dtype)
    expected = torch_pool(x, (1, kernel), (2, out), samples)
    got = pk.fractional_max_pool2d(x, (1, kernel), (2, out), random_samples=samples, return_indices=True)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


@pytest.mark.parametrize("rank", [2, 3])
def test_output_ratio_unbatched_and_nan_match_torch(rank):
    rng = np.random.default_rng(rank)
    x = rng.standard_normal((2, *(9,) * rank))  # unbatched (C, *spatial)
    x[(0,) * (rank + 1)] = x[(1,) + (1,) * rank] = x[(1,) + (2,) * rank] = np.nan
    samples = draw_samples(rng, (1, 2, rank), np.float64)
    fixed = pk.fractional_max_pool2d if rank == 2 else pk.fractional_max_pool3d
    y, idx = fixed(x, 2, output_ratio=0.7, random_samples=samples, return_indices=True)
    expected_y, expected_idx = TORCH[rank](
        torch.from_numpy(x),
        2,
        output_ratio=(0.7,) * rank,
        _random_samples=torch.from_numpy(samples),
        return_indices=True,
    )
    np.testing.assert_array_equal(y, expected_y.numpy())  # NaN where PyTorch has NaN
    np.testing.assert_array_equal(idx, expected_idx.numpy())  # the last NaN of a window gets the index
    assert y.shape == (2, *(6,) * rank)


def test_3d_output_that_ends_at_the_last_cell_is_a_stride_one_max_pool():
    # output + kernel - 1 == L: PyTorch's 3-D check refuses it; every window then steps by 1.
    x = np.random.default_rng(5).standard_normal((1, 2, 5, 6, 4))
    y, idx = pk.fractional_max_pool(x, 2, (4, 5, 3), rng=0, return_indices=True)
    expected_y, expected_idx = pk.max_pool3d(x, 2, stride=1, return_indices=True, backend="numpy")
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(idx, expected_idx)


def test_rng_draws_the_samples_reproducibly():
    x = np.random.default_rng(0).standard_normal((2, 3, 11, 13)).astype(np.float32)
    y = pk.fractional_max_pool(x, 2, output_ratio=(0.5, 0.6), rng=np.random.default_rng(42))
    samples = np.random.default_rng(42).random((2, 3, 2)).astype(np.float32)
    np.testing.assert_array_equal(y, pk.fractional_max_pool(x, 2, (5, 7), random_samples=samples))
    np.testing.assert_array_equal(y, pk.fractional_max_pool(x, 2, (5, 7), rng=42))
    assert not np.array_equal(y, pk.fractional_max_pool(x, 2, (5, 7), rng=43))


def test_empty_batch_and_channels():
    for shape in [(0, 2, 5, 5), (2, 0, 5, 5)]:
        y, pullback = pk.vjp(pk.fractional_max_pool, np.zeros(shape), 2, 3, rng=0)
        assert y.shape == (*shape[:2], 3, 3)
        assert pullback(y).shape == shape


def test_integer_input_keeps_its_dtype_and_uses_float64_windows():
    x = np.random.default_rng(1).integers(-50, 50, (2, 2, 9, 8))
    samples = np.random.default_rng(2).random((2, 2, 2))
    y, idx = pk.fractional_max_pool(x, (2, 3), (5, 4), random_samples=samples, return_indices=True)
    assert y.dtype == x.dtype
    expected_y, expected_idx = torch_pool(x.astype(np.float64), (2, 3), (5, 4), samples)
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(idx, expected_idx)


@pytest.mark.parametrize("rank", [2, 3])
def test_gradient_matches_torch_and_finite_differences(rank):
    rng = np.random.default_rng(rank)
    x = rng.permutation(2 * 2 * 6**rank).reshape(2, 2, *(6,) * rank) / 6**rank  # distinct: no ties
    samples = rng.random((2, 2, rank))
    kernel, out = (2, 3, 2)[:rank], (3, 3, 2)[:rank]
    y, pullback = pk.vjp(pk.fractional_max_pool, x, kernel, out, random_samples=samples)
    dy = rng.standard_normal(y.shape)
    x_t = torch.from_numpy(x).requires_grad_()
    TORCH[rank](x_t, kernel, output_size=out, _random_samples=torch.from_numpy(samples)).backward(torch.from_numpy(dy))
    np.testing.assert_array_equal(pullback(dy), x_t.grad.numpy())
    numeric = finite_difference_grad(lambda v: pk.fractional_max_pool(v, kernel, out, random_samples=samples), x, dy)
    np.testing.assert_allclose(pullback(dy), numeric, atol=1e-8)


def test_vjp_of_drawn_windows_and_fixed_rank_functions():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 7, 7))
    (y, idx), pullback = pk.vjp(pk.fractional_max_pool2d, x, 2, 4, rng=3, return_indices=True)
    dy = rng.standard_normal(y.shape)
    expected = np.zeros((3, 49))
    np.add.at(expected, (np.arange(3)[:, None], idx.reshape(3, -1)), dy.reshape(3, -1))
    np.testing.assert_array_equal(pullback(dy), expected.reshape(x.shape))
    y3, pullback3 = pk.vjp(pk.fractional_max_pool3d, x[None], 2, (2, 3, 3), rng=3)
    assert pullback3(np.ones_like(y3)).shape == (1, 3, 7, 7)


ERRORS = [
    (dict(x=np.zeros((1, 1, 8))), pk.PoolingConfigError, r"pools 2 or 3 spatial axes; x of shape \(1, 1, 8\) has 1"),
    (dict(output_size=None), pk.PoolingConfigError, r"exactly one of output_size and output_ratio"),
    (dict(output_ratio=0.5), pk.PoolingConfigError, r"exactly one of output_size and output_ratio"),
    (dict(output_size=7), pk.PoolingConfigError, r"cannot place 7 windows of kernel_size=2 .* got 8"),
    (dict(output_size=None, output_ratio=1.0), pk.PoolingConfigError, r"must lie strictly between 0 and 1"),
    (dict(output_size=None, output_ratio=-0.5), pk.PoolingConfigError, r"output_ratio=-0.5 is not allowed"),
    (dict(output_size=None, output_ratio=(0.5,)), pk.PoolingConfigError, r"has 1 entries for 2 spatial axes"),
    (dict(output_size=None, output_ratio="half"), pk.PoolingTypeError, r"must be a float or a sequence of 2"),
    (dict(output_size=None, output_ratio=0.1), pk.PoolingConfigError, r"gives int\(7 \* 0.1\) = 0 output cells"),
    (dict(random_samples=np.zeros((1, 2, 2))), pk.PoolingConfigError, r"random_samples of shape \(1, 2, 2\)"),
    (dict(random_samples=np.full((1, 1, 2), 1.0)), pk.PoolingConfigError, r"must lie in \[0, 1\).*\[0, 0, 0\] is"),
    (dict(random_samples=np.full((1, 1, 2), np.nan)), pk.PoolingConfigError, r"must lie in \[0, 1\)"),
    (dict(random_samples=np.zeros((1, 1, 2)), rng=0), pk.PoolingConfigError, r"random_samples or rng, not both"),
    (dict(rng="seed"), pk.PoolingTypeError, r"rng='seed' must be a numpy.random.Generator"),
    (dict(kernel_size=(2, 2, 2)), pk.PoolingConfigError, r"kernel_size=\(2, 2, 2\) has 3 entries"),
]


@pytest.mark.parametrize(("change", "error", "message"), ERRORS)
def test_errors(change, error, message):
    args = dict(x=np.zeros((1, 1, 7, 7)), kernel_size=2, output_size=3) | change
    with pytest.raises(error, match=message):
        pk.fractional_max_pool(**args)


def test_float32_samples_that_round_to_one_are_refused():
    below_one = np.nextafter(1.0, 0.0)  # rounds to 1.0 in float32
    with pytest.raises(pk.PoolingConfigError, match=r"in x's float type \(float32\)"):
        pk.fractional_max_pool(np.zeros((1, 1, 5, 5), np.float32), 2, 3, random_samples=np.full((1, 1, 2), below_one))


def test_windows_that_float16_cannot_place_are_refused():
    x = np.ones((1, 1, 2, 5000), dtype=np.float16)
    samples = np.array([[[np.nextafter(np.float16(1), np.float16(0)), 0]]], dtype=np.float16)
    with pytest.raises(
        pk.PoolingConfigError,
        match=r"cannot place 4995 windows of 2 on spatial axis 1 of size 5000 in float16: .* x.astype\(np.float32\)",
    ):
        pk.fractional_max_pool(x, (1, 2), output_size=(2, 4995), random_samples=samples)

"""Stochastic pooling: sampling frequencies (chi-square), the closed form at inference, gradients."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from gradients import finite_difference_grad
from hypothesis import given, settings
from hypothesis import strategies as st

import poolkit as pk


def brute_force_windows(x, kernel, stride, padding):
    """Every window's real cells of a channels-first array: {(n, c, *out): [(flat index, value), ...]}."""
    spatial = x.shape[2:]
    out = [(size + 2 * pad - k) // s + 1 for size, k, s, pad in zip(spatial, kernel, stride, padding)]
    windows = {}
    for n, c in itertools.product(*map(range, x.shape[:2])):
        for cell in itertools.product(*map(range, out)):
            real = []
            for tap in itertools.product(*map(range, kernel)):
                pos = [o * s - pad + t for o, s, pad, t in zip(cell, stride, padding, tap)]
                if all(0 <= p < size for p, size in zip(pos, spatial)):
                    real.append((int(np.ravel_multi_index(pos, spatial)), float(x[(n, c, *pos)])))
            windows[(n, c, *cell)] = real
    return windows


@st.composite
def cases(draw):
    rank = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    spatial = tuple(draw(st.integers(k, k + 4)) for k in kernel)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = np.maximum(rng.standard_normal((2, 2, *spatial)), 0)  # post-ReLU: zeros and zero-sum windows
    return x, kernel, stride, padding


@settings(max_examples=40, deadline=None)
@given(case=cases(), seed=st.integers(0, 2**16))
def test_inference_closed_form_and_drawn_cells(case, seed):
    x, kernel, stride, padding = case
    windows = brute_force_windows(x, kernel, stride, padding)
    expected = np.zeros([i + 1 for i in next(reversed(windows))])
    for where, real in windows.items():
        total = sum(v for _, v in real)
        expected[where] = sum(v * v for _, v in real) / total if total > 0 else 0.0
    np.testing.assert_allclose(pk.stochastic_pool(x, kernel, stride, padding, training=False), expected, rtol=1e-12)

    y, idx = pk.stochastic_pool(x, kernel, stride, padding, rng=seed, return_indices=True)
    for where, real in windows.items():
        chosen = dict(real)[int(idx[where])]  # a real cell of the window
        assert y[where] == chosen
        assert chosen > 0 or all(v == 0 for _, v in real)  # zero cells are drawn only from zero windows
        if all(v == 0 for _, v in real):
            assert idx[where] == real[0][0]  # the first real cell


# The 99.9 % quantile of the chi-square distribution with 3 degrees of freedom (any statistics table).
CHI2_3_DOF_999 = 16.266


def chi_square(counts, expected):
    return float(np.sum((counts - expected) ** 2 / expected))


def test_sampling_frequencies_pass_a_chi_square_test():
    weights = np.array([0.5, 1.0, 0.0, 2.5, 4.0])
    x = np.broadcast_to(weights, (1, 40_000, 5))  # 40 000 planes, one window each
    _, idx = pk.stochastic_pool(x, 5, rng=np.random.default_rng(2024), return_indices=True)
    counts = np.bincount(idx.ravel(), minlength=5)
    assert counts[2] == 0  # a zero activation is never drawn
    keep = weights > 0  # four cells: 3 degrees of freedom
    assert chi_square(counts[keep], weights[keep] / weights.sum() * idx.size) < CHI2_3_DOF_999
    # The same test rejects a uniform draw: it can fail.
    assert chi_square(counts[keep], np.full(4, idx.size / 4)) > 100 * CHI2_3_DOF_999


def test_draws_are_reproducible_and_do_not_depend_on_the_layout():
    x = np.random.default_rng(0).random((2, 3, 8, 8))
    y, idx = pk.stochastic_pool(x, 2, rng=np.random.default_rng(11), return_indices=True)
    y_last, idx_last = pk.stochastic_pool(np.moveaxis(x, 1, -1), 2, rng=11, return_indices=True, channels_last=True)
    np.testing.assert_array_equal(np.moveaxis(y_last, -1, 1), y)
    np.testing.assert_array_equal(np.moveaxis(idx_last, -1, 1), idx)
    assert not np.array_equal(pk.stochastic_pool(x, 2, rng=12), y)


def test_training_gradient_goes_to_the_drawn_cell():
    rng = np.random.default_rng(1)
    x = np.maximum(rng.standard_normal((2, 3, 7, 6)), 0)
    (y, idx), pullback = pk.vjp(pk.stochastic_pool, x, 3, 2, 1, rng=5, return_indices=True)
    dy = rng.standard_normal(y.shape)
    expected = np.zeros((6, 42))
    np.add.at(expected, (np.arange(6)[:, None], idx.reshape(6, -1)), dy.reshape(6, -1))
    np.testing.assert_array_equal(pullback(dy), expected.reshape(x.shape))
    np.testing.assert_array_equal(y, pk.stochastic_pool(x, 3, 2, 1, rng=5))  # same seed, same draws


@pytest.mark.parametrize("channels_last", [False, True])
def test_inference_gradient_matches_finite_differences(channels_last):
    rng = np.random.default_rng(2)
    x = rng.random((2, 2, 5, 6)) + 0.1  # no zero-sum window: the expectation is smooth there
    if channels_last:
        x = np.moveaxis(x, 1, -1).copy()
    args = dict(kernel_size=(3, 2), stride=(2, 2), padding=(1, 0), training=False, channels_last=channels_last)
    y, pullback = pk.vjp(pk.stochastic_pool, x, **args)
    dy = rng.standard_normal(y.shape)
    numeric = finite_difference_grad(lambda v: pk.stochastic_pool(v, **args), x, dy)
    np.testing.assert_allclose(pullback(dy), numeric, atol=1e-8)


def test_zero_windows_give_zero_and_integer_inputs():
    x = np.array([[[0, 0, 3, 1]]], dtype=np.uint8)
    y, pullback = pk.vjp(pk.stochastic_pool, x, 2, training=False)
    np.testing.assert_array_equal(y, [[[0.0, 2.5]]])
    assert y.dtype == np.float64
    np.testing.assert_allclose(pullback(np.ones((1, 1, 2))), [[[0.0, 0.0, 0.875, -0.125]]])  # (2 a - y) / sum(a)
    y_train, idx = pk.stochastic_pool(x, 2, rng=0, return_indices=True)
    assert y_train.dtype == np.uint8
    assert y_train[0, 0, 0] == 0 and idx[0, 0, 0] == 0


ERRORS = [
    (dict(x=np.array([[[1.0, -0.5, 2.0, -1.0]]])), r"2 other value\(s\), the first -0.5 at index \(0, 0, 1\)"),
    (dict(x=np.array([[[1.0, np.nan, 2.0, 0.0]]])), r"non-negative, finite activations.*the first nan"),
    (dict(x=np.array([[[1.0, np.inf, 2.0, 0.0]]])), r"the first inf at index \(0, 0, 1\).*np.maximum\(x, 0\)"),
    (dict(training=False, return_indices=True), r"return_indices=True needs training=True"),
    (dict(kernel_size=5), r"kernel_size=5 is larger than the padded input"),
]


@pytest.mark.parametrize(("change", "message"), ERRORS)
def test_errors(change, message):
    args = dict(x=np.ones((1, 1, 4)), kernel_size=2) | change
    with pytest.raises(pk.PoolingConfigError, match=message):
        pk.stochastic_pool(**args)


def test_negative_value_is_reported_in_the_users_layout():
    x = np.ones((1, 4, 4, 3))
    x[0, 2, 1, 2] = -1.0
    with pytest.raises(pk.PoolingConfigError, match=r"the first -1.0 at index \(0, 2, 1, 2\)"):
        pk.stochastic_pool(x, 2, channels_last=True)


@pytest.mark.parametrize("rng", ["seed", 1.5, True])
def test_bad_rng_is_a_type_error(rng):
    with pytest.raises(pk.PoolingTypeError, match=r"must be a numpy.random.Generator, an int seed or None"):
        pk.stochastic_pool(np.ones((1, 1, 4)), 2, rng=rng)

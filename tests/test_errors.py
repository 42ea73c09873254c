"""Every error poolkit promises: its type, and a message that quotes the value and says what works."""

from __future__ import annotations

import numpy as np
import pytest

import poolkit as pk
from poolkit import PoolingConfigError, PoolingTypeError

X = np.zeros((1, 2, 6, 6))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(kernel_size=0), PoolingConfigError, r"kernel_size=0 must be positive.*use kernel_size >= 1"),
        (dict(kernel_size=(2, -1)), PoolingConfigError, r"kernel_size=\(2, -1\) must be positive, got -1"),
        (dict(kernel_size=2.5), PoolingTypeError, r"kernel_size=2.5 must be an integer, got float"),
        (dict(kernel_size="3"), PoolingTypeError, r"kernel_size='3' must be an int or a sequence of 2 ints"),
        (dict(kernel_size=True), PoolingTypeError, r"kernel_size=True must be an integer, got bool"),
        (dict(kernel_size=2, stride=0), PoolingConfigError, r"stride=0 must be positive"),
        (dict(kernel_size=2, stride=1.0), PoolingTypeError, r"stride=1.0 must be an integer"),
        (dict(kernel_size=2, dilation=0), PoolingConfigError, r"dilation=0 must be positive"),
        (dict(kernel_size=2, dilation=(1, 1.5)), PoolingTypeError, r"dilation=1.5 must be an integer"),
        (dict(kernel_size=3, padding=-1), PoolingConfigError, r"padding=-1 is negative; use padding >= 0"),
        (
            dict(kernel_size=3, padding="full"),
            PoolingConfigError,
            r"padding='full' is not a padding mode; use one of 'valid', 'same', 'same_lower'",
        ),
        (dict(kernel_size=3, padding=2), PoolingConfigError, r"padding=2 puts 2 cells .* at most 1\).*padding='same'"),
        (dict(kernel_size=3, padding=(2, 0)), PoolingConfigError, r"more than half the kernel"),
        (dict(kernel_size=3, padding=1.0), PoolingTypeError, r"padding=1.0 contains 1.0 \(float\)"),
        (dict(kernel_size=3, padding=True), PoolingTypeError, r"contains a bool.*ceil_mode by keyword"),
        (
            dict(kernel_size=3, padding=(1, 1, 1)),
            PoolingConfigError,
            r"padding=\(1, 1, 1\) has 3 entries, more than the input's 2",
        ),
        (
            dict(kernel_size=3, padding=((0, 1, 1), 0)),
            PoolingConfigError,
            r"must be an int or a \(before, after\) pair",
        ),
        (
            dict(kernel_size=(2, 2, 2)),
            PoolingConfigError,
            r"kernel_size=\(2, 2, 2\) has 3 entries, more than the input's 2 spatial axes",
        ),
        (dict(kernel_size=(2,)), PoolingConfigError, r"has 1 entries, fewer than the input's 2"),
        (
            dict(kernel_size=7),
            PoolingConfigError,
            r"kernel_size=7 is larger than the padded input \(6 after padding 0\+0\) along spatial axis 0",
        ),
        (
            dict(kernel_size=3, dilation=3),
            PoolingConfigError,
            r"kernel_size=3 \(dilated span 7\) is larger than the padded input",
        ),
        (dict(kernel_size=2, ceil_mode=1), PoolingTypeError, r"ceil_mode=1 must be True or False"),
        (dict(kernel_size=2, return_indices="yes"), PoolingTypeError, r"return_indices='yes' must be True or False"),
        (dict(kernel_size=2, channels_last=None), PoolingTypeError, r"channels_last=None must be True or False"),
        (
            dict(kernel_size=2, nan="omit"),
            PoolingConfigError,
            r"nan='omit' is not an option; use 'propagate' or 'ignore'",
        ),
        (
            dict(kernel_size=2, backend="cuda"),
            PoolingConfigError,
            r"backend='cuda' is not available; use one of 'auto'",
        ),
    ],
)
def test_max_pool_argument_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        pk.max_pool2d(X, **kwargs)


def test_padding_only_window():
    x = np.zeros((1, 1, 1, 5))
    with pytest.raises(
        PoolingConfigError,
        match=r"1 window\(s\) along spatial axis 0 read only padding \(window 0 reads positions -1, 1 of an axis of size 1",
    ):
        pk.max_pool2d(x, (2, 1), 1, (1, 0), (2, 1))
    with pytest.raises(PoolingConfigError, match="read only padding"):
        pk.max_pool1d(np.zeros((1, 1)), 2, dilation=3, padding="same")


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.array([["a", "b"]]), r"max_pool2d needs an array of real numbers.*got dtype <U1.*astype"),
        (np.zeros((1, 2, 2), dtype=complex), r"got dtype complex128"),
        (np.array([[[None, 1]]], dtype=object), r"got dtype object"),
    ],
)
def test_non_numeric_input(x, message):
    with pytest.raises(PoolingTypeError, match=message):
        pk.max_pool2d(x, 1)


@pytest.mark.parametrize("shape", [(), (4,), (1, 1, 1, 4, 4)])
def test_wrong_rank_for_fixed_rank_functions(shape):
    expected = rf"max_pool2d takes \(N, C, H, W\) or unbatched \(C, H, W\) input \(4 or 3 axes\); got shape {re_shape(shape)} with {len(shape)}"
    with pytest.raises(PoolingConfigError, match=expected):
        pk.max_pool2d(np.zeros(shape), 1)


def re_shape(shape):
    return str(shape).replace("(", r"\(").replace(")", r"\)")


def test_wrong_rank_channels_last_message():
    with pytest.raises(PoolingConfigError, match=r"\(N, D, H, W, C\) or unbatched \(D, H, W, C\)"):
        pk.avg_pool3d(np.zeros((4, 4)), 1, channels_last=True)


def test_generic_function_needs_a_spatial_axis():
    with pytest.raises(
        PoolingConfigError, match=r"max_pool takes \(N, C, \*spatial\) input .* got shape \(4, 4\).*x\[None, None\]"
    ):
        pk.max_pool(np.zeros((4, 4)), 2)


@pytest.mark.parametrize(
    ("p", "error", "message"),
    [
        (0, PoolingConfigError, r"p=0 is not allowed; use a positive number or float\('inf'\)"),
        (-2.0, PoolingConfigError, r"p=-2.0 is not allowed"),
        (float("nan"), PoolingConfigError, r"p=nan is not allowed"),
        ("2", PoolingTypeError, r"p='2' must be a real number, got str"),
        (True, PoolingTypeError, r"p=True must be a real number"),
    ],
)
def test_lp_power_errors(p, error, message):
    with pytest.raises(error, match=message):
        pk.lp_pool2d(X, p, 2)


def test_lp_and_avg_option_errors():
    with pytest.raises(PoolingTypeError, match=r"mean=1 must be True or False"):
        pk.lp_pool2d(X, 2, 2, mean=1)
    with pytest.raises(PoolingTypeError, match=r"count_include_pad='no' must be True or False"):
        pk.avg_pool2d(X, 2, count_include_pad="no")
    with pytest.raises(PoolingConfigError, match=r"divisor_override=0 would divide by zero"):
        pk.avg_pool2d(X, 2, divisor_override=0)
    with pytest.raises(PoolingTypeError, match=r"divisor_override=2.5 must be an int or None, got float"):
        pk.avg_pool2d(X, 2, divisor_override=2.5)
    with pytest.raises(PoolingTypeError, match=r"padding=True contains a bool"):
        pk.lp_pool2d(X, 2, 2, 2, True)  # torch's positional ceil_mode lands on padding here


def test_errors_are_builtin_subclasses():
    assert issubclass(PoolingConfigError, ValueError) and issubclass(PoolingTypeError, TypeError)
    assert issubclass(PoolingConfigError, pk.PoolkitError)
    with pytest.raises(ValueError):
        pk.avg_pool(X, 9)


def test_zero_dimensional_arrays_are_scalars():
    assert pk.max_pool2d(X, np.array(2), stride=np.array(2), padding=np.array(1)).shape == (1, 2, 4, 4)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: pk.Window.build(5, 2), r"in_shape=5 must be a sequence of ints"),
        (lambda: pk.max_pool2d(X, 2, padding=b"same"), r"padding=b'same' is bytes; pass the mode as a str"),
        (lambda: pk.max_pool([[[1.0, 2.0], [3.0]]], 1), r"max_pool could not read x \(list\) as an array"),
    ],
)
def test_unreadable_arguments(call, message):
    with pytest.raises(PoolingTypeError, match=message):
        call()

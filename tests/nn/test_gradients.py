"""Every poolkit.nn layer's backward pass against central finite differences in float64.

For a layer ``f`` and a random ``dy``, ``backward(dy)`` must be the gradient of
``L = sum(dy * f(x))`` with respect to ``x``, and each parameter's ``grad`` the
gradient of ``L`` with respect to that parameter. Inputs are spaced apart so
that a step of ``H`` never changes which cell a max (or a ReLU) selects.
Layers that draw random numbers get a freshly seeded generator before every
forward call, so the finite differences see the same draws as the backward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from gradients import finite_difference_grad

from poolkit import nn


def spaced(shape: tuple[int, ...], seed: int, low: float = 0.1) -> np.ndarray:
    """Distinct float64 values ``>= low``, at least 0.01 apart, in random order."""
    rng = np.random.default_rng(seed)
    values = low + 0.01 * rng.permutation(int(np.prod(shape))) + rng.uniform(0, 1e-3, int(np.prod(shape)))
    return values.reshape(shape)


def signed(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Distinct values of both signs, none within 0.005 of 0."""
    values = spaced(shape, seed, low=0.0) - 0.005 * np.prod(shape)
    return np.where(np.abs(values) < 0.005, values + 0.01, values)


def check_gradients(layer: nn.Module, x: np.ndarray, reset: Callable[[], None] = lambda: None, rtol=1e-6) -> None:
    """Compare ``layer.backward`` and every parameter gradient with central differences of ``sum(dy * layer(x))``."""
    layer.astype(np.float64).train()
    reset()
    y = layer(x)
    dy = np.random.default_rng(1).standard_normal(y.shape)
    layer.zero_grad()
    dx = layer.backward(dy)

    def run(inputs: np.ndarray) -> np.ndarray:
        reset()
        return layer(inputs)

    def run_with(param: nn.Parameter) -> Callable[[np.ndarray], np.ndarray]:
        def f(value: np.ndarray) -> np.ndarray:
            saved, param.value = param.value, value
            try:
                return run(x)
            finally:
                param.value = saved

        return f

    assert dx.shape == x.shape
    np.testing.assert_allclose(dx, finite_difference_grad(run, x, dy), rtol=rtol, atol=1e-6)
    for name, param in layer.named_parameters():
        numeric = finite_difference_grad(run_with(param), param.value, dy)
        np.testing.assert_allclose(param.grad, numeric, rtol=rtol, atol=1e-6, err_msg=name)


def reseed(layer: nn.Module) -> Callable[[], None]:
    def reset() -> None:
        layer.rng = np.random.default_rng(7)

    return reset


@pytest.mark.parametrize(
    "layer",
    [
        nn.Conv2d(2, 3, 3, rng=0),
        nn.Conv2d(4, 4, (3, 2), stride=(2, 1), padding=(1, 1), dilation=(1, 2), groups=2, rng=0),
        nn.Conv2d(3, 6, 1, groups=3, bias=False, rng=0),
        nn.Conv2d(2, 2, 2, padding="same", rng=0),
    ],
    ids=repr,
)
def test_conv2d(layer):
    check_gradients(layer, signed((2, layer.in_channels, 5, 6), seed=0))


def test_linear():
    check_gradients(nn.Linear(5, 3, rng=0), signed((4, 5), seed=1))


def test_linear_without_bias():
    layer = nn.Linear(5, 3, bias=False, rng=0)
    check_gradients(layer, signed((4, 5), seed=1))
    assert [name for name, _ in layer.named_parameters()] == ["weight"]


def test_relu():
    check_gradients(nn.ReLU(), signed((3, 7), seed=2))


def test_flatten():
    check_gradients(nn.Flatten(), signed((2, 3, 2, 2), seed=3))


def test_dropout():
    layer = nn.Dropout(0.4)
    check_gradients(layer, signed((4, 25), seed=4), reset=reseed(layer))
    reseed(layer)()
    kept = layer(np.ones((4, 25))) != 0
    assert 0 < kept.mean() < 1


def test_sequential():
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1, rng=0), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3, rng=1)
    )
    check_gradients(model, spaced((2, 1, 4, 4), seed=5), rtol=1e-5)


POOLS = {
    "max": (lambda: nn.MaxPool2d(3, stride=2, padding=1), spaced),
    "max_dilated": (lambda: nn.MaxPool2d(2, stride=1, dilation=2, ceil_mode=True), spaced),
    "min": (lambda: nn.MinPool2d(2), spaced),
    "avg": (lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), signed),
    "lp": (lambda: nn.LPPool2d(3, 2), signed),
    "lp_mean": (lambda: nn.LPPool2d(2, 2, stride=1, mean=True), spaced),
    "global_avg": (nn.GlobalAvgPool, signed),
    "global_max": (nn.GlobalMaxPool, spaced),
    "global_lp": (lambda: nn.GlobalLPPool(3), signed),
    "adaptive_avg": (lambda: nn.AdaptiveAvgPool2d((2, 3)), signed),
    "adaptive_max": (lambda: nn.AdaptiveMaxPool2d(3), spaced),
    "gem": (lambda: nn.GeM(2.5), spaced),
    "gem_bins": (lambda: nn.GeM(3.0, output_size=2), spaced),
    "spp": (lambda: nn.SpatialPyramidPool((2, 1)), spaced),
    "spp_avg": (lambda: nn.SpatialPyramidPool((3, 1), op="avg"), signed),
    "spp_concat": (lambda: nn.SPPConcat((3, 5)), spaced),
    "mixed": (lambda: nn.MixedPool2d(2, alpha=0.3), spaced),
    "mixed_per_channel": (lambda: nn.MixedPool2d(2, stride=1, alpha=0.6, channels=2), spaced),
    "blur": (nn.BlurPool2d, signed),
    "blur_zeros": (lambda: nn.BlurPool2d(stride=1, filter_size=4, padding_mode="zeros"), signed),
    "antialiased": (lambda: nn.AntialiasedMaxPool2d(2, 2), spaced),
}  # fmt: skip


@pytest.mark.parametrize("name", list(POOLS))
def test_pooling_layer(name):
    make, inputs = POOLS[name]
    check_gradients(make(), inputs((2, 2, 6, 5), seed=6))


def test_stochastic_pool_training_draws():
    layer = nn.StochasticPool2d(2, rng=0)
    check_gradients(layer, spaced((2, 2, 4, 6), seed=7), reset=reseed(layer))


def test_fractional_max_pool():
    layer = nn.FractionalMaxPool2d(2, output_ratio=0.6, rng=0)
    check_gradients(layer, spaced((2, 2, 7, 7), seed=8), reset=reseed(layer))


def test_learnable_parameters_change_the_output():
    """The learned values reach the op: the gradient checks above would pass for a constant too."""
    x = spaced((1, 2, 4, 4), seed=9)
    gem, mixed = nn.GeM(2.0).astype(np.float64), nn.MixedPool2d(2).astype(np.float64)
    before = gem(x).copy(), mixed(x).copy()
    gem.p.value[...] = 4.0
    mixed.alpha_logit.value[...] = 2.0
    assert not np.allclose(gem(x), before[0])
    assert not np.allclose(mixed(x), before[1])
    assert "alpha=0.8808" in repr(mixed)

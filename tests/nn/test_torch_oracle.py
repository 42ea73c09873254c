"""Conv2d, Linear, the loss and the optimizers against PyTorch (values and gradients, float64)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poolkit import nn

torch = pytest.importorskip("torch", reason="PyTorch is the oracle for Conv2d, the loss and the optimizers")
F = torch.nn.functional


@st.composite
def conv_configs(draw):
    groups = draw(st.integers(1, 3))
    in_channels = groups * draw(st.integers(1, 2))
    out_channels = groups * draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = tuple(draw(st.integers(0, k + 1)) for k in kernel)  # beyond k // 2: windows over padding only
    spatial = tuple(draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), 7)) for k, d, p in zip(kernel, dilation, padding))
    return {
        "shape": (draw(st.integers(1, 2)), in_channels, *spatial),
        "args": (in_channels, out_channels, kernel, stride, padding, dilation, groups),
        "bias": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


def torch_grads(function, *arrays):
    """``function`` on float64 leaf tensors of ``arrays``; returns (output, tensors) for ``backward``."""
    tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    return function(*tensors), tensors


@settings(max_examples=60, deadline=None)
@given(conv_configs())
def test_conv2d_matches_torch(config):
    _, out_channels, _, stride, padding, dilation, groups = config["args"]
    layer = nn.Conv2d(*config["args"], bias=config["bias"], rng=config["seed"], dtype=np.float64)
    if config["bias"]:
        layer.bias.value[...] = np.random.default_rng(1).standard_normal(out_channels)
    x = np.random.default_rng(config["seed"]).standard_normal(config["shape"])
    y = layer(x)
    dy = np.random.default_rng(2).standard_normal(y.shape)
    dx = layer.backward(dy)

    arrays = [x, layer.weight.value] + ([layer.bias.value] if config["bias"] else [])
    expected, tensors = torch_grads(
        lambda t, w, *b: F.conv2d(t, w, b[0] if b else None, stride, padding, dilation, groups), *arrays
    )
    expected.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, tensors[0].grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, tensors[1].grad.numpy(), rtol=1e-10, atol=1e-12)
    if config["bias"]:
        np.testing.assert_allclose(layer.bias.grad, tensors[2].grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("kernel", [2, 3, (2, 3)])
def test_conv2d_same_padding_matches_torch(kernel):
    layer = nn.Conv2d(2, 3, kernel, padding="same", rng=0, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 6))
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(layer.weight.value), torch.zeros(3), padding="same")
    np.testing.assert_allclose(layer(x), expected.numpy(), rtol=1e-10, atol=1e-12)


def test_conv2d_float32_by_default():
    layer = nn.Conv2d(1, 2, 3, rng=0)
    x = np.random.default_rng(0).standard_normal((2, 1, 5, 5)).astype(np.float32)
    y = layer(x)
    assert y.dtype == np.float32 and layer.backward(np.ones_like(y)).dtype == np.float32
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(layer.weight.value))
    np.testing.assert_allclose(y, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_linear_matches_torch():
    layer = nn.Linear(4, 3, rng=0, dtype=np.float64)
    layer.bias.value[...] = [0.5, -1.0, 2.0]
    x = np.random.default_rng(0).standard_normal((5, 4))
    y = layer(x)
    dy = np.random.default_rng(1).standard_normal(y.shape)
    dx = layer.backward(dy)
    expected, (tx, tw, tb) = torch_grads(F.linear, x, layer.weight.value, layer.bias.value)
    expected.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, expected.detach().numpy(), rtol=1e-12)
    for ours, theirs in ((dx, tx), (layer.weight.grad, tw), (layer.bias.grad, tb)):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-12)


def test_cross_entropy_matches_torch():
    logits = np.random.default_rng(0).standard_normal((6, 4)) * 30  # large logits: the stable path matters
    labels = np.array([0, 3, 1, 1, 2, 3])
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn(logits, labels)
    expected, (t,) = torch_grads(lambda z: F.cross_entropy(z, torch.from_numpy(labels)), logits)
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(loss_fn.backward(), t.grad.numpy(), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda p: nn.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
        (
            lambda p: nn.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01),
            lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01),
        ),
        (lambda p: nn.Adam(p, lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
        (
            lambda p: nn.Adam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
            lambda p: torch.optim.Adam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
        ),
    ],
    ids=["sgd", "sgd-momentum-decay", "adam", "adam-options"],
)
def test_optimizer_matches_torch(ours, theirs):
    rng = np.random.default_rng(0)
    start = rng.standard_normal((3, 2))
    grads = rng.standard_normal((5, 3, 2))
    param = nn.Parameter(start.copy())
    tensor = torch.tensor(start, requires_grad=True)
    optimizer, reference = ours([param]), theirs([tensor])
    for grad in grads:
        param.grad[...] = grad
        tensor.grad = torch.from_numpy(grad.copy())
        optimizer.step()
        reference.step()
    np.testing.assert_allclose(param.value, tensor.detach().numpy(), rtol=1e-10, atol=1e-12)

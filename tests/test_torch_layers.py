"""poolkit.torch: values against PyTorch where PyTorch is right, gradients by gradcheck, module behaviour.

Oracles: ``torch.nn.functional`` pooling (on inputs padded explicitly for
SAME, positive inputs for Lp where PyTorch's missing ``|x|`` does not matter),
a brute-force Lp loop for the ceil-mode and negative cases PyTorch gets wrong,
and the NumPy op itself for the family layers. Every layer's gradient is
checked by ``torch.autograd.gradcheck`` (central differences, float64).
"""

from __future__ import annotations

import io

import numpy as np
import pytest

import poolkit as pk
from poolkit import PoolingConfigError, PoolingTypeError

torch = pytest.importorskip("torch", reason="torch==2.13.0 (the [test] extra) runs poolkit.torch")
pkt = pytest.importorskip("poolkit.torch")
F = torch.nn.functional


def _double(*shape, low=-1.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=generator, dtype=torch.float64) * (1 - low) + low).requires_grad_(True)


def _positive(*shape, seed=0):
    return _double(*shape, low=0.1, seed=seed)


# Each layer, an input for it, and the NumPy op call it must equal (x as a NumPy array).
LAYERS = {
    "MaxPool1d same": (
        lambda: pkt.MaxPool1d(3, 2, "same"),
        lambda: _double(2, 3, 9),
        lambda x: pk.max_pool1d(x, 3, 2, "same"),
    ),
    "MaxPool2d same_lower dilated": (
        lambda: pkt.MaxPool2d(2, 1, "same_lower", dilation=2),
        lambda: _double(1, 2, 5, 6),
        lambda x: pk.max_pool2d(x, 2, 1, "same_lower", dilation=2),
    ),
    "MaxPool3d channels_last": (
        lambda: pkt.MaxPool3d(2, channels_last=True),
        lambda: _double(1, 4, 4, 4, 2),
        lambda x: pk.max_pool3d(x, 2, channels_last=True),
    ),
    "MinPool2d": (lambda: pkt.MinPool2d(3, 2, 1), lambda: _double(2, 2, 6, 5), lambda x: pk.min_pool2d(x, 3, 2, 1)),
    "AvgPool2d same": (
        lambda: pkt.AvgPool2d(3, 2, "same", count_include_pad=False),
        lambda: _double(2, 3, 6, 7),
        lambda x: pk.avg_pool2d(x, 3, 2, "same", count_include_pad=False),
    ),
    "AvgPool1d ceil": (
        lambda: pkt.AvgPool1d(3, 2, 1, ceil_mode=True),
        lambda: _double(1, 2, 8),
        lambda x: pk.avg_pool1d(x, 3, 2, 1, ceil_mode=True),
    ),
    "AvgPool3d pairs": (
        lambda: pkt.AvgPool3d(2, padding=((0, 1), (1, 0), 0)),
        lambda: _double(1, 1, 3, 3, 4),
        lambda x: pk.avg_pool3d(x, 2, padding=((0, 1), (1, 0), 0)),
    ),
    "LPPool1d ceil": (
        lambda: pkt.LPPool1d(3, 2, ceil_mode=True),
        lambda: _double(2, 2, 7),
        lambda x: pk.lp_pool1d(x, 3, 2, ceil_mode=True),
    ),
    "LPPool2d mean": (
        lambda: pkt.LPPool2d(2, 2, mean=True),
        lambda: _double(1, 3, 4, 6),
        lambda x: pk.lp_pool2d(x, 2, 2, mean=True),
    ),
    "LPPool3d padded": (
        lambda: pkt.LPPool3d(1.5, 3, 2, padding=1),
        lambda: _double(1, 1, 5, 4, 4),
        lambda x: pk.lp_pool3d(x, 1.5, 3, 2, padding=1),
    ),
    "SpatialPyramidPool": (
        lambda: pkt.SpatialPyramidPool((3, 1), op="avg"),
        lambda: _double(2, 3, 7, 5),
        lambda x: pk.spatial_pyramid_pool(x, (3, 1), "avg"),
    ),
    "StochasticPool2d eval": (
        lambda: pkt.StochasticPool2d(2).eval(),
        lambda: _positive(2, 2, 4, 6),
        lambda x: pk.stochastic_pool(x, 2, training=False),
    ),
    "MixedPool2d": (
        lambda: pkt.MixedPool2d(3, 2, 1, alpha=0.3),
        lambda: _double(2, 2, 5, 5),
        lambda x: pk.mixed_pool(x, 3, 2, 1, alpha=0.3),
    ),
    "GeM": (lambda: pkt.GeM(p=2.5), lambda: _positive(2, 3, 4, 5), lambda x: pk.gem_pool(x, 2.5)),
    "BlurPool2d": (lambda: pkt.BlurPool2d(), lambda: _double(1, 2, 6, 7), lambda x: pk.blur_pool(x)),
    "AntialiasedMaxPool2d": (
        lambda: pkt.AntialiasedMaxPool2d(),
        lambda: _double(1, 2, 6, 6),
        lambda x: pk.antialiased_max_pool(x),
    ),
    "Pool adaptive_max": (
        lambda: pkt.Pool("adaptive_max", (2, 3)),
        lambda: _double(2, 2, 5, 7),
        lambda x: pk.adaptive_max_pool(x, (2, 3)),
    ),
}
ROIS = torch.tensor([[0, 0.0, 0.0, 4.0, 3.0], [1, 1.0, 2.0, 5.0, 5.0]], dtype=torch.float64)


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_layers_equal_the_numpy_op_in_both_dtypes(name, dtype):
    make, data, reference = LAYERS[name]
    layer = make().to(dtype)
    x = data().detach().to(dtype).requires_grad_(True)
    y = layer(x)
    assert y.dtype == dtype
    np.testing.assert_allclose(y.detach().numpy(), reference(x.detach().numpy()), rtol=1e-6, atol=1e-7)
    y.sum().backward()
    assert x.grad.dtype == dtype and x.grad.shape == x.shape


@pytest.mark.parametrize("name", list(LAYERS))
def test_gradcheck_in_float64(name):
    make, data, _ = LAYERS[name]
    layer = make().double()
    learnable = {key: p.detach().clone().requires_grad_(True) for key, p in layer.named_parameters() if p.requires_grad}

    def run(x, *values):
        return torch.func.functional_call(layer, dict(zip(learnable, values)), (x,))

    assert torch.autograd.gradcheck(run, (data(), *learnable.values()))


def test_roi_pool_values_and_gradcheck():
    x = _double(2, 3, 6, 7)
    layer = pkt.RoIPool((2, 2), spatial_scale=1.0)
    y = layer(x, ROIS)
    np.testing.assert_array_equal(y.detach().numpy(), pk.roi_pool(x.detach().numpy(), ROIS.numpy(), (2, 2)))
    assert torch.autograd.gradcheck(lambda x: layer(x, ROIS), (x,))


def test_stochastic_pool_draws_from_torch_generator_and_gradchecks_in_training():
    x = _positive(2, 2, 4, 6)
    layer = pkt.StochasticPool2d(2)
    torch.manual_seed(7)
    first = layer(x)
    torch.manual_seed(7)
    np.testing.assert_array_equal(layer(x).detach().numpy(), first.detach().numpy())
    windows = x.detach().unfold(2, 2, 2).unfold(3, 2, 2).reshape(2, 2, 2, 3, 4)
    assert bool(((windows == first.detach()[..., None]).sum(-1) == 1).all())  # each output is one of its cells

    def seeded(x):
        torch.manual_seed(3)
        return layer(x)

    assert torch.autograd.gradcheck(seeded, (x,))
    assert not torch.equal(layer.eval()(x), first)


@pytest.mark.parametrize("padding", ["same", "same_lower"])
def test_same_max_and_avg_against_explicitly_padded_torch(padding):
    x = _double(2, 3, 7, 6)
    window = pk.Window.build((7, 6), 4, 3, padding)
    (top, bottom), (left, right) = window.padding
    if padding == "same":
        assert (bottom, right) == (top + 1, left + 1)  # asymmetric: the odd cell at the end
    padded = (left, right, top, bottom)
    expected_max = F.max_pool2d(F.pad(x, padded, value=-float("inf")), 4, 3)
    torch.testing.assert_close(pkt.MaxPool2d(4, 3, padding)(x), expected_max)
    expected_avg = F.avg_pool2d(F.pad(x, padded), 4, 3)
    torch.testing.assert_close(pkt.AvgPool2d(4, 3, padding)(x), expected_avg)


def test_lp_pool_agrees_with_torch_where_torch_is_right_and_with_a_loop_where_it_is_not():
    positive = _positive(2, 3, 6, 6)
    torch.testing.assert_close(pkt.LPPool2d(3, 2)(positive), torch.nn.LPPool2d(3, 2)(positive))
    x = torch.tensor([[[-3.0, 4.0, -2.0, 1.0, 5.0]]], dtype=torch.float64)
    windows = [x[0, 0, 0:2], x[0, 0, 2:4], x[0, 0, 4:5]]  # ceil mode keeps the partial window [5]
    expected = torch.stack([w.abs().pow(3).sum().pow(1 / 3) for w in windows]).reshape(1, 1, 3)
    torch.testing.assert_close(pkt.LPPool1d(3, 2, ceil_mode=True)(x), expected)
    assert not torch.allclose(torch.nn.LPPool1d(3, 2, ceil_mode=True)(x), expected, equal_nan=True)


def test_deterministic_layers_ignore_train_and_eval():
    for name, (make, data, _) in LAYERS.items():
        if name.startswith("StochasticPool2d"):  # the one layer that samples in training
            continue
        layer, x = make(), data()
        torch.testing.assert_close(layer.train()(x), layer.eval()(x), msg=name)


@pytest.mark.parametrize(
    ("make", "names"),
    [(lambda: pkt.GeM(p=2.0), ["p"]), (lambda: pkt.MixedPool2d(2, channels=3, alpha=0.2), ["alpha"])],
)
def test_state_dict_save_and_load(make, names, tmp_path):
    layer = make()
    assert list(layer.state_dict()) == names
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.add_(0.1)
    x = _positive(2, 3, 4, 4)
    expected = layer(x)
    fresh = make()
    fresh.load_state_dict(torch.load(_saved(layer.state_dict()), weights_only=True))
    torch.testing.assert_close(fresh(x), expected)
    torch.save(layer, tmp_path / "layer.pt")
    loaded = torch.load(tmp_path / "layer.pt", weights_only=False)
    assert type(loaded) is type(layer) and repr(loaded) == repr(layer)
    torch.testing.assert_close(loaded(x), expected)


def _saved(obj) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


def test_a_two_layer_cnn_with_poolkit_layers_learns():
    torch.manual_seed(0)
    # Class 1 images have a bright 3x3 blob in the left half, class 0 in the right half.
    images = torch.rand(64, 1, 12, 12) * 0.3
    labels = torch.randint(0, 2, (64,))
    for image, label in zip(images, labels):
        row = int(torch.randint(0, 9, ()))
        column = int(torch.randint(0, 3, ())) + (0 if label else 6)
        image[0, row : row + 3, column : column + 3] += 1.0
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        pkt.MixedPool2d(2, channels=8),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.ReLU(),
        pkt.MaxPool2d(3, 2, "same"),
        pkt.SpatialPyramidPool((2, 1)),
        torch.nn.Linear(8 * 5, 2),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    alpha = model[2].alpha.detach().clone()
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert not torch.equal(model[2].alpha.detach(), alpha)


def test_learnable_tensor_through_the_generic_pool_gets_its_gradient():
    x = _positive(1, 2, 3, 3)
    p = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    y = pkt.pool(x, "gem", p=p)
    _, pullback = pk.vjp(pk.gem_pool, x.detach().numpy(), p=3.0)
    y.sum().backward()
    np.testing.assert_allclose(float(p.grad), float(pullback(np.ones(y.shape))[1]), rtol=1e-12)


def test_forward_and_backward_share_memory_with_numpy(monkeypatch):
    seen = {}

    def spy(op, x, *args, **params):
        y, pullback = pk.vjp(op, x, *args, **params)
        seen["x"], seen["y"] = x, y

        def spied(dy):
            seen["dy"] = dy
            seen["dx"] = pullback(dy)
            return seen["dx"]

        return y, spied

    monkeypatch.setattr(pkt, "vjp", spy)
    x = torch.rand(2, 3, 4, 4, requires_grad=True)
    y = pkt.AvgPool2d(2)(x)
    dy = torch.rand(y.shape)
    y.backward(dy)
    assert seen["x"].ctypes.data == x.data_ptr()
    assert seen["y"].ctypes.data == y.data_ptr()
    assert seen["dy"].ctypes.data == dy.data_ptr()
    assert seen["dx"].ctypes.data == x.grad.data_ptr()


def test_integer_tensors_pool_without_gradients():
    x = torch.arange(16, dtype=torch.int32).reshape(1, 1, 4, 4)
    y = pkt.MaxPool2d(2)(x)
    assert y.dtype == torch.int32 and y.tolist() == [[[[5, 7], [13, 15]]]]


def test_backward_refuses_an_input_changed_in_place():
    x = torch.rand(1, 1, 4, 4, requires_grad=True)
    inner = x * 1
    y = pkt.MaxPool2d(2)(inner)
    inner.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: pkt.pool(torch.zeros(1, 1, 4), "median", 2),
            PoolingConfigError,
            r"op='median' names no poolkit op; use 'max', 'avg', 'lp', 'min'",
        ),
        (lambda: pkt.Pool(42), PoolingConfigError, r"op=42 names no poolkit op"),
        (
            lambda: pkt.StochasticPool2d(2)(torch.ones(1, 4, 4)),
            PoolingConfigError,
            r"StochasticPool2d takes \(N, C, H, W\) input \(4 axes\); got shape \(1, 4, 4\)",
        ),
        (
            lambda: pkt.MaxPool2d(2)(torch.zeros(1, 1, 4, 4, device="meta")),
            PoolingTypeError,
            r"max_pool2d got x \(Tensor\) on PyTorch's 'meta' device",
        ),
        (
            lambda: pkt.MaxPool2d(2)(torch.zeros(1, 1, 4, 4, dtype=torch.bfloat16)),
            PoolingTypeError,
            r"max_pool2d could not read x \(Tensor\) as an array",
        ),
        (lambda: pkt.MaxPool2d(2, padding=2)(torch.zeros(1, 1, 4, 4)), PoolingConfigError, r"padding=2 puts 2 cells"),
    ],
)
def test_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()

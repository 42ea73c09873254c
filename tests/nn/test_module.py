"""Module plumbing: parameters, modes, state save/load, and the errors that name a layer."""

from __future__ import annotations

import re

import numpy as np
import pytest

import poolkit as pk
from poolkit import nn


def small_cnn(seed: int = 0) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, rng=seed),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1, rng=seed + 1),
        nn.ReLU(),
        nn.GeM(3.0),
        nn.Flatten(),
        nn.Dropout(0.2, rng=seed),
        nn.Linear(6, 10, rng=seed + 2),
    )


def test_parameters_are_named_in_order_and_counted():
    model = small_cnn()
    names = [name for name, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "3.weight", "3.bias", "5.p", "8.weight", "8.bias"]
    assert model.num_parameters() == 4 * 9 + 4 + 6 * 4 * 9 + 6 + 1 + 6 * 10 + 10


def test_same_seed_same_network():
    first, second, other = small_cnn(0), small_cnn(0), small_cnn(5)
    for (name, a), (_, b), (_, c) in zip(first.named_parameters(), second.named_parameters(), other.named_parameters()):
        np.testing.assert_array_equal(a.value, b.value)
        if name.endswith("weight"):
            assert not np.array_equal(a.value, c.value)


def test_he_initialisation_scale():
    conv = nn.Conv2d(16, 64, 3, rng=0)
    assert conv.weight.value.std() == pytest.approx(np.sqrt(2 / (16 * 9)), rel=0.05)
    assert np.all(conv.bias.value == 0)


def test_state_round_trip_through_npz(tmp_path):
    model, x = small_cnn(0), np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    model.eval()
    expected = model(x)
    path = tmp_path / "weights.npz"
    model.save(path)
    restored = small_cnn(seed=9).eval()
    assert not np.allclose(restored(x), expected)
    restored.load(path)
    np.testing.assert_array_equal(restored(x), expected)
    for (name, a), (_, b) in zip(model.named_parameters(), restored.named_parameters()):
        np.testing.assert_array_equal(a.value, b.value, err_msg=name)
        assert a.value.dtype == b.value.dtype


def test_state_dict_is_a_copy():
    model = small_cnn()
    state = model.state_dict()
    state["0.weight"][...] = 0
    assert np.any(model[0].weight.value != 0)


def test_load_state_dict_refuses_other_models():
    model = small_cnn()
    state = model.state_dict()
    del state["5.p"]
    state["9.weight"] = np.zeros(1)
    with pytest.raises(nn.ShapeMismatchError, match=re.escape("missing ['5.p'], unexpected ['9.weight']")):
        model.load_state_dict(state)
    state = small_cnn().state_dict()
    state["8.weight"] = np.zeros((10, 7))
    message = "'8.weight' has shape (10, 7); the model's parameter has (10, 6)"
    with pytest.raises(nn.ShapeMismatchError, match=re.escape(message)):
        model.load_state_dict(state)


def test_shape_mismatch_names_layer_and_both_shapes():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, rng=0), nn.ReLU(), nn.Flatten(), nn.Linear(36, 10, rng=0))
    message = "layer '0' Conv2d(1, 4, kernel_size=(3, 3)) expects input of shape (N, 1, H, W), got (2, 3, 5, 5)"
    with pytest.raises(nn.ShapeMismatchError, match=re.escape(message)):
        model(np.zeros((2, 3, 5, 5)))
    with pytest.raises(
        nn.ShapeMismatchError, match=re.escape("layer '3' Linear(36, 10) expects input of shape (N, 36), got (2, 256)")
    ):
        model(np.zeros((2, 1, 10, 10)))


def test_input_smaller_than_the_dilated_kernel():
    conv = nn.Conv2d(1, 1, 3, dilation=2, padding=1)
    message = "needs input of at least 3 cells along each spatial axis for its 5-cell dilated kernel (padding 1+1)"
    with pytest.raises(nn.ShapeMismatchError, match=re.escape(message)):
        conv(np.zeros((1, 1, 2, 4)))


def test_nested_paths_and_pooling_errors_name_the_layer():
    inner = nn.Sequential(nn.MaxPool2d(3))
    model = nn.Sequential(nn.ReLU(), inner)
    with pytest.raises(nn.ShapeMismatchError, match=re.escape("layer '1.0' MaxPool2d(kernel_size=3")):
        model(np.zeros((2, 4, 4)))
    # An op's own error keeps its type and gains the layer's name.
    with pytest.raises(pk.PoolingConfigError, match=r"^layer '1\.0' MaxPool2d\(kernel_size=3.*\): .*kernel_size=3"):
        model(np.zeros((1, 1, 2, 2)))


def test_backward_shape_is_checked():
    layer = nn.Linear(3, 2, rng=0)
    layer(np.zeros((4, 3), dtype=np.float32))
    message = "Linear(3, 2) backward got dy of shape (4, 3); it must have the shape of the last forward output, (4, 2)"
    with pytest.raises(nn.ShapeMismatchError, match=re.escape(message)):
        layer.backward(np.zeros((4, 3)))


def test_backward_needs_a_training_forward():
    pool = nn.MaxPool2d(2).eval()
    pool(np.ones((1, 1, 2, 2)))
    with pytest.raises(RuntimeError, match="without a forward pass in training mode"):
        pool.backward(np.ones((1, 1, 1, 1)))


def test_train_and_eval_modes_reach_every_layer():
    model = small_cnn()
    model.eval()
    assert not any(layer.training for layer in model)
    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    np.testing.assert_array_equal(model(x), model(x))  # dropout off
    model.train()
    assert all(layer.training for layer in model)
    assert not np.array_equal(model(x), model(x))  # dropout on


def test_zero_grad_and_accumulation():
    layer = nn.Linear(2, 1, rng=0)
    x = np.ones((1, 2), dtype=np.float32)
    for _ in range(2):
        layer(x)
        layer.backward(np.ones((1, 1), dtype=np.float32))
    np.testing.assert_array_equal(layer.bias.grad, [2.0])
    layer.zero_grad()
    np.testing.assert_array_equal(layer.bias.grad, [0.0])


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: nn.Conv2d(3, 4, 3, groups=2), "groups=2 must divide in_channels=3 and out_channels=4"),
        (lambda: nn.Conv2d(0, 4, 3), r"in_channels=0 must be a positive int"),
        (lambda: nn.Conv2d(1, 4, 3, padding=-1), r"^Conv2d: padding=-1 must be a non-negative int, 2 of them"),
        (lambda: nn.Conv2d(1, 4, 3, padding=(1, 2, 3)), r"padding=\(1, 2, 3\) must be a non-negative int"),
        (lambda: nn.Conv2d(1, 4, 3, padding="full"), r"padding='full' is not an option"),
        (lambda: nn.Conv2d(1, 4, 3, stride=2, padding="same"), r"padding='same' needs stride 1"),
        (lambda: nn.Linear(3, 2.5), r"out_features=2.5 must be a positive int"),
        (lambda: nn.Dropout(1.0), r"p=1.0 must be a probability in \[0, 1\)"),
        (lambda: nn.MixedPool2d(2, alpha=1.0), "alpha=1.0 must lie strictly between 0 and 1"),
        (lambda: nn.SGD([], lr=-1), r"SGD: lr=-1 must be >= 0"),
        (lambda: nn.Adam([], betas=(0.9, 1.0)), r"Adam: betas\[1\]=1.0 must be in \[0, 1\)"),
    ],
)
def test_bad_configuration(build, message):
    with pytest.raises(pk.PoolingConfigError, match=message):
        build()


def test_sequential_takes_modules_only():
    with pytest.raises(TypeError, match="argument 1 is function"):
        nn.Sequential(nn.ReLU(), lambda x: x)


def test_cross_entropy_checks_its_input():
    loss = nn.CrossEntropyLoss()
    with pytest.raises(nn.ShapeMismatchError, match=re.escape("got logits (3, 4) and labels (2,)")):
        loss(np.zeros((3, 4)), np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match=re.escape("labels must be ints in [0, 4); got dtype int64, range [0, 4]")):
        loss(np.zeros((2, 4)), np.array([0, 4]))


def test_repr_shows_the_structure():
    text = repr(small_cnn())
    assert "(0): Conv2d(1, 4, kernel_size=(3, 3), padding=1)" in text
    assert "(5): GeM(eps=1e-06, output_size=1, p=3)" in text


NO_LAYER = {"roi_pool", "max_unpool"}  # a second input (boxes, indices): no place in a Sequential


def test_every_pooling_op_has_a_layer():
    from poolkit.ops import __all__ as ops

    def stem(name: str) -> str:
        return re.sub(r"[123]d$", "", name)

    layer_ops = {stem(cls.op_name) for cls in vars(nn).values() if isinstance(cls, type) and hasattr(cls, "op_name")}
    assert {stem(op) for op in ops} - layer_ops == NO_LAYER

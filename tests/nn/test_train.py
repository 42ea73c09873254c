"""Training: a CNN learns the digits, runs repeat exactly, a non-finite loss stops training at its step."""

from __future__ import annotations

import re

import numpy as np
import pytest

from poolkit import nn

pytest.importorskip("sklearn", reason="the digits come from scikit-learn")
from poolkit.demo import load_digits


def train_digits(seed: int, epochs: int = 2) -> tuple[nn.Sequential, list[float], float]:
    x_train, y_train, x_test, y_test = load_digits()
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, rng=seed),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.1, rng=seed),
        nn.Linear(8 * 4 * 4, 10, rng=seed + 1),
    )
    optimizer = nn.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn, order = nn.CrossEntropyLoss(), np.random.default_rng(seed)
    step_losses: list[float] = []
    for epoch in range(epochs):
        nn.train_epoch(
            model, loss_fn, optimizer, x_train, y_train, batch_size=32, rng=order, first_step=epoch * 43,
            on_step=lambda step, loss: step_losses.append(loss),
        )  # fmt: skip
    return model, step_losses, nn.accuracy(model, x_test, y_test)


def test_a_small_cnn_learns_the_digits():
    _, losses, accuracy = train_digits(seed=0)
    assert len(losses) == 2 * 43  # 1,347 training images in batches of 32
    assert np.mean(losses[-10:]) < 0.25 * np.mean(losses[:10])
    assert accuracy > 0.85  # chance is 0.10


def test_training_repeats_exactly():
    first, losses_first, _ = train_digits(seed=3, epochs=1)
    second, losses_second, _ = train_digits(seed=3, epochs=1)
    assert losses_first == losses_second
    for (name, a), (_, b) in zip(first.named_parameters(), second.named_parameters()):
        np.testing.assert_array_equal(a.value, b.value, err_msg=name)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_non_finite_loss_names_the_step():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3))
    labels = rng.integers(0, 2, 40)
    x[17] = np.inf
    position = int(np.flatnonzero(np.random.default_rng(5).permutation(40) == 17)[0])
    batch = position // 8
    model = nn.Sequential(nn.Linear(3, 2, rng=0))
    optimizer = nn.SGD(model.parameters(), lr=0.1)
    message = f"the loss is nan at training step {100 + batch} (batch {batch} of this epoch)"
    with pytest.raises(nn.NonFiniteLossError, match=re.escape(message)):
        nn.train_epoch(model, nn.CrossEntropyLoss(), optimizer, x, labels, batch_size=8, rng=5, first_step=100)
    assert all(np.isfinite(p.value).all() for p in model.parameters())  # the bad step changed nothing


def test_non_finite_loss_is_a_floating_point_error():
    assert issubclass(nn.NonFiniteLossError, FloatingPointError)

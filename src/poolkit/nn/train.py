"""Training and evaluation loops: minibatches from a seeded generator, a stop on a non-finite loss."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .loss import CrossEntropyLoss
from .module import Module, NonFiniteLossError

__all__ = ["train_epoch", "predict", "accuracy"]


def train_epoch(
    model: Module,
    loss_fn: CrossEntropyLoss,
    optimizer,
    x: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int = 64,
    rng: np.random.Generator | int | None = None,
    first_step: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> float:
    """One pass over ``(x, labels)`` in shuffled minibatches; returns the mean loss.

    Each step runs forward, the loss, backward and ``optimizer.step()``. Steps
    are numbered from ``first_step`` (pass the running count to number steps
    across epochs); ``on_step(step, loss)`` is called after each.

    Raises
    ------
    NonFiniteLossError
        The loss of a step is NaN or infinite; the message names the step, and
        no update is made from it.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((200, 2)).astype(np.float32)
    >>> labels = (x[:, 0] > x[:, 1]).astype(np.int64)
    >>> model = nn.Sequential(nn.Linear(2, 2, rng=0))
    >>> opt = nn.SGD(model.parameters(), lr=0.5)
    >>> losses = [nn.train_epoch(model, nn.CrossEntropyLoss(), opt, x, labels, rng=1) for _ in range(5)]
    >>> losses[-1] < losses[0], nn.accuracy(model, x, labels) > 0.95
    (True, True)
    """
    rng = np.random.default_rng(rng)
    model.train()
    order = rng.permutation(len(x))
    total = 0.0
    for batch, start in enumerate(range(0, len(x), batch_size)):
        step = first_step + batch
        index = order[start : start + batch_size]
        loss = loss_fn(model(x[index]), labels[index])
        if not math.isfinite(loss):
            raise NonFiniteLossError(
                f"the loss is {loss} at training step {step} (batch {batch} of this epoch); the model has "
                "diverged: lower the learning rate, or check the input for NaN or infinite values"
            )
        optimizer.zero_grad()
        model.backward(loss_fn.backward())
        optimizer.step()
        total += loss * len(index)
        if on_step is not None:
            on_step(step, loss)
    return total / len(x)


def predict(model: Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The model's class predictions (argmax of its outputs) in evaluation mode.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> nn.predict(nn.Sequential(nn.Flatten()), np.array([[0.1, 0.9], [0.8, 0.2]]))
    array([1, 0])
    """
    model.eval()
    return np.concatenate([model(x[i : i + batch_size]).argmax(axis=1) for i in range(0, len(x), batch_size)])


def accuracy(model: Module, x: np.ndarray, labels: np.ndarray, batch_size: int = 256) -> float:
    """The fraction of ``x`` that the model classifies as ``labels``."""
    return float(np.mean(predict(model, x, batch_size) == labels))

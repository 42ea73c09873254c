"""The classification loss: softmax cross-entropy on logits."""

from __future__ import annotations

import numpy as np

from .module import ShapeMismatchError

__all__ = ["CrossEntropyLoss", "log_softmax"]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """``z - logsumexp(z)`` along the last axis, computed stably by subtracting the row maximum first.

    Examples
    --------
    >>> import numpy as np
    >>> log_softmax(np.array([[1000.0, 1000.0]]))      # no overflow
    array([[-0.69314718, -0.69314718]])
    """
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class CrossEntropyLoss:
    """Mean negative log-likelihood of integer class labels under ``softmax(logits)``.

    ``loss = -(1/N) sum_n log_softmax(z_n)[y_n]``; its gradient with respect to
    the logits is ``(softmax(z) - onehot(y)) / N``.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> loss = nn.CrossEntropyLoss()
    >>> round(loss(np.array([[2.0, 0.0], [0.0, 0.0]]), np.array([0, 1])), 4)
    0.41
    >>> loss.backward()
    array([[-0.05960146,  0.05960146],
           [ 0.25      , -0.25      ]])
    """

    def __init__(self) -> None:
        self._probabilities = self._labels = None

    def __call__(self, logits: np.ndarray, labels: np.ndarray) -> float:
        """The mean loss; keeps what :meth:`backward` needs."""
        logits, labels = np.asarray(logits), np.asarray(labels)
        if logits.ndim != 2 or labels.shape != logits.shape[:1]:
            raise ShapeMismatchError(
                f"CrossEntropyLoss takes logits of shape (N, classes) and labels of shape (N,); got logits "
                f"{logits.shape} and labels {labels.shape}"
            )
        if labels.dtype.kind not in "iu" or (labels.size and not 0 <= labels.min() <= labels.max() < logits.shape[1]):
            raise ValueError(
                f"CrossEntropyLoss labels must be ints in [0, {logits.shape[1]}); got dtype {labels.dtype}"
                + (f", range [{labels.min()}, {labels.max()}]" if labels.size else "")
            )
        log_probabilities = log_softmax(logits)
        self._probabilities, self._labels = np.exp(log_probabilities), labels
        return float(-log_probabilities[np.arange(len(labels)), labels].mean())

    def backward(self) -> np.ndarray:
        """The gradient of the last loss with respect to the logits."""
        if self._probabilities is None:
            raise RuntimeError("CrossEntropyLoss.backward called before computing a loss")
        grad = self._probabilities.copy()
        grad[np.arange(len(self._labels)), self._labels] -= 1
        return grad / len(self._labels)

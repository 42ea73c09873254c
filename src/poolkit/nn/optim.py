"""Optimizers that update :class:`~poolkit.nn.Parameter` values in place from their gradients."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..errors import PoolingConfigError
from .module import Parameter

__all__ = ["SGD", "Adam"]


def _check_rate(optimizer: str, name: str, value: float, upper: float | None = None) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise PoolingConfigError(f"{optimizer}: {name}={value!r} must be a real number")
    if not (value >= 0 and (upper is None or value < upper)):
        bound = f"in [0, {upper:g})" if upper is not None else ">= 0"
        raise PoolingConfigError(f"{optimizer}: {name}={value!r} must be {bound}")
    return float(value)


class _Optimizer:
    def __init__(self, params: Iterable[Parameter]) -> None:
        self.params = list(params)
        if not all(isinstance(p, Parameter) for p in self.params):
            raise TypeError(f"{type(self).__name__} takes Parameter objects, e.g. model.parameters()")

    def zero_grad(self) -> None:
        """Set every parameter's gradient to zero."""
        for param in self.params:
            param.grad[...] = 0


class SGD(_Optimizer):
    """Stochastic gradient descent with momentum and L2 weight decay (PyTorch's formulation).

    ``g = grad + weight_decay * w``; ``v = momentum * v + g`` (``v = g`` at the
    first step); ``w -= lr * v``.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> w = nn.Parameter(np.array([1.0]))
    >>> opt = nn.SGD([w], lr=0.1, momentum=0.9)
    >>> for _ in range(2):
    ...     w.grad[:] = 1.0
    ...     opt.step()
    >>> w.value
    array([0.71])
    """

    def __init__(
        self, params: Iterable[Parameter], lr: float, momentum: float = 0.0, weight_decay: float = 0.0
    ) -> None:
        super().__init__(params)
        self.lr = _check_rate("SGD", "lr", lr)
        self.momentum = _check_rate("SGD", "momentum", momentum, upper=1.0)
        self.weight_decay = _check_rate("SGD", "weight_decay", weight_decay)
        self._velocity: list[np.ndarray | None] = [None] * len(self.params)

    def step(self) -> None:
        """Update every parameter once."""
        for i, param in enumerate(self.params):
            grad = param.grad + self.weight_decay * param.value if self.weight_decay else param.grad
            if self.momentum:
                velocity = self._velocity[i]
                self._velocity[i] = grad.copy() if velocity is None else self.momentum * velocity + grad
                grad = self._velocity[i]
            param.value -= (self.lr * grad).astype(param.value.dtype, copy=False)


class Adam(_Optimizer):
    """Adam (Kingma & Ba) with bias correction and optional L2 weight decay.

    ``m = b1 m + (1 - b1) g``; ``v = b2 v + (1 - b2) g**2``;
    ``w -= lr * (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps)``.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> w = nn.Parameter(np.array([1.0, -1.0]))
    >>> opt = nn.Adam([w], lr=0.1)
    >>> w.grad[:] = [3.0, -0.5]
    >>> opt.step()                      # the first step moves every weight by about lr
    >>> w.value
    array([ 0.9, -0.9])
    """

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params)
        self.lr = _check_rate("Adam", "lr", lr)
        self.beta1 = _check_rate("Adam", "betas[0]", betas[0], upper=1.0)
        self.beta2 = _check_rate("Adam", "betas[1]", betas[1], upper=1.0)
        self.eps = _check_rate("Adam", "eps", eps)
        self.weight_decay = _check_rate("Adam", "weight_decay", weight_decay)
        self._m = [np.zeros_like(p.value) for p in self.params]
        self._v = [np.zeros_like(p.value) for p in self.params]
        self._t = 0

    def step(self) -> None:
        """Update every parameter once."""
        self._t += 1
        correction1 = 1 - self.beta1**self._t
        correction2 = 1 - self.beta2**self._t
        for param, m, v in zip(self.params, self._m, self._v):
            grad = param.grad + self.weight_decay * param.value if self.weight_decay else param.grad
            m *= self.beta1
            m += (1 - self.beta1) * grad
            v *= self.beta2
            v += (1 - self.beta2) * grad * grad
            update = self.lr * (m / correction1) / (np.sqrt(v / correction2) + self.eps)
            param.value -= update.astype(param.value.dtype, copy=False)

"""Numerical gradients for the tests: the oracle every pullback is checked against."""

from __future__ import annotations

import numpy as np

H = 1e-6


def finite_difference_grad(f, x: np.ndarray, dy: np.ndarray, h: float = H) -> np.ndarray:
    """Central differences of ``sum(dy * f(x))`` with respect to every entry of ``x``."""
    grad = np.zeros_like(x, dtype=np.float64)
    for i in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[i] += h
        minus[i] -= h
        grad[i] = (np.sum(dy * f(plus)) - np.sum(dy * f(minus))) / (2 * h)
    return grad

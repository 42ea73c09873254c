"""Gradients: one entry point, :func:`vjp`, for every differentiable op.

Each op registers a rule with :func:`defvjp` beside its definition. A rule
takes the op's own arguments and returns the op's result with a pullback that
maps an output gradient ``dy`` to the input gradient ``dx`` (and, for ops with
learnable parameters, their gradients too).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import PoolingConfigError, PoolingTypeError

_RULES: dict[Callable, Callable] = {}


def defvjp(op: Callable, rule: Callable) -> None:
    """Register ``rule(x, *args, **params) -> (y, pullback)`` as the gradient rule of ``op``.

    Every poolkit op registers its rule this way; an op of your own can too.

    Examples
    --------
    >>> import numpy as np, poolkit as pk
    >>> def scaled_max_pool1d(x, kernel_size, scale):
    ...     return scale * pk.max_pool1d(x, kernel_size)
    >>> def rule(x, kernel_size, scale):
    ...     y, pullback = pk.vjp(pk.max_pool1d, x, kernel_size)
    ...     return scale * y, lambda dy: pullback(scale * np.asarray(dy))
    >>> pk.defvjp(scaled_max_pool1d, rule)
    >>> y, pullback = pk.vjp(scaled_max_pool1d, np.array([[1., 4., 2., 3.]]), 2, scale=10.0)
    >>> y
    array([[40., 30.]])
    >>> pullback(np.ones_like(y))
    array([[ 0., 10.,  0., 10.]])
    """
    _RULES[op] = rule


def vjp(op: Callable, x: Any, /, *args: Any, **params: Any) -> tuple[Any, Callable]:
    """Run ``op(x, *args, **params)`` and return its result with a pullback.

    ``pullback(dy)`` returns ``dx``, the gradient of ``sum(dy * y)`` with
    respect to ``x``, in ``x``'s layout; ``dy`` has the shape of ``y`` (the
    pooled values, not the indices, when ``return_indices=True``). Pullbacks
    are deterministic: overlapping windows add their contributions in a fixed
    order.

    Parameters
    ----------
    op : callable
        A poolkit op, such as :func:`poolkit.max_pool2d` or :func:`poolkit.avg_pool`.
    x : array_like
        The input.
    *args, **params
        The op's other arguments, exactly as the op takes them.

    Returns
    -------
    (result, pullback)
        ``result`` is what ``op`` returns.

    Raises
    ------
    PoolingTypeError
        ``op`` has no registered gradient.

    Examples
    --------
    >>> import numpy as np, poolkit as pk
    >>> x = np.array([[[1., 3., 2., 2.]]])
    >>> y, pullback = pk.vjp(pk.max_pool1d, x, 2)
    >>> y
    array([[[3., 2.]]])
    >>> pullback(np.ones_like(y))     # ties go to the first maximum
    array([[[0., 1., 1., 0.]]])
    >>> y, pullback = pk.vjp(pk.avg_pool, x, 2)
    >>> pullback(np.ones_like(y))
    array([[[0.5, 0.5, 0.5, 0.5]]])
    """
    try:
        rule = _RULES[op]
    except (KeyError, TypeError):
        known = ", ".join(sorted(getattr(f, "__name__", repr(f)) for f in _RULES))
        raise PoolingTypeError(
            f"{getattr(op, '__name__', op)!r} has no registered gradient; vjp takes one of: {known}"
        ) from None
    return rule(x, *args, **params)


def checked_pullback(name: str, y: np.ndarray, gradient: Callable[[np.ndarray], Any]) -> Callable:
    """A pullback for op ``name`` that checks ``dy`` against the result ``y``, then returns ``gradient(dy)``.

    Every op's pullback goes through this, so a wrong ``dy`` gets the same
    message everywhere: it must be real-valued and have ``y``'s shape.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit.autodiff import checked_pullback
    >>> pullback = checked_pullback("double", np.zeros(2), lambda dy: 2 * dy)
    >>> pullback([1.0, 3.0])
    array([2., 6.])
    >>> pullback([1.0])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
      ...
    poolkit.errors.PoolingConfigError: double pullback got dy of shape (1,); it must have the shape of ...
    """
    shape = y.shape

    def pullback(dy):
        """The gradient of ``sum(dy * y)`` with respect to the op's input (and learnable parameters)."""
        from .ops._common import as_array  # here, not at the top: poolkit.ops imports this module

        dy = as_array(dy, f"{name} pullback", "dy")
        if dy.shape != shape:
            raise PoolingConfigError(
                f"{name} pullback got dy of shape {dy.shape}; it must have the shape of the pooled output, {shape}"
            )
        return gradient(dy)

    return pullback

"""The exception types poolkit raises.

Every error about a pooling call is one of these, so a caller can catch
poolkit's errors without catching unrelated ones, and tests can match them.
Each subclasses the built-in exception a Python user would expect
(``ValueError`` for a bad value, ``TypeError`` for a bad type).
"""

from __future__ import annotations


class PoolkitError(Exception):
    """Base class of every exception poolkit raises on purpose."""


class PoolingConfigError(PoolkitError, ValueError):
    """A pooling argument has a value that cannot work (size, padding, option).

    Examples
    --------
    >>> import numpy as np, poolkit as pk
    >>> try:
    ...     pk.max_pool2d(np.zeros((1, 4, 4)), 3, padding=2)
    ... except pk.PoolingConfigError as err:
    ...     print("refused")
    refused
    """


class PoolingTypeError(PoolkitError, TypeError):
    """A pooling argument has a type poolkit cannot use (a float kernel, a string array)."""

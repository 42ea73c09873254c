"""Kernel backends behind one interface.

A backend module provides ``forward(x, window, reduction, want_indices)`` and
``backward(dy, x, y, indices, window, reduction)`` on channels-first, batched
arrays (see :mod:`poolkit.kernels.numpy_ref`). :func:`get_backend` picks one.
"""

from __future__ import annotations

from types import ModuleType

from ..errors import PoolingConfigError
from . import numpy_ref

_BACKENDS: dict[str, ModuleType] = {"numpy": numpy_ref}


def get_backend(name: str) -> ModuleType:
    """The kernel module for ``backend=name``; ``"auto"`` picks the fastest available."""
    if name == "auto":
        return numpy_ref
    try:
        return _BACKENDS[name]
    except (KeyError, TypeError):
        choices = ", ".join(repr(b) for b in ("auto", *_BACKENDS))
        raise PoolingConfigError(f"backend={name!r} is not available; use one of {choices}") from None

"""Kernel backends behind one interface.

A backend module provides ``forward(x, window, reduction, want_indices)`` and
``backward(dy, x, y, indices, window, reduction)`` on channels-first, batched
arrays (see :mod:`poolkit.kernels.numpy_ref`). :func:`get_backend` picks one:
``"numba"`` (:mod:`poolkit.kernels.cpu`, imported on first use so that
``import poolkit`` compiles and loads nothing) or ``"numpy"``.
"""

from __future__ import annotations

import functools
import importlib
import os
from types import ModuleType

from ..errors import PoolingConfigError
from . import numpy_ref

BACKENDS = ("auto", "numba", "numpy")
SLIDING_KERNEL = 4  # stride-1, dilation-1 windows of more taps: doubling blocks in the Numba kernels


def is_sliding(axis) -> bool:
    """Whether the Numba kernels pool this :class:`~poolkit.geometry.Axis` at a cost that grows with the log of
    its kernel: stride 1, dilation 1 and more than ``SLIDING_KERNEL`` taps (combines of 1, 2, 4, ... cells).

    Examples
    --------
    >>> from poolkit import Window
    >>> from poolkit.kernels import is_sliding
    >>> [is_sliding(a) for a in Window.build((32, 32), (13, 3), stride=1).axes]
    [True, False]
    """
    return axis.stride == 1 and axis.dilation == 1 and axis.kernel > SLIDING_KERNEL


def get_backend(name: str) -> ModuleType:
    """The kernel module for ``backend=name``.

    ``"auto"`` is the ``POOLKIT_BACKEND`` environment variable (``"numba"``
    or ``"numpy"``) when it is set, else Numba where it imports, else NumPy.

    Examples
    --------
    >>> from poolkit.kernels import get_backend
    >>> get_backend("numpy").__name__
    'poolkit.kernels.numpy_ref'
    """
    if name == "auto" and os.environ.get("POOLKIT_BACKEND"):
        chosen = os.environ["POOLKIT_BACKEND"]
        if chosen not in ("numba", "numpy"):
            raise PoolingConfigError(f"POOLKIT_BACKEND={chosen!r} is not a backend; set it to 'numba' or 'numpy'")
        name = chosen
    if name == "numpy":
        return numpy_ref
    if name in ("auto", "numba"):
        compiled = _compiled()
        if isinstance(compiled, ImportError):
            if name == "numba":
                raise PoolingConfigError(
                    f"backend='numba' needs Numba, which does not import here ({compiled}); "
                    "install numba or use backend='numpy'"
                ) from compiled
            return numpy_ref
        return compiled
    choices = ", ".join(repr(b) for b in BACKENDS)
    raise PoolingConfigError(f"backend={name!r} is not available; use one of {choices}")


@functools.cache
def _compiled() -> ModuleType | ImportError:
    """The Numba backend, imported on the first call, or the error that stopped its import."""
    try:
        return importlib.import_module(".cpu", __name__)
    except ImportError as err:
        return err

"""poolkit: pooling layers for convolutional networks, exact, fast and explained.

>>> import numpy as np, poolkit as pk
>>> pk.max_pool2d(np.arange(16.).reshape(1, 4, 4), 3, 2, 1)
array([[[ 5.,  7.],
        [13., 15.]]])
"""

from .autodiff import defvjp, vjp
from .diagnostics import Report, diagnose
from .errors import PoolingConfigError, PoolingTypeError, PoolkitError
from .geometry import Window
from .ops import *  # noqa: F403
from .ops import __all__ as _ops_all

__version__ = "0.1.0"

_LAZY_MODULES = ("dask", "onnx", "torch", "nn")  # imported on first use: `import poolkit` needs none of them


def __getattr__(name: str):
    """The integrations and ``poolkit.nn`` as attributes (``poolkit.onnx`` ...), imported when first used."""
    if name in _LAZY_MODULES:
        from importlib import import_module

        return import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Window",
    "vjp",
    "defvjp",
    "diagnose",
    "Report",
    "PoolkitError",
    "PoolingConfigError",
    "PoolingTypeError",
    *_ops_all,
]

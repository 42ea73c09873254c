"""poolkit: pooling layers for convolutional networks, exact, fast and explained.

>>> import numpy as np, poolkit as pk
>>> pk.max_pool2d(np.arange(16.).reshape(1, 4, 4), 3, 2, 1)
array([[[ 5.,  7.],
        [13., 15.]]])
"""

from .autodiff import defvjp, vjp
from .errors import PoolingConfigError, PoolingTypeError, PoolkitError
from .geometry import Window
from .ops import *  # noqa: F403
from .ops import __all__ as _ops_all

__version__ = "0.1.0"

__all__ = [
    "Window",
    "vjp",
    "defvjp",
    "PoolkitError",
    "PoolingConfigError",
    "PoolingTypeError",
    *_ops_all,
]

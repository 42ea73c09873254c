"""The public functional API, one module per family of pooling operations."""

from .adaptive import *  # noqa: F403
from .adaptive import __all__ as _adaptive_all
from .blur import *  # noqa: F403
from .blur import __all__ as _blur_all
from .fractional import *  # noqa: F403
from .fractional import __all__ as _fractional_all
from .mixed import *  # noqa: F403
from .mixed import __all__ as _mixed_all
from .pooling import *  # noqa: F403
from .pooling import __all__ as _pooling_all
from .pyramid import *  # noqa: F403
from .pyramid import __all__ as _pyramid_all
from .roi import *  # noqa: F403
from .roi import __all__ as _roi_all
from .stochastic import *  # noqa: F403
from .stochastic import __all__ as _stochastic_all
from .unpool import *  # noqa: F403
from .unpool import __all__ as _unpool_all

__all__ = [
    *_pooling_all, *_adaptive_all, *_pyramid_all, *_mixed_all, *_blur_all, *_roi_all, *_stochastic_all,
    *_unpool_all, *_fractional_all,
]  # fmt: skip

"""The public functional API, one module per family of pooling operations."""

from .pooling import *  # noqa: F403
from .pooling import __all__ as _pooling_all

__all__ = [*_pooling_all]

"""Moving test arrays between channels-first and channels-last."""

from __future__ import annotations

import numpy as np


def to_layout(array: np.ndarray, channels_last: bool) -> np.ndarray:
    """A channels-first array in the requested layout (C-contiguous)."""
    return np.ascontiguousarray(np.moveaxis(array, 1, -1)) if channels_last else array


def from_layout(array: np.ndarray, channels_last: bool) -> np.ndarray:
    """An array of the requested layout viewed channels-first."""
    return np.moveaxis(array, -1, 1) if channels_last else array

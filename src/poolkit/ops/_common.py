"""Input normalisation shared by every op: array conversion, layout, batch axis.

An op calls :func:`as_pool_input` once; it returns a channels-first, batched
view of the input and the :class:`Layout` that maps results (and incoming
gradients) between that view and the user's layout.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from ..errors import PoolingConfigError, PoolingTypeError


@dataclass(frozen=True)
class Layout:
    """How the user's array relates to the kernels' ``(N, C, *spatial)`` view."""

    unbatched: bool
    channels_last: bool

    def to_kernel(self, array: np.ndarray) -> np.ndarray:
        """A view of a user-layout array as ``(N, C, *spatial)``."""
        if self.unbatched:
            array = array[np.newaxis]
        return np.moveaxis(array, -1, 1) if self.channels_last else array

    def to_user(self, array: np.ndarray) -> np.ndarray:
        """A ``(N, C, *spatial)`` kernel result in the user's layout, C-contiguous."""
        if self.channels_last:
            array = np.moveaxis(array, 1, -1)
        if self.unbatched:
            array = array[0]
        return np.ascontiguousarray(array)


def as_pool_input(x, rank: int | None, channels_last: bool, op_name: str) -> tuple[np.ndarray, Layout]:
    """Check and view ``x`` for pooling ``rank`` spatial axes (``None``: all but N and C).

    Raises
    ------
    PoolingTypeError
        ``x`` is not an array of real numbers (bool, int, uint or float).
    PoolingConfigError
        ``x`` has the wrong number of axes for the op.
    """
    check_flag("channels_last", channels_last)
    try:
        array = np.asarray(x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise PoolingTypeError(
            f"{op_name} could not read x ({type(x).__name__}) as an array: {err}. Pass a NumPy array, or a "
            "CPU tensor detached from autograd in a NumPy dtype (e.g. t.detach().float())"
        ) from err
    if array.dtype.kind not in "biuf":
        raise PoolingTypeError(
            f"{op_name} needs an array of real numbers (bool, int, uint or float); got dtype "
            f"{array.dtype}. Convert it first, e.g. x.astype(np.float32)"
        )
    layout_name = "(N, *spatial, C)" if channels_last else "(N, C, *spatial)"
    if rank is None:
        if array.ndim < 3:
            raise PoolingConfigError(
                f"{op_name} takes {layout_name} input with at least one spatial axis; got shape "
                f"{array.shape}. Add the missing batch/channel axes (x[None, None]) or use a "
                "fixed-rank function such as max_pool2d"
            )
        unbatched = False
    else:
        spatial = ", ".join("DHW"[-rank:] if rank <= 3 else [f"S{i}" for i in range(rank)])
        if array.ndim not in (rank + 1, rank + 2):
            batched = f"(N, {spatial}, C)" if channels_last else f"(N, C, {spatial})"
            single = f"({spatial}, C)" if channels_last else f"(C, {spatial})"
            raise PoolingConfigError(
                f"{op_name} takes {batched} or unbatched {single} input ({rank + 2} or {rank + 1} "
                f"axes); got shape {array.shape} with {array.ndim}. Add the missing axes (x[None] adds "
                f"one), or pool another number of spatial axes with the generic N-D function"
            )
        unbatched = array.ndim == rank + 1
    layout = Layout(unbatched=unbatched, channels_last=bool(channels_last))
    return layout.to_kernel(array), layout


def check_flag(name: str, value: object) -> bool:
    """``value`` if it is a bool, else a :class:`PoolingTypeError` naming ``name``."""
    if not isinstance(value, (bool, np.bool_)):
        raise PoolingTypeError(f"{name}={value!r} must be True or False")
    return bool(value)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else a :class:`PoolingConfigError` listing them."""
    if not isinstance(value, str) or value not in choices:
        listed = " or ".join(repr(c) for c in choices)
        raise PoolingConfigError(f"{name}={value!r} is not an option; use {listed}")
    return value


def check_positive_real(name: str, value: object, allow_inf: bool = False) -> float:
    """``value`` as a float if it is a real number > 0 (``inf`` only if allowed)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise PoolingTypeError(f"{name}={value!r} must be a real number, got {type(value).__name__}")
    number = float(value)
    if not number > 0 or (np.isinf(number) and not allow_inf):
        allowed = "a positive number or float('inf')" if allow_inf else "a finite positive number"
        raise PoolingConfigError(f"{name}={value!r} is not allowed; use {allowed}")
    return number

"""Input normalisation shared by every op: array conversion, layout, batch axis.

An op calls :func:`as_pool_input` once; it returns a channels-first, batched
view of the input and the :class:`Layout` that maps results (and incoming
gradients) between that view and the user's layout.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable
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

    ``x`` is read by :func:`as_array`: anything NumPy can view in CPU memory.

    Raises
    ------
    PoolingTypeError
        ``x`` is not an array of real numbers (bool, int, uint or float), or
        it lives in memory the CPU cannot read (see :func:`as_array`).
    PoolingConfigError
        ``x`` has the wrong number of axes for the op.
    """
    check_flag("channels_last", channels_last)
    array = as_array(x, op_name)
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
        if array.ndim not in (rank + 1, rank + 2):
            spatial = ", ".join("DHW"[-rank:] if rank <= 3 else [f"S{i}" for i in range(rank)])
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


# DLPack device types (dlpack.h, DLDeviceType) other than kDLCPU = 1, for error messages.
_DLPACK_DEVICES = {
    2: "cuda", 3: "cuda_host", 4: "opencl", 7: "vulkan", 8: "metal", 9: "vpi", 10: "rocm", 11: "rocm_host",
    12: "ext_dev", 13: "cuda_managed", 14: "oneapi", 15: "webgpu", 16: "hexagon", 17: "maia",
}  # fmt: skip
_DLPACK_CPU = 1


def as_array(x, op_name: str, name: str = "x") -> np.ndarray:
    """``x`` as a NumPy array of real numbers, without a copy wherever NumPy can view it.

    Accepted: NumPy arrays and anything ``np.asarray`` reads (lists, objects
    with ``__array__`` or the array interface, JAX arrays on the CPU), CPU
    PyTorch tensors, and other objects that export ``__dlpack__`` from CPU
    memory. A tensor that requires grad is read through ``x.detach()``, a view
    of the same memory: a NumPy function records no autograd history (use
    :mod:`poolkit.torch` for layers that do).

    Parameters
    ----------
    x : array_like
        The value to read.
    op_name, name : str
        The op and the argument, for error messages.

    Returns
    -------
    numpy.ndarray
        Shares memory with ``x`` where ``x`` is in CPU memory in a NumPy dtype.

    Raises
    ------
    PoolingTypeError
        ``x`` lives on a GPU or another device the CPU cannot read (a PyTorch
        tensor on ``cuda`` or ``meta``, a DLPack device other than the CPU),
        cannot be read as an array, or is not of real numbers (bool, int,
        uint or float).

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit.ops._common import as_array
    >>> x = np.arange(3.0)
    >>> as_array(x, "max_pool") is x
    True
    >>> as_array([[1, 2]], "max_pool")
    array([[1, 2]])
    """
    if isinstance(x, np.ndarray):
        array = x
    else:
        device = _device_name(x)
        if device == "meta":
            raise PoolingTypeError(
                f"{op_name} got {name} ({type(x).__name__}) on PyTorch's 'meta' device, which holds a shape but no "
                "values; pool a tensor that has data"
            )
        if device is not None:
            raise PoolingTypeError(
                f"{op_name} got {name} ({type(x).__name__}) on device {device!r}; poolkit's NumPy functions read "
                f"CPU memory only. Move it to the CPU first ({name}.cpu() in PyTorch, jax.device_get({name}) in "
                "JAX), or use the poolkit.torch layers, which copy a tensor to the CPU and the result back"
            )
        if getattr(x, "requires_grad", False) and callable(getattr(x, "detach", None)):
            x = x.detach()
        try:
            if hasattr(x, "__dlpack__") and not hasattr(x, "__array__"):
                array = np.from_dlpack(x)
            else:
                array = np.asarray(x)
        except (TypeError, ValueError, RuntimeError, BufferError) as err:
            raise PoolingTypeError(
                f"{op_name} could not read {name} ({type(x).__name__}) as an array: {err}. Pass a NumPy array, "
                f"or a CPU tensor in a NumPy dtype (e.g. {name}.float())"
            ) from err
    if array.dtype.kind not in "biuf":
        raise PoolingTypeError(
            f"{op_name} needs an array of real numbers (bool, int, uint or float) for {name}; got dtype "
            f"{array.dtype}. Convert it first, e.g. {name}.astype(np.float32)"
        )
    return array


def _device_name(x) -> str | None:
    """The device holding ``x`` when the CPU cannot read it there, else None."""
    device = getattr(x, "device", None)
    if isinstance(getattr(device, "type", None), str):  # a PyTorch tensor: "cpu", "cuda", "meta", ...
        return None if device.type == "cpu" else str(device)
    dlpack_device = getattr(x, "__dlpack_device__", None)
    if not callable(dlpack_device):
        return None
    try:
        kind, index = dlpack_device()
    except (TypeError, ValueError, RuntimeError, BufferError) as err:
        return f"unknown ({err})"
    if int(kind) == _DLPACK_CPU:
        return None
    return f"{_DLPACK_DEVICES.get(int(kind), f'DLPack device type {int(kind)}')}:{index}"


def check_flag(name: str, value: object, optional: bool = False) -> bool | None:
    """``value`` as a bool (None stays None if ``optional``), else a :class:`PoolingTypeError` naming ``name``."""
    if optional and value is None:
        return None
    if not isinstance(value, (bool, np.bool_)):
        raise PoolingTypeError(f"{name}={value!r} must be " + ("True, False or None" if optional else "True or False"))
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


def binder(signature: inspect.Signature) -> Callable[[tuple, dict], dict]:
    """``signature.bind(*args, **kwargs)`` with the defaults applied, as a dict, without its per-call cost.

    A call that binds plainly (positional arguments in place, keywords known
    and not repeated, none missing) is read directly; any other goes through
    ``signature.bind`` for Python's own error.

    Examples
    --------
    >>> import inspect
    >>> from poolkit.ops._common import binder
    >>> bind = binder(inspect.signature(lambda x, k, stride=None, *, nan="propagate": None))
    >>> bind((1, 2), {"nan": "ignore"})
    {'stride': None, 'nan': 'ignore', 'x': 1, 'k': 2}
    """
    params = signature.parameters
    names = frozenset(params)
    positional = tuple(n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD)
    defaults = {n: p.default for n, p in params.items() if p.default is not p.empty}

    def bind(args: tuple, kwargs: dict) -> dict:
        if (
            len(args) <= len(positional)
            and names.issuperset(kwargs)
            and kwargs.keys().isdisjoint(positional[: len(args)])
        ):
            arguments = {**defaults, **dict(zip(positional, args)), **kwargs}
            if len(arguments) == len(names):
                return arguments
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    return bind

"""Max, average, Lp and min pooling in any number of spatial dimensions.

The generic functions (``max_pool``, ``avg_pool``, ``lp_pool``, ``min_pool``)
take ``(N, C, *spatial)`` input, or ``(N, *spatial, C)`` with
``channels_last=True``, and pool every spatial axis. The fixed-rank functions
(``max_pool1d`` … ``min_pool3d``) take exactly 1, 2 or 3 spatial axes and
also accept unbatched ``(C, *spatial)`` input, as PyTorch's do.

Each op checks its input once (:func:`~poolkit.ops._common.as_pool_input`),
resolves its geometry once (:class:`~poolkit.geometry.Window`), names its
reduction (:mod:`poolkit.reducers`) and calls a kernel backend. Each one is
registered with :func:`poolkit.vjp`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from .. import reducers
from ..autodiff import checked_pullback, defvjp
from ..errors import PoolingConfigError, PoolingTypeError
from ..geometry import IntOrSeq, Padding, Window
from ..kernels import get_backend
from ._common import as_pool_input, binder, check_choice, check_flag, check_positive_real

__all__ = [
    "max_pool", "max_pool1d", "max_pool2d", "max_pool3d",
    "avg_pool", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "lp_pool", "lp_pool1d", "lp_pool2d", "lp_pool3d",
    "min_pool", "min_pool1d", "min_pool2d", "min_pool3d",
]  # fmt: skip


def max_pool(
    x: ArrayLike,
    kernel_size: IntOrSeq,
    stride: IntOrSeq | None = None,
    padding: Padding = 0,
    dilation: IntOrSeq = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
    *,
    channels_last: bool = False,
    nan: str = "propagate",
    backend: str = "auto",
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Max pooling over every spatial axis.

    ``y[n, c, o] = max_j x[n, c, o*s - pad_before + j*d]`` over the taps ``j``
    of the window that land in the real input; padding is never read.

    Parameters
    ----------
    x : array_like
        ``(N, C, *spatial)``, or ``(N, *spatial, C)`` with ``channels_last``.
        Any real dtype; the result keeps it.
    kernel_size : int or sequence of int
        Window size per spatial axis.
    stride : int, sequence of int or None
        Step between windows; ``None`` (default) means ``kernel_size``.
    padding : int, sequence or str
        Ints per axis or ``(before, after)`` pairs, at most ``kernel_size // 2``
        each; or ``"valid"``, ``"same"`` (TF / ONNX SAME_UPPER) or
        ``"same_lower"``. See :meth:`poolkit.Window.build`.
    dilation : int or sequence of int
        Step between the taps of a window.
    ceil_mode : bool
        Round the output size up: a last, partial window is kept if it starts
        inside the input (or the left padding).
    return_indices : bool
        Also return, as int64, the flat index of each maximum within its
        ``(n, c)`` plane of the unpadded input (PyTorch's layout).
    channels_last : bool
        Input and output are ``(N, *spatial, C)``.
    nan : {"propagate", "ignore"}
        ``"propagate"`` (PyTorch): a NaN wins its window, and the index points
        at the last NaN in scan order. ``"ignore"`` (the ONNX reference): NaNs are
        skipped; a window holding only NaNs gives NaN.
    backend : {"auto", "numba", "numpy"}
        The kernel backend: ``"numba"`` (compiled, parallel; the default
        through ``"auto"`` when Numba imports) or ``"numpy"`` (the vectorised
        reference). Both give the same max/min values and indices; sums agree
        within rounding.

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, numpy.ndarray)
        The pooled array, with indices if asked. Output size per axis:
        ``floor((L + pl + pr - d*(k-1) - 1 + (s-1 if ceil_mode else 0)) / s) + 1``.
        Ties go to the first maximum in row-major window order.

    Raises
    ------
    PoolingConfigError
        Bad sizes or padding, a window that reads only padding, a bad option.
    PoolingTypeError
        A non-numeric input or a non-integer size.

    Examples
    --------
    >>> import numpy as np, poolkit as pk
    >>> x = np.arange(16.).reshape(1, 1, 4, 4)
    >>> pk.max_pool(x, 2)
    array([[[[ 5.,  7.],
             [13., 15.]]]])
    >>> y, idx = pk.max_pool(x, 3, stride=2, padding=1, return_indices=True)
    >>> idx[0, 0]
    array([[ 5,  7],
           [13, 15]])
    """
    return _pool(
        "max", x, rank=None, with_pullback=False, kernel_size=kernel_size, stride=stride,
        padding=padding, dilation=dilation, ceil_mode=ceil_mode, return_indices=return_indices,
        channels_last=channels_last, nan=nan, backend=backend,
    )  # fmt: skip


def min_pool(
    x: ArrayLike,
    kernel_size: IntOrSeq,
    stride: IntOrSeq | None = None,
    padding: Padding = 0,
    dilation: IntOrSeq = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
    *,
    channels_last: bool = False,
    nan: str = "propagate",
    backend: str = "auto",
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Min pooling over every spatial axis: :func:`max_pool` with ``min`` in place of ``max``.

    ``y[n, c, o] = min_j x[n, c, o*s - pad_before + j*d]`` over the real
    cells of the window. Parameters, indices, ties (first minimum) and NaN
    rules are those of :func:`max_pool`.

    Examples
    --------
    >>> import numpy as np, poolkit as pk
    >>> pk.min_pool(np.array([[[4., 1., 7., 3., 9., 2.]]]), 3)
    array([[[1., 2.]]])
    """
    return _pool(
        "min", x, rank=None, with_pullback=False, kernel_size=kernel_size, stride=stride,
        padding=padding, dilation=dilation, ceil_mode=ceil_mode, return_indices=return_indices,
        channels_last=channels_last, nan=nan, backend=backend,
    )  # fmt: skip


def avg_pool(
    x: ArrayLike,
    kernel_size: IntOrSeq,
    stride: IntOrSeq | None = None,
    padding: Padding = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    *,
    dilation: IntOrSeq = 1,
    channels_last: bool = False,
    backend: str = "auto",
) -> np.ndarray:
    """Average pooling over every spatial axis.

    ``y = (sum of the window's real cells) / divisor``, where the divisor is
    the number of window cells inside the padded extent
    (``count_include_pad=True``, PyTorch's default: a ceil-mode window that
    runs past the right padding is clipped to it), the number of real cells
    (``count_include_pad=False``), or ``divisor_override``.

    Parameters
    ----------
    x : array_like
        ``(N, C, *spatial)``, or ``(N, *spatial, C)`` with ``channels_last``.
        Float inputs keep their dtype; integers and bools give float64.
    kernel_size, stride, padding, ceil_mode
        As in :func:`max_pool`.
    count_include_pad : bool
        Count padding cells in the divisor.
    divisor_override : int or None
        Divide every window's sum by this instead.
    dilation : int or sequence of int
        Step between taps (PyTorch's avg_pool has none; ONNX's has). Divisors
        count taps, not the span.
    channels_last, backend
        As in :func:`max_pool`.

    Returns
    -------
    numpy.ndarray
        Window sums are added in the input's float type by the Numba kernels
        (float16 in float32, integers in float64) and in float64 by the NumPy
        reference.

    Examples
    --------
    The border rule: with ``count_include_pad=True`` the padding counts in the
    divisor, so edge outputs shrink.

    >>> import numpy as np, poolkit as pk
    >>> x = np.ones((1, 1, 4))
    >>> pk.avg_pool(x, 3, stride=1, padding=1)
    array([[[0.66666667, 1.        , 1.        , 0.66666667]]])
    >>> pk.avg_pool(x, 3, stride=1, padding=1, count_include_pad=False)
    array([[[1., 1., 1., 1.]]])
    """
    return _pool(
        "avg", x, rank=None, with_pullback=False, kernel_size=kernel_size, stride=stride,
        padding=padding, dilation=dilation, ceil_mode=ceil_mode, count_include_pad=count_include_pad,
        divisor_override=divisor_override, channels_last=channels_last, backend=backend,
    )  # fmt: skip


def lp_pool(
    x: ArrayLike,
    p: float,
    kernel_size: IntOrSeq,
    stride: IntOrSeq | None = None,
    padding: Padding = 0,
    ceil_mode: bool = False,
    mean: bool = False,
    *,
    dilation: IntOrSeq = 1,
    channels_last: bool = False,
    backend: str = "auto",
) -> np.ndarray:
    """Lp (power-norm) pooling over every spatial axis.

    ``y = (sum |x|**p)**(1/p)`` over the window's real cells, or with
    ``mean=True`` the power mean ``((1/n) sum |x|**p)**(1/p)`` over its ``n``
    real cells (``p=2``: RMS / L2 pooling; learnable ``p``: GeM).
    ``p=inf`` gives ``max |x|``.

    This differs from PyTorch's ``lp_pool``, which drops the absolute value
    (negative inputs with odd ``p`` go wrong) and, in ceil mode, scales
    partial windows by the full kernel size; poolkit follows the formula
    above, as ONNX's LpPool does.

    Parameters
    ----------
    x : array_like
        ``(N, C, *spatial)``, or ``(N, *spatial, C)`` with ``channels_last``.
        Float inputs keep their dtype; integers and bools give float64.
    p : float
        The power, ``p > 0``; ``float("inf")`` for the max of ``|x|``.
    kernel_size, stride, padding, ceil_mode, dilation, channels_last, backend
        As in :func:`max_pool`. Padding cells add nothing to the sum.
    mean : bool
        Average ``|x|**p`` over the real cells before the root.

    Returns
    -------
    numpy.ndarray
        Sums are accumulated in float64.

    Examples
    --------
    >>> import numpy as np, poolkit as pk
    >>> x = np.array([[[3., -4., 0., 12.]]])
    >>> pk.lp_pool(x, 2, 2)
    array([[[ 5., 12.]]])
    >>> pk.lp_pool(x, 2, 2, mean=True)
    array([[[3.53553391, 8.48528137]]])
    """
    return _pool(
        "lp", x, rank=None, with_pullback=False, kernel_size=kernel_size, stride=stride,
        padding=padding, dilation=dilation, ceil_mode=ceil_mode, p=p, mean=mean,
        channels_last=channels_last, backend=backend,
    )  # fmt: skip


def _reduction(op, *, nan, count_include_pad, divisor_override, p, mean) -> reducers.Reduction:
    """Check the op's own options and name its reduction."""
    if op in ("max", "min"):
        check_choice("nan", nan, reducers.NAN_MODES)
        return reducers.max_reduction(nan) if op == "max" else reducers.min_reduction(nan)
    if op == "avg":
        check_flag("count_include_pad", count_include_pad)
        if divisor_override is not None:
            if isinstance(divisor_override, (bool, np.bool_)) or not isinstance(divisor_override, (int, np.integer)):
                raise PoolingTypeError(
                    f"divisor_override={divisor_override!r} must be an int or None, "
                    f"got {type(divisor_override).__name__}"
                )
            if divisor_override == 0:
                raise PoolingConfigError("divisor_override=0 would divide by zero; use a non-zero int or None")
        return reducers.avg_reduction(bool(count_include_pad), divisor_override)
    check_flag("mean", mean)
    return reducers.lp_reduction(check_positive_real("p", p, allow_inf=True), bool(mean))


def _pool(
    op: str,
    x,
    *,
    rank: int | None,
    with_pullback: bool,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode=False,
    return_indices=False,
    channels_last=False,
    nan="propagate",
    count_include_pad=True,
    divisor_override=None,
    p=None,
    mean=False,
    backend="auto",
):
    """The one pipeline behind every public pooling function and its :func:`poolkit.vjp` rule."""
    name = f"{op}_pool{rank}d" if rank else f"{op}_pool"
    array, layout = as_pool_input(x, rank, channels_last, name)
    reduction = _reduction(
        op, nan=nan, count_include_pad=count_include_pad, divisor_override=divisor_override, p=p, mean=mean
    )
    check_flag("return_indices", return_indices)
    window = Window.build(array.shape[2:], kernel_size, stride, padding, dilation, ceil_mode)
    kernels = get_backend(backend)
    want_indices = bool(return_indices) or (with_pullback and reduction.selects)
    y, indices = kernels.forward(array, window, reduction, want_indices)
    user_y = layout.to_user(y)
    result = (user_y, layout.to_user(indices)) if return_indices else user_y
    if not with_pullback:
        return result
    # The pullback reads y and the indices: keep them apart from the arrays the caller may change.
    if np.may_share_memory(user_y, y):
        y = y.copy()
    if return_indices and np.may_share_memory(result[1], indices):
        indices = indices.copy()

    def gradient(dy: np.ndarray) -> np.ndarray:
        return layout.to_user(kernels.backward(layout.to_kernel(dy), array, y, indices, window, reduction))

    return result, checked_pullback(name, user_y, gradient)


def _vjp_rule(op: str, rank: int | None, signature: inspect.Signature) -> Callable:
    bind = binder(signature)

    def rule(*args, **kwargs):
        return _pool(op, rank=rank, with_pullback=True, **bind(args, kwargs))

    return rule


_RANK_EXAMPLE = """

    Examples
    --------
    >>> import numpy as np, poolkit as pk
    >>> x = np.arange({size}, dtype=float).reshape(1, {shape})   # unbatched (C, {axes})
    >>> pk.{name}({args}).shape
    (1, {out})
"""


def _fixed_rank(generic: Callable, op: str, rank: int) -> Callable:
    """The ``rank``-D version of ``generic``: checks the rank and accepts unbatched input."""
    signature = inspect.signature(generic)
    name = f"{generic.__name__}{rank}d"
    bind = binder(signature)

    @functools.wraps(generic)
    def fixed(*args, **kwargs):
        return _pool(op, rank=rank, with_pullback=False, **bind(args, kwargs))

    axes = "DHW"[-rank:]
    example = _RANK_EXAMPLE.format(
        size=4**rank,
        shape=", ".join(["4"] * rank),
        axes=", ".join(axes),
        name=name,
        args="x, 2, 2" if op == "lp" else "x, 2",
        out=", ".join(["2"] * rank),
    )
    summary = generic.__doc__.split("\n", 1)[0].replace("every spatial axis", f"{rank} spatial axes")
    fixed.__name__ = fixed.__qualname__ = name
    fixed.__doc__ = (
        f"{summary}\n\n    :func:`{generic.__name__}` for input of {rank} spatial axes, "
        f"``(N, C, {', '.join(axes)})`` or unbatched ``(C, {', '.join(axes)})`` "
        f"(channels last: ``(N, {', '.join(axes)}, C)`` or ``({', '.join(axes)}, C)``); "
        f"the parameters are those of :func:`{generic.__name__}`.\n" + example
    )
    defvjp(fixed, _vjp_rule(op, rank, signature))
    return fixed


for _op, _generic in (("max", max_pool), ("avg", avg_pool), ("lp", lp_pool), ("min", min_pool)):
    defvjp(_generic, _vjp_rule(_op, None, inspect.signature(_generic)))

max_pool1d = _fixed_rank(max_pool, "max", 1)
max_pool2d = _fixed_rank(max_pool, "max", 2)
max_pool3d = _fixed_rank(max_pool, "max", 3)
avg_pool1d = _fixed_rank(avg_pool, "avg", 1)
avg_pool2d = _fixed_rank(avg_pool, "avg", 2)
avg_pool3d = _fixed_rank(avg_pool, "avg", 3)
lp_pool1d = _fixed_rank(lp_pool, "lp", 1)
lp_pool2d = _fixed_rank(lp_pool, "lp", 2)
lp_pool3d = _fixed_rank(lp_pool, "lp", 3)
min_pool1d = _fixed_rank(min_pool, "min", 1)
min_pool2d = _fixed_rank(min_pool, "min", 2)
min_pool3d = _fixed_rank(min_pool, "min", 3)

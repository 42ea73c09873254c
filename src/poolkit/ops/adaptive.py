"""Global and adaptive pooling, and GeM: pooling to a fixed output size.

Adaptive pooling divides each spatial axis of size ``L`` into ``O`` bins,
bin ``i`` covering ``floor(i*L/O) <= p < ceil((i+1)*L/O)``
(:class:`~poolkit.geometry.Bins`), and reduces each box of bins; global
pooling is one bin over the whole input. GeM (generalised mean) is the power
mean of each bin with a learnable power.

Like :mod:`poolkit.ops.pooling`, each op checks its input once
(:func:`~poolkit.ops._common.as_pool_input`), resolves its geometry once and
calls a kernel backend (``bins_forward`` / ``bins_backward``); each one is
registered with :func:`poolkit.vjp`.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

from .. import reducers
from ..autodiff import checked_pullback, defvjp
from ..geometry import Bins
from ..kernels import get_backend
from ._common import as_pool_input, binder, check_flag, check_positive_real

__all__ = [
    "global_max_pool", "global_avg_pool", "global_lp_pool",
    "adaptive_max_pool", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "adaptive_avg_pool", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "gem_pool",
]  # fmt: skip

OutputSize = int | None | Sequence[int | None]


def global_max_pool(
    x: ArrayLike, keepdims: bool = False, *, channels_last: bool = False, backend: str = "auto"
) -> np.ndarray:
    """Max over all spatial axes: ``y[n, c] = max over every spatial position of x[n, c]``.

    Parameters
    ----------
    x : array_like
        ``(N, C, *spatial)`` with any number of spatial axes, or
        ``(N, *spatial, C)`` with ``channels_last``. Any real dtype; the result
        keeps it. A NaN wins (PyTorch's and NumPy's rule).
    keepdims : bool
        Keep the spatial axes, with size 1 (ONNX's ``GlobalMaxPool`` shape).
    channels_last : bool
        Input (and, with ``keepdims``, output) is channels-last.
    backend : {"auto", "numba", "numpy"}
        As in :func:`poolkit.max_pool`.

    Returns
    -------
    numpy.ndarray
        ``(N, C)``, or ``(N, C, 1, ..., 1)`` (``(N, 1, ..., 1, C)``) with ``keepdims``.

    Examples
    --------
    >>> import numpy as np, poolkit as pk
    >>> x = np.arange(24.).reshape(1, 2, 3, 4)
    >>> pk.global_max_pool(x)
    array([[11., 23.]])
    >>> pk.global_max_pool(x, keepdims=True).shape
    (1, 2, 1, 1)
    """
    return _bin_pool(
        "global_max_pool", x, reducers.max_reduction(), keepdims=keepdims, channels_last=channels_last, backend=backend
    )


def global_avg_pool(
    x: ArrayLike, keepdims: bool = False, *, channels_last: bool = False, backend: str = "auto"
) -> np.ndarray:
    """Mean over all spatial axes: ``y[n, c] = (1/S) * sum over the S spatial positions of x[n, c]``.

    Sums are added in float64; float inputs keep their dtype, integers give
    float64. Parameters and output shape as in :func:`global_max_pool`.

    Examples
    --------
    >>> import numpy as np, poolkit as pk
    >>> pk.global_avg_pool(np.arange(24.).reshape(1, 2, 3, 4))
    array([[ 5.5, 17.5]])
    """
    return _bin_pool(
        "global_avg_pool", x, reducers.avg_reduction(), keepdims=keepdims, channels_last=channels_last, backend=backend
    )


def global_lp_pool(
    x: ArrayLike,
    p: float = 2.0,
    keepdims: bool = False,
    *,
    channels_last: bool = False,
    backend: str = "auto",
) -> np.ndarray:
    """The Lp norm over all spatial axes: ``y[n, c] = (sum |x[n, c]|**p)**(1/p)`` (ONNX ``GlobalLpPool``).

    ``p`` is a positive number (default 2, ONNX's), or ``float("inf")`` for
    ``max |x|``. Sums are added in float64. Parameters and output shape as in
    :func:`global_max_pool`.

    Examples
    --------
    >>> import numpy as np, poolkit as pk
    >>> pk.global_lp_pool(np.array([[[3., -4.]]]), 2)
    array([[5.]])
    """
    reduction = reducers.lp_reduction(check_positive_real("p", p, allow_inf=True))
    return _bin_pool("global_lp_pool", x, reduction, keepdims=keepdims, channels_last=channels_last, backend=backend)


def adaptive_max_pool(
    x: ArrayLike,
    output_size: OutputSize,
    return_indices: bool = False,
    *,
    channels_last: bool = False,
    backend: str = "auto",
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Max pooling to a fixed output size: each output cell is the max of its bin.

    Along an axis of size ``L`` pooled to ``O`` cells, output ``i`` reduces the
    input positions ``floor(i*L/O) <= p < ceil((i+1)*L/O)`` (PyTorch's rule;
    bins overlap when ``O`` does not divide ``L``, and repeat cells when
    ``O > L``).

    Parameters
    ----------
    x : array_like
        ``(N, C, *spatial)``, or ``(N, *spatial, C)`` with ``channels_last``.
        Any real dtype; the result keeps it.
    output_size : int, None or sequence of (int or None)
        Output cells per spatial axis; an int applies to every axis; ``None``
        keeps that axis's size.
    return_indices : bool
        Also return the int64 flat index of each maximum within its ``(n, c)``
        plane (PyTorch's layout). Ties go to the first maximum in row-major
        order; a NaN wins its bin (the last NaN gets the index).
    channels_last : bool
        Input and output are ``(N, *spatial, C)``.
    backend : {"auto", "numba", "numpy"}
        As in :func:`poolkit.max_pool`.

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, numpy.ndarray)

    Raises
    ------
    PoolingConfigError
        An output size below 1, or a sequence of the wrong length.

    Examples
    --------
    Five positions into three overlapping bins, ``[0, 2)``, ``[1, 4)``, ``[3, 5)``:

    >>> import numpy as np, poolkit as pk
    >>> x = np.array([[[1., 5., 2., 4., 3.]]])
    >>> pk.adaptive_max_pool(x, 3, return_indices=True)
    (array([[[5., 5., 4.]]]), array([[[1, 1, 3]]]))
    """
    return _bin_pool(
        "adaptive_max_pool", x, reducers.max_reduction(), output_size=output_size,
        return_indices=return_indices, channels_last=channels_last, backend=backend,
    )  # fmt: skip


def adaptive_avg_pool(
    x: ArrayLike, output_size: OutputSize, *, channels_last: bool = False, backend: str = "auto"
) -> np.ndarray:
    """Average pooling to a fixed output size: each output cell is the mean of its bin.

    ``y[i] = sum(x[start_i:stop_i]) / (stop_i - start_i)`` per axis, with the
    bins of :func:`adaptive_max_pool`. Sums are added in float64; float inputs
    keep their dtype, integers give float64. Parameters as in
    :func:`adaptive_max_pool`.

    Examples
    --------
    >>> import numpy as np, poolkit as pk
    >>> pk.adaptive_avg_pool(np.array([[[1., 5., 2., 4., 3.]]]), 3)
    array([[[3.        , 3.66666667, 3.5       ]]])
    """
    return _bin_pool(
        "adaptive_avg_pool", x, reducers.avg_reduction(), output_size=output_size, channels_last=channels_last,
        backend=backend,
    )  # fmt: skip


def gem_pool(
    x: ArrayLike,
    p: float = 3.0,
    eps: float = 1e-6,
    output_size: OutputSize = 1,
    *,
    channels_last: bool = False,
    backend: str = "auto",
) -> np.ndarray:
    """Generalised-mean (GeM) pooling (Radenović et al. 2018) over adaptive bins.

    ``y = ((1/n) * sum over the bin of max(x, eps)**p)**(1/p)``, the power mean
    of the clamped activations: ``p=1`` is average pooling, large ``p``
    approaches max pooling. Under :func:`poolkit.vjp` the pullback returns
    ``(dx, dp)``, so ``p`` can be learned::

        dy/dx_i = y**(1-p) * max(x_i, eps)**(p-1) / n     (0 where x_i < eps)
        dy/dp   = y * (mean(c**p * ln c) / (p * mean(c**p)) - ln(mean(c**p)) / p**2),  c = max(x, eps)

    Parameters
    ----------
    x : array_like
        ``(N, C, *spatial)``, or ``(N, *spatial, C)`` with ``channels_last``.
        Float inputs keep their dtype; integers give float64.
    p : float
        The power, ``p > 0``.
    eps : float
        The clamp, ``eps > 0``, keeping the power and its logarithm defined.
    output_size : int, None or sequence
        Bins per spatial axis, as in :func:`adaptive_avg_pool`; the default 1
        pools each channel to one value, shape ``(N, C, 1, ..., 1)``.
    channels_last, backend
        As in :func:`adaptive_max_pool`.

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    PoolingConfigError
        ``p <= 0`` or ``eps <= 0``, or a bad output size.

    Examples
    --------
    >>> import numpy as np, poolkit as pk
    >>> x = np.array([[[[1., 2.], [3., 4.]]]])
    >>> pk.gem_pool(x, p=1.0)[..., 0, 0]                # p=1: the mean
    array([[2.5]])
    >>> y, pullback = pk.vjp(pk.gem_pool, x, p=3.0)
    >>> dx, dp = pullback(np.ones_like(y))
    >>> round(float(y.item()), 4), round(float(dp), 4)
    (2.924, 0.1621)
    """
    return _gem(x, p, eps, output_size, channels_last=channels_last, backend=backend, with_pullback=False)


def _bin_pool(
    name: str,
    x,
    reduction: reducers.Reduction,
    *,
    output_size: OutputSize = None,
    keepdims: bool | None = None,
    return_indices: bool = False,
    rank: int | None = None,
    channels_last: bool = False,
    backend: str = "auto",
    with_pullback: bool = False,
):
    """The one pipeline behind the adaptive and global functions and their :func:`poolkit.vjp` rules.

    Global pooling (``keepdims`` not None) reduces all spatial axes as one
    flattened axis with one bin.
    """
    name = f"{name}{rank}d" if rank else name
    array, layout = as_pool_input(x, rank, channels_last, name)
    check_flag("return_indices", return_indices)
    spatial = array.shape[2:]
    if keepdims is not None:
        check_flag("keepdims", keepdims)
        Bins.adaptive(spatial, 1)  # refuses an empty axis, named in the input's own shape
        array = array.reshape(*array.shape[:2], math.prod(spatial))
        bins = Bins.adaptive(array.shape[2:], 1)
    else:
        bins = Bins.adaptive(spatial, output_size)
    kernels = get_backend(backend)
    want_indices = bool(return_indices) or (with_pullback and reduction.selects)
    y, indices = kernels.bins_forward(array, bins, reduction, want_indices)
    if keepdims is not None:
        y = y.reshape(y.shape[:2] + ((1,) * len(spatial) if keepdims else ()))
    user_y = layout.to_user(y)
    result = (user_y, layout.to_user(indices)) if return_indices else user_y
    if not with_pullback:
        return result
    y = y.copy() if np.may_share_memory(user_y, y) else y
    if return_indices and np.may_share_memory(result[1], indices):
        indices = indices.copy()

    def gradient(dy: np.ndarray) -> np.ndarray:
        dy = layout.to_kernel(dy).reshape(y.shape[:2] + bins.out_shape)
        dx = kernels.bins_backward(dy, array, y.reshape(dy.shape), indices, bins, reduction)
        return layout.to_user(dx.reshape(dx.shape[:2] + spatial))

    return result, checked_pullback(name, user_y, gradient)


def _gem(x, p, eps, output_size, *, channels_last, backend, with_pullback):
    array, layout = as_pool_input(x, None, channels_last, "gem_pool")
    power = check_positive_real("p", p)
    floor = check_positive_real("eps", eps)
    bins = Bins.adaptive(array.shape[2:], output_size)
    kernels = get_backend(backend)
    clamped = np.maximum(array, floor, dtype=reducers.gradient_dtype(array.dtype))
    mean_power = reducers.lp_reduction(power, mean=True)
    y, _ = kernels.bins_forward(clamped, bins, mean_power)
    user_y = layout.to_user(y)
    if not with_pullback:
        return user_y
    y = y.copy() if np.may_share_memory(user_y, y) else y

    def gradient(dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dy = layout.to_kernel(dy)
        dx = kernels.bins_backward(dy, clamped, y, None, bins, mean_power) * (array >= floor)
        c64 = clamped.astype(np.float64)
        powered = c64**power
        mean = reducers.avg_reduction()
        moment, _ = kernels.bins_forward(powered, bins, mean)
        log_moment, _ = kernels.bins_forward(powered * np.log(c64), bins, mean)
        dy_dp = y.astype(np.float64) * (log_moment / (power * moment) - np.log(moment) / power**2)
        return layout.to_user(dx), np.sum(dy * dy_dp)

    return user_y, checked_pullback("gem_pool", user_y, gradient)


def _gem_rule(x, p=3.0, eps=1e-6, output_size=1, *, channels_last=False, backend="auto"):
    return _gem(x, p, eps, output_size, channels_last=channels_last, backend=backend, with_pullback=True)


def _rule(function: Callable, name: str, reduction_of: Callable, rank: int | None = None) -> Callable:
    bind = binder(inspect.signature(function))

    def rule(*args, **kwargs):
        params = bind(args, kwargs)
        x = params.pop("x")
        reduction = reduction_of(params)
        return _bin_pool(name, x, reduction, rank=rank, with_pullback=True, **params)

    return rule


def _fixed_rank(generic: Callable, reduction_of: Callable, rank: int) -> Callable:
    """The ``rank``-D version of an adaptive function: checks the rank and accepts unbatched input."""
    bind = binder(inspect.signature(generic))
    name = f"{generic.__name__}{rank}d"

    @functools.wraps(generic)
    def fixed(*args, **kwargs):
        params = bind(args, kwargs)
        x = params.pop("x")
        return _bin_pool(generic.__name__, x, reduction_of(params), rank=rank, **params)

    axes = ", ".join("DHW"[-rank:])
    fixed.__name__ = fixed.__qualname__ = name
    fixed.__doc__ = (
        f"{generic.__doc__.splitlines()[0]}\n\n    :func:`{generic.__name__}` for input of {rank} spatial axes, "
        f"``(N, C, {axes})`` or unbatched ``(C, {axes})``; the parameters are those of "
        f":func:`{generic.__name__}`.\n\n    Examples\n    --------\n"
        f"    >>> import numpy as np, poolkit as pk\n"
        f"    >>> pk.{name}(np.ones((3, {', '.join(['6'] * rank)})), 2).shape\n"
        f"    (3, {', '.join(['2'] * rank)})\n"
    )
    defvjp(fixed, _rule(generic, generic.__name__, reduction_of, rank))
    return fixed


def _max_of(params: dict) -> reducers.Reduction:
    return reducers.max_reduction()


def _avg_of(params: dict) -> reducers.Reduction:
    return reducers.avg_reduction()


def _lp_of(params: dict) -> reducers.Reduction:
    return reducers.lp_reduction(check_positive_real("p", params.pop("p"), allow_inf=True))


for _function, _reduction_of in (
    (global_max_pool, _max_of),
    (global_avg_pool, _avg_of),
    (global_lp_pool, _lp_of),
    (adaptive_max_pool, _max_of),
    (adaptive_avg_pool, _avg_of),
):
    defvjp(_function, _rule(_function, _function.__name__, _reduction_of))
defvjp(gem_pool, _gem_rule)

adaptive_max_pool1d = _fixed_rank(adaptive_max_pool, _max_of, 1)
adaptive_max_pool2d = _fixed_rank(adaptive_max_pool, _max_of, 2)
adaptive_max_pool3d = _fixed_rank(adaptive_max_pool, _max_of, 3)
adaptive_avg_pool1d = _fixed_rank(adaptive_avg_pool, _avg_of, 1)
adaptive_avg_pool2d = _fixed_rank(adaptive_avg_pool, _avg_of, 2)
adaptive_avg_pool3d = _fixed_rank(adaptive_avg_pool, _avg_of, 3)

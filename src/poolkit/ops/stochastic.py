"""Stochastic pooling (Zeiler & Fergus 2013): sample a cell of each window in proportion to its activation.

For a window of non-negative activations ``a_i`` the probabilities are
``p_i = a_i / sum_j a_j``. In training, each window outputs one cell drawn
with those probabilities; at inference it outputs the expectation
``sum_i p_i a_i = sum_i a_i**2 / sum_i a_i``. The geometry (kernel, stride,
padding) is an ordinary pooling :class:`~poolkit.geometry.Window`; padding
cells hold no activation and are never drawn.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.typing import ArrayLike

from .. import reducers
from ..autodiff import checked_pullback, defvjp
from ..errors import PoolingConfigError, PoolingTypeError
from ..geometry import IntOrSeq, Padding, Window
from ..kernels.numpy_ref import _blocks
from ._common import as_pool_input, check_flag

__all__ = ["stochastic_pool"]


def stochastic_pool(
    x: ArrayLike,
    kernel_size: IntOrSeq,
    stride: IntOrSeq | None = None,
    padding: Padding = 0,
    training: bool = True,
    rng: np.random.Generator | int | None = None,
    return_indices: bool = False,
    *,
    channels_last: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Stochastic pooling over every spatial axis (Zeiler & Fergus 2013).

    For the real cells ``a_i >= 0`` of a window, ``p_i = a_i / sum_j a_j``:

    * ``training=True``: ``y = a_k`` with ``k`` drawn with probability
      ``p_k``; the gradient goes to that cell.
    * ``training=False``: ``y = sum_i p_i a_i = sum_i a_i**2 / sum_i a_i``,
      with gradient ``dy/da_i = (2 a_i - y) / sum_j a_j``.

    A window whose cells are all 0 gives ``y = 0``: in training it selects its
    first real cell (so ``y == x`` at the index always holds and the gradient
    goes there); at inference its gradient is 0.

    Parameters
    ----------
    x : array_like
        ``(N, C, *spatial)``, or ``(N, *spatial, C)`` with ``channels_last``.
        Non-negative, finite activations (e.g. after a ReLU).
    kernel_size, stride, padding
        The windows, as in :func:`poolkit.max_pool`; padding cells count as 0
        activation.
    training : bool
        Sample (True) or return the expectation (False).
    rng : numpy.random.Generator, int or None
        The source of the draws in training: one ``rng.random()`` per output
        cell, in ``(N, C, *out)`` row-major order whatever the layout. An int
        seeds a new generator; None draws fresh entropy.
    return_indices : bool
        Training only: also return the int64 flat index of each drawn cell
        within its ``(n, c)`` plane (PyTorch's max-pool layout).
    channels_last : bool
        Input and output are ``(N, *spatial, C)``.

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, numpy.ndarray)
        Training keeps ``x``'s dtype (it returns input cells); inference keeps
        float dtypes and gives float64 for integers (sums are taken in float64).

    Raises
    ------
    PoolingConfigError
        A negative, NaN or infinite activation; ``return_indices`` at
        inference; bad sizes or padding.
    PoolingTypeError
        Non-numeric input, or an ``rng`` that is neither a generator nor a seed.

    Examples
    --------
    >>> import numpy as np, poolkit as pk
    >>> x = np.array([[[1., 3., 0., 0., 2., 2.]]])
    >>> pk.stochastic_pool(x, 2, training=False)          # (1 + 9) / 4, 0, (4 + 4) / 4
    array([[[2.5, 0. , 2. ]]])
    >>> y, idx = pk.stochastic_pool(x, 2, rng=0, return_indices=True)
    >>> bool(np.all(y == np.take_along_axis(x, idx, axis=-1)))
    True
    """
    return _stochastic(x, kernel_size, stride, padding, training, rng, return_indices, channels_last=channels_last)


def as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    """``rng`` as a :class:`numpy.random.Generator`: a generator itself, a new one seeded by an int, or fresh.

    Examples
    --------
    >>> from poolkit.ops.stochastic import as_generator
    >>> as_generator(7).random() == as_generator(7).random()
    True
    """
    if isinstance(rng, (bool, np.bool_)):
        raise PoolingTypeError(f"rng={rng!r} must be a numpy.random.Generator, an int seed or None")
    try:
        return np.random.default_rng(rng)
    except (TypeError, ValueError) as err:
        raise PoolingTypeError(f"rng={rng!r} must be a numpy.random.Generator, an int seed or None ({err})") from err


def _stochastic(
    x, kernel_size, stride=None, padding=0, training=True, rng=None, return_indices=False,
    *, channels_last=False, with_pullback=False,
):  # fmt: skip
    """The one pipeline behind :func:`stochastic_pool` and its :func:`poolkit.vjp` rule."""
    name = "stochastic_pool"
    array, layout = as_pool_input(x, None, channels_last, name)
    check_flag("training", training)
    check_flag("return_indices", return_indices)
    if return_indices and not training:
        raise PoolingConfigError(
            "return_indices=True needs training=True: inference returns each window's expectation, not one cell"
        )
    window = Window.build(array.shape[2:], kernel_size, stride, padding)
    _check_activations(array, layout)
    cells, flat = _window_cells(array, window)
    weights = cells.astype(np.float64)
    total = weights.sum(axis=-1)
    if training:
        chosen = _draw(weights, total, flat, as_generator(rng))
        y = np.take_along_axis(cells, chosen[..., np.newaxis], axis=-1)[..., 0]
        # d y / d cell: 1 at the drawn cell.
        local = (np.arange(cells.shape[-1]) == chosen[..., np.newaxis]).astype(np.float64)
    else:
        y64 = np.divide((weights**2).sum(axis=-1), total, out=np.zeros_like(total), where=total > 0)
        y = y64.astype(reducers.gradient_dtype(array.dtype), copy=False)
        local = np.divide(
            2 * weights - y64[..., np.newaxis], total[..., np.newaxis],
            out=np.zeros_like(weights), where=total[..., np.newaxis] > 0,
        )  # fmt: skip

    user_y = layout.to_user(y)
    if return_indices:
        indices = np.take_along_axis(np.broadcast_to(flat, cells.shape), chosen[..., np.newaxis], axis=-1)[..., 0]
        result = (user_y, layout.to_user(indices))
    else:
        result = user_y
    if not with_pullback:
        return result

    def gradient(dy: np.ndarray) -> np.ndarray:
        cell_grad = layout.to_kernel(dy).astype(np.float64)[..., np.newaxis] * local
        dx = np.zeros(array.shape, dtype=np.float64)
        for offset, taps in window.taps():
            out_block, in_block = _blocks(taps)
            dx[in_block] += cell_grad[(*out_block, np.ravel_multi_index(offset, window.kernel_size))]
        return layout.to_user(dx.astype(reducers.gradient_dtype(array.dtype), copy=False))

    return result, checked_pullback(name, user_y, gradient)


def _check_activations(array: np.ndarray, layout) -> None:
    """Refuse negative, NaN and infinite activations: the probabilities need ``a >= 0`` and a finite sum."""
    bad = ~(np.isfinite(array) & (array >= 0))
    if bad.any():
        user_bad = layout.to_user(bad)
        where = tuple(int(i) for i in np.argwhere(user_bad)[0])
        value = layout.to_user(array)[where].item()
        raise PoolingConfigError(
            f"stochastic_pool needs non-negative, finite activations (it samples in proportion to them, "
            f"as after a ReLU); x has {int(bad.sum())} other value(s), the first {value!r} at index {where}. "
            "Apply np.maximum(x, 0) (a ReLU) first"
        )


def _window_cells(array: np.ndarray, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Every window's cells along a last axis (row-major kernel order), 0 for padding, in ``array``'s dtype;
    and the flat in-plane index of each cell, shape ``(*out, kernel volume)``, -1 for padding."""
    volume = int(np.prod(window.kernel_size))
    cells = np.zeros((*array.shape[:2], *window.out_shape, volume), dtype=array.dtype)
    flat = np.full((*window.out_shape, volume), -1, dtype=np.int64)
    for offset, taps in window.taps():
        out_block, in_block = _blocks(taps)
        tap = np.ravel_multi_index(offset, window.kernel_size)
        cells[(*out_block, tap)] = array[in_block]
        flat[(*out_block[2:], tap)] = window.flat_index(taps)
    return cells, flat


def _draw(weights: np.ndarray, total: np.ndarray, flat: np.ndarray, generator: np.random.Generator) -> np.ndarray:
    """The drawn cell of each window: the first whose running sum exceeds ``u * total``.

    Cells of weight 0 (and padding) are never drawn; a window of zeros takes
    its first real cell.
    """
    running = np.cumsum(weights, axis=-1)
    threshold = generator.random(total.shape) * total
    chosen = (running <= threshold[..., np.newaxis]).sum(axis=-1)
    last_positive = weights.shape[-1] - 1 - np.argmax(weights[..., ::-1] > 0, axis=-1)
    chosen = np.minimum(chosen, last_positive)  # u * total may round up to total
    first_real = np.argmax(flat >= 0, axis=-1)
    return np.where(total > 0, chosen, first_real)


defvjp(stochastic_pool, functools.partial(_stochastic, with_pullback=True))

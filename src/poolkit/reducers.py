"""The reductions a pooling window can apply, as one table.

Every pooling op reduces each window in one of two ways:

* **select** (max, min, and Lp with ``p=inf``): keep the one cell that beats
  the others under a comparison, and remember where it was (the index that
  ``return_indices`` and the gradient use);
* **sum** (avg, Lp): add ``|x|**p`` (or ``x`` for avg) over the real cells,
  then finish by dividing and, for Lp, taking the ``1/p`` root.

A :class:`Reduction` names one of these with its parameters, its identity
per dtype, its result dtype and the elementwise parts of its gradient. Both
kernel backends take their parameters from it; the compiled kernels carry
their own loop-level form of the combine and finish steps (Numba cannot call
into these Python methods), and the tests hold the two backends to each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NAN_MODES = ("propagate", "ignore")


@dataclass(frozen=True)
class Reduction:
    """What a pooling window computes.

    Attributes
    ----------
    kind : {"max", "min", "sum"}
        Select the largest or smallest cell, or add the cells.
    absolute : bool
        Reduce ``|x|`` instead of ``x`` (Lp pooling).
    power : float
        For ``kind="sum"``: add ``|x|**power`` (with ``absolute``) or ``x``
        (``power=1``, avg); the result is then raised to ``1/power`` when
        ``root`` is set.
    root : bool
        Take the ``1/power`` root after dividing (Lp pooling).
    divisor : {"none", "padded", "real"} or int
        What the sum is divided by: nothing, the window clipped to the padded
        extent (``count_include_pad=True``), the real cells
        (``count_include_pad=False``, and Lp's ``mean=True``), or a fixed int
        (``divisor_override``).
    nan : {"propagate", "ignore"}
        For selects: a NaN wins its window (PyTorch; the last NaN in scan
        order gets the index), or NaNs are skipped and a window of NaNs alone
        gives NaN (the ONNX reference MaxPool; ONNX Runtime 1.2x picks a NaN or not by its place).
    """

    kind: str
    absolute: bool = False
    power: float = 1.0
    root: bool = False
    divisor: str | int = "none"
    nan: str = "propagate"

    @property
    def selects(self) -> bool:
        return self.kind in ("max", "min")

    @property
    def better(self) -> np.ufunc:
        """The strict comparison a select uses: a later cell replaces the kept one only if it is better."""
        return np.greater if self.kind == "max" else np.less

    def compute_dtype(self, dtype: np.dtype) -> np.dtype:
        """The dtype the reduction works in: selects keep the input's; sums use float64."""
        return np.dtype(dtype) if self.selects and not self.absolute else np.dtype(np.float64)

    def result_dtype(self, dtype: np.dtype) -> np.dtype:
        """The dtype of the pooled output for an input of ``dtype``.

        Selects keep it; sums and ``|x|`` keep float dtypes and give float64
        for integers and bools (NumPy's ``mean`` rule).
        """
        dtype = np.dtype(dtype)
        if self.selects and not self.absolute:
            return dtype
        return dtype if dtype.kind == "f" else np.dtype(np.float64)

    def identity(self, dtype: np.dtype):
        """The value a window starts from in ``compute_dtype(dtype)``: combining it with ``v`` gives ``v``.

        0 for sums; for max (min) the lowest (highest) value of the dtype, or
        NaN under ``nan="ignore"``, which the combine rule treats as empty.
        """
        dtype = self.compute_dtype(dtype)
        if self.kind == "sum":
            return dtype.type(0)
        if dtype.kind == "f":
            if self.nan == "ignore":
                return dtype.type(np.nan)
            return dtype.type(-np.inf if self.kind == "max" else np.inf)
        if dtype.kind == "b":
            return dtype.type(self.kind == "min")
        info = np.iinfo(dtype)
        return dtype.type(info.min if self.kind == "max" else info.max)

    def select_gradient(self, dy: np.ndarray, x: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """For selects: the gradient each window sends to its chosen cell (float64).

        ``dy``, times ``sign(x)`` at the chosen cell when the select is on ``|x|``.
        """
        weights = dy.astype(np.float64)
        if self.absolute:
            planes = x.reshape(*x.shape[:2], int(np.prod(x.shape[2:])))
            where = indices.reshape(*indices.shape[:2], int(np.prod(indices.shape[2:])))
            chosen = np.take_along_axis(planes, where, axis=2)
            weights = weights * np.sign(chosen.astype(np.float64)).reshape(weights.shape)
        return weights

    def sum_gradient(self, dy: np.ndarray, y: np.ndarray, window) -> np.ndarray:
        """For sums: the gradient with respect to each window's sum of ``dy`` (float64).

        Avg: ``dy / divisor``. Lp: ``dy * y**(1-p) / divisor`` (0 where ``y == 0``):
        :meth:`root_gradient`, divided.
        """
        grad = self.root_gradient(dy, y).astype(np.float64)
        divisor = self.divisor_of(window)
        return grad if divisor is None else grad / divisor

    def root_gradient(self, dy: np.ndarray, y: np.ndarray) -> np.ndarray:
        """For sums: :meth:`sum_gradient` before the division, ``dy`` itself (no copy) but for a root.

        Lp: ``dy * y**(1-p)`` in float64, 0 where ``y == 0``.
        """
        if not self.root or self.power == 1:
            return dy
        y64 = y.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(y64 == 0, 0.0, dy * y64 ** (1 - self.power))

    def cell_gradient(self, x: np.ndarray) -> np.ndarray | None:
        """For sums: ``d(cell value)/dx`` of each input cell, or None when it is 1 (avg).

        Lp: ``sign(x) * |x|**(p-1)``, 0 at ``x == 0``.
        """
        if not self.absolute:
            return None
        x64 = x.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(x64 == 0, 0.0, np.sign(x64) * np.abs(x64) ** (self.power - 1))

    def finish(self, totals: np.ndarray, window) -> np.ndarray:
        """For sums: turn float64 window ``totals`` into results, in place: divide, then the ``1/p`` root."""
        divisor = self.divisor_of(window)
        if divisor is not None:
            totals /= divisor
        if self.root and self.power != 1:
            totals **= 1.0 / self.power
        return totals

    def divisor_of(self, window) -> np.ndarray | None:
        """The array each window's sum is divided by (shape ``window.out_shape``), or None."""
        return None if self.divisor == "none" else window.divisor(*self._divisor_args())

    def divisor_factors_of(self, window) -> tuple[np.ndarray, ...] | None:
        """Per-axis vectors whose outer product is :meth:`divisor_of` (``window.divisor_factors``), or None."""
        return None if self.divisor == "none" else window.divisor_factors(*self._divisor_args())

    def _divisor_args(self) -> tuple[bool, int | None]:
        """``(count_include_pad, divisor_override)`` as :meth:`Window.divisor` takes them."""
        if isinstance(self.divisor, str):
            return self.divisor == "padded", None
        return True, self.divisor


def gradient_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype of ``dx``: the input's float dtype, float64 for integer and bool inputs."""
    dtype = np.dtype(dtype)
    return dtype if dtype.kind == "f" else np.dtype(np.float64)


def max_reduction(nan: str = "propagate") -> Reduction:
    return Reduction("max", nan=nan)


def min_reduction(nan: str = "propagate") -> Reduction:
    return Reduction("min", nan=nan)


def avg_reduction(count_include_pad: bool = True, divisor_override: int | None = None) -> Reduction:
    if divisor_override is not None:
        return Reduction("sum", divisor=int(divisor_override))
    return Reduction("sum", divisor="padded" if count_include_pad else "real")


def lp_reduction(p: float, mean: bool = False) -> Reduction:
    if np.isinf(p):
        return Reduction("max", absolute=True, nan="propagate")
    return Reduction("sum", absolute=True, power=float(p), root=True, divisor="real" if mean else "none")

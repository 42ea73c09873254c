"""The reductions a pooling window can apply, as one table.

Every pooling op reduces each window in one of two ways:

* **select** (max, min, and Lp with ``p=inf``): keep the one cell that beats
  the others under a comparison, and remember where it was (the index that
  ``return_indices`` and the gradient use);
* **sum** (avg, Lp): add ``|x|**p`` (or ``x`` for avg) over the real cells,
  then finish by dividing and, for Lp, taking the ``1/p`` root.

A :class:`Reduction` names one of these with its parameters. The reference
kernel, the fast kernels and the gradients all read it; none keeps its own
copy of these rules.
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
        gives NaN (ONNX Runtime's MaxPool never picks a NaN).
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

    def divisor_of(self, window) -> np.ndarray | None:
        """The array each window's sum is divided by (shape ``window.out_shape``), or None."""
        if self.divisor == "none":
            return None
        if isinstance(self.divisor, str):
            return window.divisor(count_include_pad=self.divisor == "padded")
        return window.divisor(divisor_override=self.divisor)


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

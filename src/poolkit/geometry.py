"""Pooling geometry: where every window of a pooling layer lies.

This module owns :class:`Window`, built once from the user's arguments and the
input's spatial shape. It resolves every padding form, applies the output-size
and ceil-mode rules, and raises every error about the arguments. Kernels, the
average divisors and the diagnostics read a ``Window``; none of them
re-derives padding or output sizes.

Along one spatial axis of size ``L`` with kernel ``k``, stride ``s``, dilation
``d`` and padding ``(pl, pr)``, window ``o`` reads the input positions
``o*s - pl + j*d`` for ``j = 0 .. k-1``, and the number of windows is::

    out = floor((L + pl + pr - d*(k-1) - 1 + (s-1 if ceil_mode else 0)) / s) + 1

In ceil mode a last window that would start at or past the end of the real
input (in the right padding) is dropped, as PyTorch does. A window longer than
the padded input is refused in every mode (PyTorch's ``avg_pool3d`` refuses it
too, while its ``max_pool`` and ``avg_pool1d/2d`` in ceil mode return one
partial window).
"""

from __future__ import annotations

import functools
import itertools
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import PoolingConfigError, PoolingTypeError

IntOrSeq = int | Sequence[int]
Padding = int | str | Sequence[int | Sequence[int]]

_PADDING_STRINGS = ("valid", "same", "same_lower")


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@dataclass(frozen=True)
class Tap:
    """One kernel offset along one axis, and the windows whose tap lands in the input.

    Windows ``out_start .. out_stop-1`` read input positions
    ``in_start, in_start + stride, ...`` through this tap; every other window
    reads padding (or nothing) there.
    """

    offset: int
    out_start: int
    out_stop: int
    in_start: int
    stride: int

    @property
    def out_slice(self) -> slice:
        return slice(self.out_start, self.out_stop)

    @property
    def in_slice(self) -> slice:
        """The input cells this tap reads, in window order; empty when no window's tap lands in the input.

        Examples
        --------
        >>> from poolkit import Window
        >>> [tap.in_slice for tap in Window.build((7,), 4, 5, 2, 2).axes[0].taps]
        [slice(3, 3, 5), slice(0, 1, 5), slice(2, 3, 5), slice(4, 5, 5)]
        """
        count = self.out_stop - self.out_start
        stop = self.in_start + (count - 1) * self.stride + 1 if count else self.in_start
        return slice(self.in_start, stop, self.stride)

    @property
    def in_positions(self) -> np.ndarray:
        return self.in_start + self.stride * np.arange(self.out_stop - self.out_start)


@dataclass(frozen=True)
class Axis:
    """The resolved geometry of one spatial axis.

    Attributes
    ----------
    size : int
        Input length along the axis.
    kernel, stride, dilation : int
        Window taps, step between windows, step between taps.
    pad_before, pad_after : int
        Padding cells before the first and after the last input cell.
    ceil_mode : bool
        Whether a partial last window was allowed.
    out_size : int
        Number of windows.
    """

    size: int
    kernel: int
    stride: int
    dilation: int
    pad_before: int
    pad_after: int
    ceil_mode: bool
    out_size: int

    @property
    def span(self) -> int:
        """Cells one window covers from its first tap to its last: ``dilation * (kernel - 1) + 1``.

        Examples
        --------
        >>> from poolkit import Window
        >>> Window.build((9,), 3, dilation=2).axes[0].span
        5
        """
        return self.dilation * (self.kernel - 1) + 1

    @property
    def is_identity(self) -> bool:
        """Whether pooling along this axis changes nothing: one tap, stride 1, no padding."""
        return self.kernel == 1 and self.stride == 1 and self.pad_before == 0 and self.pad_after == 0

    @functools.cached_property
    def starts(self) -> np.ndarray:
        """Input position of each window's first tap (negative inside the left padding)."""
        return _readonly(np.arange(self.out_size, dtype=np.int64) * self.stride - self.pad_before)

    @functools.cached_property
    def taps(self) -> tuple[Tap, ...]:
        """For each kernel offset ``j``, the windows whose tap ``j`` reads a real input cell."""
        taps = []
        for j in range(self.kernel):
            shift = j * self.dilation - self.pad_before
            first = max(0, -(shift // self.stride))  # ceil(-shift / stride)
            stop = min(self.out_size, (self.size - 1 - shift) // self.stride + 1)
            stop = max(stop, first)
            taps.append(Tap(j, first, stop, first * self.stride + shift, self.stride))
        return tuple(taps)

    @functools.cached_property
    def real_counts(self) -> np.ndarray:
        """Number of real (non-padding) input cells each window reads."""
        counts = np.zeros(self.out_size, dtype=np.int64)
        for tap in self.taps:
            counts[tap.out_slice] += 1
        return _readonly(counts)

    @functools.cached_property
    def padded_counts(self) -> np.ndarray:
        """Number of taps of each window inside the padded extent ``[-pad_before, size + pad_after)``.

        This is PyTorch's ``count_include_pad=True`` divisor: a ceil-mode window
        that hangs past the right padding is clipped to it.
        """
        positions = self.starts[:, None] + self.dilation * np.arange(self.kernel)
        inside = positions < self.size + self.pad_after
        return _readonly(inside.sum(axis=1).astype(np.int64))


@dataclass(frozen=True)
class Window:
    """The geometry of a pooling layer on one input shape, resolved and checked.

    Build it with :meth:`Window.build`; the constructor trusts its arguments.

    Examples
    --------
    >>> from poolkit import Window
    >>> w = Window.build((7, 7), kernel_size=3, stride=2, padding=1)
    >>> w.out_shape
    (4, 4)
    >>> w.axes[0].real_counts   # the corner windows read 2 real rows, not 3
    array([2, 3, 3, 2])
    >>> Window.build((5,), 2, padding="same").padding
    ((0, 1),)
    """

    axes: tuple[Axis, ...]

    def __hash__(self) -> int:
        return self._hash

    @functools.cached_property
    def _hash(self) -> int:
        """The hash of the axes, formed once: the kernels look their tables up by Window on every call."""
        return hash(self.axes)

    @classmethod
    def build(
        cls,
        in_shape: Sequence[int],
        kernel_size: IntOrSeq,
        stride: IntOrSeq | None = None,
        padding: Padding = 0,
        dilation: IntOrSeq = 1,
        ceil_mode: bool = False,
        *,
        allow_padding_only: bool = False,
    ) -> Window:
        """Resolve pooling arguments against a spatial input shape.

        Parameters
        ----------
        in_shape : sequence of int
            The spatial shape of the input (no batch or channel axes).
        kernel_size : int or sequence of int
            Window taps per axis; an int applies to every axis.
        stride : int, sequence of int or None
            Step between windows; ``None`` means ``kernel_size``.
        padding : int, str or sequence
            An int for every side; a per-axis sequence whose entries are an int
            or a ``(before, after)`` pair; ``"valid"`` (none); ``"same"``
            (TF / ONNX SAME_UPPER: ``out = ceil(in / stride)``, the odd cell
            at the end); ``"same_lower"`` (the odd cell at the start).
            Padding given as ints (PyTorch's form) may not exceed
            ``kernel_size // 2``; ``(before, after)`` pairs (the ONNX / TF
            form) may be any size, as long as every window reads a real cell.
        dilation : int or sequence of int
            Step between the taps of a window.
        ceil_mode : bool
            Round the output size up, allowing a partial last window.
        allow_padding_only : bool
            Build the window even if some windows read only padding (for
            :func:`poolkit.diagnose`, which reports them); the ops refuse them.

        Returns
        -------
        Window
            Cached: the same arguments give the same object.

        Raises
        ------
        PoolingTypeError
            A size that is not an integer, a padding of the wrong type.
        PoolingConfigError
            A size that is not positive, a sequence of the wrong length,
            padding that is negative, unknown or too large, a window larger
            than the padded input, or a window that reads only padding.
        """
        arguments = (in_shape, kernel_size, stride, padding, dilation, ceil_mode, allow_padding_only)
        if type(ceil_mode) is bool and type(allow_padding_only) is bool and _plain(arguments[:5]):
            return _resolve_plain(*arguments)
        return _resolve(*arguments)

    @property
    def rank(self) -> int:
        """Number of spatial axes."""
        return len(self.axes)

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(a.size for a in self.axes)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(a.out_size for a in self.axes)

    @property
    def kernel_size(self) -> tuple[int, ...]:
        return tuple(a.kernel for a in self.axes)

    @property
    def stride(self) -> tuple[int, ...]:
        return tuple(a.stride for a in self.axes)

    @property
    def dilation(self) -> tuple[int, ...]:
        return tuple(a.dilation for a in self.axes)

    @property
    def padding(self) -> tuple[tuple[int, int], ...]:
        """``(pad_before, pad_after)`` per axis."""
        return tuple((a.pad_before, a.pad_after) for a in self.axes)

    @property
    def ceil_mode(self) -> bool:
        return self.axes[0].ceil_mode

    @functools.cached_property
    def real_counts(self) -> np.ndarray:
        """Real input cells read by each window, shape ``out_shape``."""
        return _readonly(_outer_product([a.real_counts for a in self.axes]))

    @functools.cached_property
    def padded_counts(self) -> np.ndarray:
        """Taps of each window inside the padded extent, shape ``out_shape``."""
        return _readonly(_outer_product([a.padded_counts for a in self.axes]))

    def divisor(self, count_include_pad: bool = True, divisor_override: int | None = None) -> np.ndarray:
        """The average-pooling divisor of each window, shape ``out_shape`` (float64).

        The window is clipped to the padded extent: that many taps is the
        ``count_include_pad=True`` divisor; clipped to the real input it is the
        ``False`` divisor; ``divisor_override`` replaces both.

        Examples
        --------
        >>> from poolkit import Window
        >>> w = Window.build((5,), 3, stride=2, padding=1, ceil_mode=True)
        >>> w.divisor(), w.divisor(count_include_pad=False)
        (array([3., 3., 3.]), array([2., 3., 2.]))
        """
        return _outer_product(self.divisor_factors(count_include_pad, divisor_override))

    def divisor_factors(
        self, count_include_pad: bool = True, divisor_override: int | None = None
    ) -> tuple[np.ndarray, ...]:
        """One float64 vector per axis whose outer product is :meth:`divisor`.

        A window's divisor is a product over the axes (of the taps it reads
        inside the padded extent, or of its real cells), so a kernel can take
        these short vectors instead of an output-sized array; a
        ``divisor_override`` is carried by the first axis.

        Examples
        --------
        >>> from poolkit import Window
        >>> w = Window.build((5, 4), 3, stride=2, padding=1)
        >>> [f.tolist() for f in w.divisor_factors(count_include_pad=False)]
        [[2.0, 3.0, 2.0], [2.0, 3.0]]
        """
        if divisor_override is not None:
            return _override_factors(self.out_shape, divisor_override)
        return tuple((a.padded_counts if count_include_pad else a.real_counts).astype(np.float64) for a in self.axes)

    def taps(self) -> Iterator[tuple[tuple[int, ...], tuple[Tap, ...]]]:
        """Every kernel offset in row-major order with its per-axis :class:`Tap`.

        Offsets whose tap reads no real cell in any window are skipped.

        Examples
        --------
        >>> from poolkit import Window
        >>> for offset, (tap,) in Window.build((4,), 3, padding=1).taps():
        ...     print(offset, tap.out_slice, tap.in_slice)
        (0,) slice(1, 2, None) slice(2, 3, 3)
        (1,) slice(0, 2, None) slice(0, 4, 3)
        (2,) slice(0, 1, None) slice(1, 2, 3)
        """
        for combo in itertools.product(*(a.taps for a in self.axes)):
            if all(t.out_stop > t.out_start for t in combo):
                yield tuple(t.offset for t in combo), combo

    def flat_index(self, taps: Sequence[Tap]) -> np.ndarray:
        """Flat index, within one input plane, of the cell each window reads through ``taps``.

        Broadcastable to the output block ``[t.out_slice for t in taps]``.

        Examples
        --------
        >>> from poolkit import Window
        >>> w = Window.build((4, 4), 2)
        >>> offsets, taps = list(w.taps())[-1]   # the bottom-right tap of each 2x2 window
        >>> w.flat_index(taps)
        array([[ 5,  7],
               [13, 15]])
        """
        flat = np.zeros((1,) * self.rank, dtype=np.int64)
        for axis, tap in enumerate(taps):
            shape = [1] * self.rank
            shape[axis] = -1
            flat = flat * self.axes[axis].size + tap.in_positions.reshape(shape)
        return flat


@dataclass(frozen=True)
class Bins:
    """The geometry of adaptive (and global) pooling: each output cell reduces one box of input cells.

    Along an axis of size ``L`` pooled to ``O`` bins, bin ``i`` covers the
    input positions ``start <= p < stop`` with, in integer arithmetic::

        start = floor(i * L / O)        stop = ceil((i + 1) * L / O)

    (PyTorch's adaptive pooling rule). Bins of neighbouring outputs overlap
    when ``O`` does not divide ``L``, and repeat cells when ``O > L``. Global
    pooling is one bin per axis. Build it with :meth:`Bins.adaptive`.

    Examples
    --------
    >>> from poolkit.geometry import Bins
    >>> bins = Bins.adaptive((5, 4), (3, None))
    >>> bins.out_shape
    (3, 4)
    >>> bins.bounds[0]            # (start, stop) of each bin along the first axis
    ((0, 2), (1, 4), (3, 5))
    >>> bins.divisor()
    array([[2., 2., 2., 2.],
           [3., 3., 3., 3.],
           [2., 2., 2., 2.]])
    """

    in_shape: tuple[int, ...]
    bounds: tuple[tuple[tuple[int, int], ...], ...]

    @classmethod
    def adaptive(cls, in_shape: Sequence[int], output_size) -> Bins:
        """Bins that pool ``in_shape`` to ``output_size``.

        Parameters
        ----------
        in_shape : sequence of int
            The spatial shape of the input (no batch or channel axes).
        output_size : int, None or sequence of (int or None)
            Bins per axis; an int applies to every axis; ``None`` keeps the
            axis's input size. Sizes larger than the input are allowed (bins
            then repeat cells, as in PyTorch).

        Returns
        -------
        Bins
            Bin ``i`` of an axis of length ``L`` pooled to ``O`` bins spans
            ``floor(i*L/O)`` to ``ceil((i+1)*L/O)``. Arguments made only of ints,
            None and tuples are resolved once and the same object is returned
            again.

        Raises
        ------
        PoolingTypeError
            A size that is not an integer or None.
        PoolingConfigError
            A size that is not positive, a sequence of the wrong length, an
            empty input axis, or no axis at all.

        Examples
        --------
        >>> from poolkit.geometry import Bins
        >>> Bins.adaptive((7,), 3).bounds
        (((0, 3), (2, 5), (4, 7)),)
        """
        if _plain((in_shape, output_size)):
            return _resolve_bins_plain(in_shape, output_size)
        return _resolve_bins(in_shape, output_size)

    @property
    def rank(self) -> int:
        """Number of spatial axes."""
        return len(self.in_shape)

    @property
    def out_shape(self) -> tuple[int, ...]:
        """Number of bins per axis."""
        return tuple(len(axis) for axis in self.bounds)

    @functools.cached_property
    def lengths(self) -> tuple[np.ndarray, ...]:
        """Cells per bin along each axis."""
        return tuple(
            _readonly(np.array([stop - start for start, stop in axis], dtype=np.int64)) for axis in self.bounds
        )

    def divisor(self, count_include_pad: bool = True, divisor_override: int | None = None) -> np.ndarray:
        """Cells per bin (shape ``out_shape``, float64), the divisor of an average; bins have no padding.

        The signature matches :meth:`Window.divisor`, so a
        :class:`~poolkit.reducers.Reduction` reads either.

        Examples
        --------
        >>> from poolkit.geometry import Bins
        >>> Bins.adaptive((5,), 3).divisor()
        array([2., 3., 2.])
        """
        return _outer_product(self.divisor_factors(count_include_pad, divisor_override))

    def divisor_factors(
        self, count_include_pad: bool = True, divisor_override: int | None = None
    ) -> tuple[np.ndarray, ...]:
        """One float64 vector per axis whose outer product is :meth:`divisor` (see :meth:`Window.divisor_factors`).

        Examples
        --------
        >>> from poolkit.geometry import Bins
        >>> [f.tolist() for f in Bins.adaptive((5, 4), (3, 1)).divisor_factors()]
        [[2.0, 3.0, 2.0], [4.0]]
        """
        if divisor_override is not None:
            return _override_factors(self.out_shape, divisor_override)
        return tuple(lengths.astype(np.float64) for lengths in self.lengths)

    @functools.cached_property
    def merged_bins(self) -> Bins:
        """The same bins over fewer axes: an axis pooled whole into one bin joins the axis before it.

        Inside each bin of the axis before it, such an axis's cells follow on in
        row-major order, so every bin keeps its cells and their scan order (flat
        indices included) on the input reshaped to the merged ``in_shape``; global
        pooling becomes one run of all the cells. The kernels pool these.

        Examples
        --------
        >>> from poolkit.geometry import Bins
        >>> merged = Bins.adaptive((4, 3, 5), (2, 1, 1)).merged_bins
        >>> merged.in_shape, merged.bounds
        ((60,), (((0, 30), (30, 60)),))
        """
        in_shape, bounds = list(self.in_shape), list(self.bounds)
        while len(in_shape) > 1 and bounds[-1] == ((0, in_shape[-1]),):
            size = in_shape.pop()
            bounds.pop()
            in_shape[-1] *= size
            bounds[-1] = tuple((start * size, stop * size) for start, stop in bounds[-1])
        return Bins(tuple(in_shape), tuple(bounds))

    def boxes(self) -> Iterator[tuple[tuple[int, ...], tuple[slice, ...]]]:
        """Every output cell with the input box it reduces, in row-major order."""
        for cell in itertools.product(*(range(len(axis)) for axis in self.bounds)):
            yield cell, tuple(slice(*axis[i]) for axis, i in zip(self.bounds, cell))


def _resolve_bins(in_shape, output_size) -> Bins:
    """:meth:`Bins.adaptive`'s work: check the sizes, build (or fetch) the bins."""
    in_shape = tuple(_to_int("input size", s) for s in in_shape)
    rank = len(in_shape)
    if rank == 0:
        raise PoolingConfigError("pooling needs at least one spatial axis; got an input with none")
    output_size = _scalar(output_size)
    if _is_sequence(output_size):
        sizes = tuple(_scalar(v) for v in output_size)
        if len(sizes) != rank:
            raise PoolingConfigError(
                f"output_size={tuple(output_size)!r} has {len(sizes)} entries for an input of {rank} "
                f"spatial axes {in_shape}; give {rank} values (None keeps an axis) or a single int"
            )
    elif output_size is None or isinstance(output_size, (numbers.Integral, np.integer)):
        sizes = (output_size,) * rank
    else:
        raise PoolingTypeError(
            f"output_size={output_size!r} must be an int, None or a sequence of them, got {type(output_size).__name__}"
        )
    resolved = []
    for axis, (length, size) in enumerate(zip(in_shape, sizes)):
        size = length if size is None else _to_int("output_size", size)
        if size <= 0:
            raise PoolingConfigError(
                f"output_size={output_size!r} asks for {size} bins along spatial axis {axis}; "
                "every output size must be >= 1 (larger than the input is allowed)"
            )
        if length <= 0:
            raise PoolingConfigError(
                f"spatial axis {axis} of the input shape {in_shape} has size {length}; pooling to a fixed "
                "size needs at least one cell per spatial axis. Drop the empty input, or pool only the "
                "axes that have cells"
            )
        resolved.append(size)
    return _adaptive(in_shape, tuple(resolved))


_resolve_bins_plain = functools.lru_cache(maxsize=1024)(_resolve_bins)


@functools.lru_cache(maxsize=512)
def _adaptive(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> Bins:
    bounds = tuple(
        tuple((i * length // size, -(-(i + 1) * length // size)) for i in range(size))
        for length, size in zip(in_shape, out_shape)
    )
    return Bins(in_shape, bounds)


def _override_factors(out_shape: tuple[int, ...], divisor_override: int) -> tuple[np.ndarray, ...]:
    """Per-axis divisor factors of a fixed divisor: the value on the first axis, ones on the rest."""
    return (np.full(out_shape[0], float(divisor_override)), *(np.ones(size) for size in out_shape[1:]))


def _outer_product(vectors: Sequence[np.ndarray]) -> np.ndarray:
    result = np.ones((), dtype=np.int64)
    for vec in vectors:
        result = np.multiply.outer(result, vec)
    return result


def _resolve(in_shape, kernel_size, stride, padding, dilation, ceil_mode, allow_padding_only) -> Window:
    """:meth:`Window.build`'s work: check every argument, resolve padding, build (or fetch) the window."""
    if not isinstance(in_shape, (Sequence, np.ndarray)) or isinstance(in_shape, (str, bytes)):
        raise PoolingTypeError(f"in_shape={in_shape!r} must be a sequence of ints (the spatial shape)")
    in_shape = tuple(_to_int("input size", s) for s in in_shape)
    rank = len(in_shape)
    if rank == 0:
        raise PoolingConfigError("pooling needs at least one spatial axis; got an input with none")
    kernel = _per_axis("kernel_size", kernel_size, rank)
    strides = kernel if stride is None else _per_axis("stride", stride, rank)
    dilations = _per_axis("dilation", dilation, rank)
    if not isinstance(ceil_mode, (bool, np.bool_)):
        raise PoolingTypeError(f"ceil_mode={ceil_mode!r} must be True or False")
    pads = _resolve_padding(padding, in_shape, kernel, strides, dilations)
    window = _build(in_shape, kernel, strides, dilations, pads, bool(ceil_mode))
    if not allow_padding_only:
        _refuse_padding_only(window)
    return window


# Arguments made only of ints, strings, None and tuples of them resolve once: a call's
# arguments are checked and resolved the first time, then found here (errors are not cached).
_resolve_plain = functools.lru_cache(maxsize=1024)(_resolve)


def _plain(value) -> bool:
    """An int, str or None (not a bool or NumPy scalar, which compare equal to ints), or a tuple of them."""
    if type(value) is tuple:
        return all(_plain(v) for v in value)
    return value is None or type(value) in (int, str)


def _unpooled_shape(in_shape, kernel, strides, pads) -> tuple[int, ...]:
    """The default spatial size of max unpooling (PyTorch's and ONNX's): ``(in - 1) * stride - pads + kernel``.

    Examples
    --------
    >>> _unpooled_shape((3, 4), (2, 3), (2, 2), ((0, 0), (1, 1)))
    (6, 7)
    """
    return tuple((n - 1) * s - before - after + k for n, k, s, (before, after) in zip(in_shape, kernel, strides, pads))


def _to_int(name: str, value: object) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise PoolingTypeError(f"{name}={value!r} must be an integer, got {type(value).__name__}")
    return int(value)


def _is_sequence(value) -> bool:
    """A list, tuple or array of at least one axis (a 0-d array is a scalar; text is neither)."""
    if isinstance(value, np.ndarray):
        return value.ndim > 0
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _scalar(value):
    return value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value


def _per_axis(name: str, value: IntOrSeq, rank: int) -> tuple[int, ...]:
    """One positive int per spatial axis from an int or a sequence of ``rank`` ints."""
    value = _scalar(value)
    if isinstance(value, (str, bytes)):
        raise PoolingTypeError(f"{name}={value!r} must be an int or a sequence of {rank} ints")
    if _is_sequence(value):
        values = tuple(_to_int(name, v) for v in value)
        if len(values) != rank:
            more = "more" if len(values) > rank else "fewer"
            raise PoolingConfigError(
                f"{name}={tuple(value)!r} has {len(values)} entries, {more} than the input's "
                f"{rank} spatial axes; give {rank} values or a single int"
            )
    else:
        values = (_to_int(name, value),) * rank
    for axis, v in enumerate(values):
        if v <= 0:
            raise PoolingConfigError(
                f"{name}={value!r} must be positive, got {v} on spatial axis {axis}; use {name} >= 1"
            )
    return values


def _resolve_padding(padding, in_shape, kernel, strides, dilations) -> tuple[tuple[int, int], ...]:
    rank = len(in_shape)
    padding = _scalar(padding)
    if isinstance(padding, bytes):
        raise PoolingTypeError(f"padding={padding!r} is bytes; pass the mode as a str, e.g. padding='same'")
    if isinstance(padding, str):
        mode = padding.lower()
        if mode not in _PADDING_STRINGS:
            raise PoolingConfigError(
                f"padding={padding!r} is not a padding mode; use one of {', '.join(map(repr, _PADDING_STRINGS))} "
                "or integers"
            )
        if mode == "valid":
            return ((0, 0),) * rank
        pads = []
        for size, k, s, d in zip(in_shape, kernel, strides, dilations):
            out = -(-size // s)
            total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
            small, large = total // 2, total - total // 2
            pads.append((small, large) if mode == "same" else (large, small))
        return tuple(pads)
    if _is_sequence(padding):
        if len(padding) != rank:
            more = "more" if len(padding) > rank else "fewer"
            raise PoolingConfigError(
                f"padding={tuple(padding)!r} has {len(padding)} entries, {more} than the input's {rank} "
                f"spatial axes; give one int or (before, after) pair per axis, or a single int"
            )
        pairs, limited = [], []
        for entry in padding:
            if _is_sequence(entry):
                if len(entry) != 2:
                    raise PoolingConfigError(f"padding entry {tuple(entry)!r} must be an int or a (before, after) pair")
                pairs.append((_pad_int(padding, entry[0]), _pad_int(padding, entry[1])))
                limited.append(False)
            else:
                value = _pad_int(padding, _scalar(entry))
                pairs.append((value, value))
                limited.append(True)
    else:
        value = _pad_int(padding, padding)
        pairs, limited = [(value, value)] * rank, [True] * rank
    for axis, ((before, after), k, checked) in enumerate(zip(pairs, kernel, limited)):
        if checked and max(before, after) > k // 2:
            raise PoolingConfigError(
                f"padding={padding!r} puts {max(before, after)} cells on one side of spatial axis {axis}, "
                f"more than half the kernel (kernel_size={k} allows at most {k // 2}); PyTorch refuses "
                f"this too. Use padding <= {k // 2}, padding='same' for TensorFlow/ONNX SAME padding, or a "
                "(before, after) pair per axis for explicit ONNX pads"
            )
    return tuple(pairs)


def _pad_int(padding, value) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise PoolingTypeError(
            f"padding={padding!r} contains a bool; padding takes ints or a mode string "
            "(pass ceil_mode by keyword if that is what you meant)"
        )
    if not isinstance(value, numbers.Integral):
        raise PoolingTypeError(
            f"padding={padding!r} contains {value!r} ({type(value).__name__}); padding takes ints, "
            f"(before, after) pairs or one of {', '.join(map(repr, _PADDING_STRINGS))}"
        )
    if value < 0:
        raise PoolingConfigError(f"padding={padding!r} is negative; use padding >= 0 (crop the input to remove cells)")
    return int(value)


@functools.lru_cache(maxsize=512)
def _build(in_shape, kernel, strides, dilations, pads, ceil_mode) -> Window:
    axes = []
    for axis, (size, k, s, d, (before, after)) in enumerate(zip(in_shape, kernel, strides, dilations, pads)):
        span = d * (k - 1) + 1
        padded = size + before + after
        if span > padded:
            dilated = f" (dilated span {span})" if d > 1 else ""
            raise PoolingConfigError(
                f"kernel_size={k}{dilated} is larger than the padded input ({padded} after padding "
                f"{before}+{after}) along spatial axis {axis}; use a smaller kernel or dilation, "
                "or more padding"
            )
        out = (padded - span + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (out - 1) * s >= size + before:
            out -= 1
        axes.append(Axis(size, k, s, d, before, after, ceil_mode, out))
    return Window(tuple(axes))


def _refuse_padding_only(window: Window) -> None:
    for axis, ax in enumerate(window.axes):
        empty = np.flatnonzero(ax.real_counts == 0)
        if empty.size:
            first = int(empty[0])
            read = ", ".join(str(int(p)) for p in ax.starts[first] + ax.dilation * np.arange(ax.kernel))
            raise PoolingConfigError(
                f"{empty.size} window(s) along spatial axis {axis} read only padding (window {first} "
                f"reads positions {read} of an axis of size {ax.size}, with padding {ax.pad_before}+"
                f"{ax.pad_after}, dilation {ax.dilation}); PyTorch returns -inf with an out-of-range "
                "index there. Use less padding or a smaller dilation"
            )

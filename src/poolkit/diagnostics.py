"""What a pooling configuration does to the data: coverage, cost and findings.

This module owns :func:`diagnose` and the :class:`Report` it returns. A
report is computed exactly from a :class:`~poolkit.geometry.Window` (no
sampling, no data): which input cells no window reads, how often every cell
is read, what the layer costs, and a list of :class:`Finding` s, each with a
stable code, a severity, the numbers and a fix. ``poolkit check`` prints a
report and ``poolkit audit`` one per pooling node of an ONNX model.

Finding codes (stable; JSON consumers may rely on them):

==========================  ========  ==============================================================
code                        severity  when
==========================  ========  ==============================================================
``padding-only-window``     error     some window reads no input cell (the ops refuse the layer)
``dropped-tail``            warning   the last cells of an axis are never read (floor-mode leftover)
``skipped-cells``           warning   cells between windows are never read (stride > span, dilation)
``padding-heavy-window``    warning   avg counting padding, some window mostly padding
``edge-divisor``            info      avg counting padding, edge windows divide by padding too
``partial-ceil-window``     info      ceil mode adds a window that runs past the input
``overlap-cost``            info      windows overlap: cells are read more than once
``asymmetric-padding``      info      padding PyTorch's symmetric ``padding=`` cannot express
``framework-divergence``    info      PyTorch, TensorFlow and ONNX give different shapes or values
``aliasing``                info      max pooling with stride > 1
``degenerate``              warning   an identity layer (kernel 1, stride 1, no padding)
``degenerate``              info      one window covers the whole input (global pooling)
==========================  ========  ==============================================================

A window that reads only padding makes every op refuse the layer (PyTorch
returns ``-inf`` with an out-of-range index there); :func:`diagnose` builds the
window anyway and reports it as a ``padding-only-window`` error.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import PoolingConfigError, PoolingTypeError
from .geometry import Axis, IntOrSeq, Padding, Window
from .kernels import is_sliding
from .ops._common import check_choice, check_flag

__all__ = ["diagnose", "Report", "Finding", "AxisCoverage"]

OPS = ("max", "min", "avg", "lp", "global_max", "global_avg", "global_lp")
SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    """One thing a pooling configuration does to the data.

    Attributes
    ----------
    code : str
        Stable identifier, e.g. ``"dropped-tail"`` (see the module docstring).
    severity : {"error", "warning", "info"}
    axis : int or None
        The spatial axis (0 is the first spatial axis), or None for the whole layer.
    message : str
        One sentence with the numbers.
    fix : str
        What to change.
    """

    code: str
    severity: str
    axis: int | None
    message: str
    fix: str

    def to_dict(self) -> dict:
        return {
            "code": self.code,
            "severity": self.severity,
            "axis": self.axis,
            "message": self.message,
            "fix": self.fix,
        }


@dataclass(frozen=True, eq=False)
class AxisCoverage:
    """Coverage of one spatial axis.

    Attributes
    ----------
    axis : int
        Spatial axis index.
    name : str
        What its cells are called in messages (``"rows"``, ``"columns"``, ...).
    size, out_size : int
        Input cells and windows along the axis.
    formula : str
        The output-size formula with this axis's numbers filled in.
    reads : numpy.ndarray
        How many windows read each input index (int64, length ``size``).
    """

    axis: int
    name: str
    size: int
    out_size: int
    formula: str
    reads: np.ndarray = field(repr=False)

    @property
    def never_read(self) -> tuple[int, ...]:
        """Input indices no window reads."""
        return tuple(int(i) for i in np.flatnonzero(self.reads == 0))

    def to_dict(self) -> dict:
        return {
            "axis": self.axis,
            "name": self.name,
            "size": self.size,
            "out_size": self.out_size,
            "formula": self.formula,
            "never_read": list(self.never_read),
            "reads": self.reads.tolist(),
        }


@dataclass(frozen=True, eq=False)
class Report:
    """The diagnosis of one pooling configuration on one input shape (see :func:`diagnose`).

    Render it with ``str(report)`` (a plain-text table), :meth:`to_dict` /
    :meth:`to_json` (stable keys), or :meth:`plot` (a PNG heat map).

    Examples
    --------
    >>> import poolkit as pk
    >>> report = pk.diagnose((1, 1, 4, 4), "avg", 3, stride=1, padding=1)
    >>> print(str(report).splitlines()[0])
    avg pool: input 1x1x4x4 -> output 1x1x4x4
    >>> report.to_dict()["counts"]
    {'error': 0, 'warning': 1, 'info': 2}
    >>> report.findings[0].code, report.findings[0].severity
    ('padding-heavy-window', 'warning')
    """

    op: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    channels_last: bool
    window: Window = field(repr=False)
    count_include_pad: bool
    dtype: str
    axes: tuple[AxisCoverage, ...] = field(repr=False)
    findings: tuple[Finding, ...]

    @property
    def never_read_fraction(self) -> float:
        """Fraction of the input's elements that no window reads."""
        read = math.prod(int(np.count_nonzero(a.reads)) for a in self.axes)
        return 1.0 - read / math.prod(a.size for a in self.axes)

    @property
    def planes(self) -> int:
        """Number of ``(n, c)`` planes, ``N * C``."""
        spatial = math.prod(a.size for a in self.axes)
        return math.prod(self.input_shape) // spatial if spatial else 0

    @property
    def bytes_read(self) -> int:
        """Bytes of the input cells read at least once (``N * C`` planes)."""
        read = math.prod(int(np.count_nonzero(a.reads)) for a in self.axes)
        return self.planes * read * np.dtype(self.dtype).itemsize

    @property
    def bytes_written(self) -> int:
        """Bytes of the output (max/min keep the dtype; avg/Lp of integers give float64)."""
        dtype = np.dtype(self.dtype)
        keeps = dtype.kind == "f" or self.op in ("max", "min", "global_max")
        return math.prod(self.output_shape) * (dtype.itemsize if keeps else 8)

    @property
    def ops_per_output(self) -> float:
        """Input cells a direct scan combines per output, averaged over the windows (padding excluded)."""
        return float(self.window.real_counts.mean())

    @property
    def reads_per_input(self) -> float:
        """How many windows read an input cell, averaged over the cells that are read (0 if none is)."""
        per_axis = [a.reads.sum() / max(1, np.count_nonzero(a.reads)) for a in self.axes]
        return float(math.prod(per_axis))

    @property
    def counts(self) -> dict[str, int]:
        """Number of findings per severity."""
        return {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES}

    def to_dict(self) -> dict:
        """The report as plain Python data with stable keys (JSON-ready)."""
        w = self.window
        return {
            "op": self.op,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "channels_last": self.channels_last,
            "params": {
                "kernel_size": list(w.kernel_size),
                "stride": list(w.stride),
                "padding": [list(p) for p in w.padding],
                "dilation": list(w.dilation),
                "ceil_mode": w.ceil_mode,
                "count_include_pad": self.count_include_pad,
            },
            "axes": [a.to_dict() for a in self.axes],
            "coverage": {"never_read_fraction": self.never_read_fraction, "reads_per_input": self.reads_per_input},
            "cost": {
                "dtype": self.dtype,
                "bytes_read": self.bytes_read,
                "bytes_written": self.bytes_written,
                "ops_per_output": self.ops_per_output,
            },
            "findings": [f.to_dict() for f in self.findings],
            "counts": self.counts,
        }

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self) -> str:
        return self.to_text()

    def to_text(self) -> str:
        """A plain-text rendering: configuration, per-axis table, coverage, cost and findings."""
        w = self.window
        lines = [
            f"{self.op} pool: input {_shape(self.input_shape)} -> output {_shape(self.output_shape)}",
            f"  kernel {_shape(w.kernel_size)}, stride {_shape(w.stride)}, padding "
            + " x ".join(f"({b}, {a})" for b, a in w.padding)
            + f", dilation {_shape(w.dilation)}, ceil_mode {w.ceil_mode}"
            + (f", count_include_pad {self.count_include_pad}" if self.op == "avg" else ""),
            "",
        ]
        rows = [("axis", "size", "out", "output size", "reads", "never read")]
        for a in self.axes:
            never = a.never_read
            rows.append(
                (
                    a.name,
                    str(a.size),
                    str(a.out_size),
                    a.formula,
                    f"{a.reads.min()}..{a.reads.max()}",
                    _index_list(never) if never else "none",
                )
            )
        lines += _table(rows)
        lines += [
            "",
            f"coverage: {self.never_read_fraction:.1%} of the input is never read; a read cell is read "
            f"{self.reads_per_input:.3g} times on average",
            f"cost: {self.bytes_read:,} bytes read, {self.bytes_written:,} bytes written ({self.dtype}); "
            f"{self.ops_per_output:.3g} cells combined per output",
            "",
        ]
        counts = self.counts
        lines.append(
            f"findings: {counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} info"
            + (":" if self.findings else "")
        )
        for f in self.findings:
            where = f" [{self.axes[f.axis].name}]" if f.axis is not None else ""
            lines.append(f"  {f.severity:<7} {f.code}{where}: {f.message}")
            lines.append(f"          fix: {f.fix}")
        return "\n".join(lines)

    def plot(self, path, axes: tuple[int, int] = (-2, -1)) -> None:
        """Write a PNG heat map of how many windows read each input cell, never-read cells marked.

        Reads per cell are the product of the per-axis reads, so any 2-D
        slice through the other spatial axes at a read index looks the same.
        A 1-D input is drawn as one row. Needs matplotlib (the ``[plot]`` extra).

        Parameters
        ----------
        path : str or path-like
            Where to write the PNG.
        axes : (int, int)
            The two spatial axes to draw (rows, columns); default the last two.
        """
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.colors import ListedColormap
            from matplotlib.figure import Figure
        except ImportError as err:
            raise ImportError(
                f"Report.plot needs matplotlib ({err}); install it with pip install 'poolkit[plot]'"
            ) from err
        if len(self.axes) == 1:
            row, col = None, self.axes[0]
        else:
            if len(axes) != 2 or len({a % len(self.axes) for a in axes}) != 2:
                raise PoolingConfigError(f"axes={axes!r} must name two different spatial axes")
            row, col = (self.axes[a] for a in axes)
        rows = row.reads if row is not None else np.ones(1, dtype=np.int64)
        grid = np.multiply.outer(rows, col.reads)
        fig = Figure(figsize=(6, 6 * max(grid.shape[0] / grid.shape[1], 0.15)))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        shown = np.ma.masked_equal(grid, 0)
        image = ax.imshow(shown, cmap="viridis", interpolation="nearest")
        never = np.ma.masked_not_equal(grid, 0)
        ax.imshow(never, cmap=ListedColormap(["red"]), interpolation="nearest")
        fig.colorbar(image, ax=ax, label="windows reading the cell")
        ax.set_xlabel(f"{col.name} (never read: red)")
        ax.set_ylabel(row.name if row is not None else "")
        ax.set_title(
            f"{self.op} pool k={_shape(self.window.kernel_size)} s={_shape(self.window.stride)}: "
            f"{self.never_read_fraction:.1%} never read"
        )
        fig.savefig(path, format="png")


def diagnose(
    input_shape: Sequence[int],
    op: str = "max",
    kernel_size: IntOrSeq | None = None,
    stride: IntOrSeq | None = None,
    padding: Padding = 0,
    dilation: IntOrSeq = 1,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    channels_last: bool = False,
    *,
    dtype: str = "float32",
) -> Report:
    """Diagnose a pooling configuration on an input shape, exactly, without data.

    Parameters
    ----------
    input_shape : sequence of int
        ``(N, C, *spatial)``, or ``(N, *spatial, C)`` with ``channels_last``.
    op : {"max", "min", "avg", "lp", "global_max", "global_avg", "global_lp"}
        The pooling operation. The global ones take no window arguments:
        their one window is the whole spatial input.
    kernel_size, stride, padding, dilation, ceil_mode
        As in :func:`poolkit.max_pool` (``stride=None`` means ``kernel_size``).
    count_include_pad : bool
        For ``op="avg"``: whether padding counts in the divisor (PyTorch's default).
    channels_last : bool
        Whether ``input_shape`` is ``(N, *spatial, C)``.
    dtype : str
        Element type for the byte counts.

    Returns
    -------
    Report
        Output shape, per-axis formula and coverage, costs and findings.
        Per axis, the output size is
        ``floor((L + pl + pr - d*(k-1) - 1) / s) + 1``, or ``ceil(...)`` in
        ceil mode less a last window that would start in the right padding.

    Raises
    ------
    PoolingConfigError, PoolingTypeError
        Every argument error of :meth:`poolkit.Window.build` (including a
        window that reads only padding), a bad ``op`` or ``input_shape``.

    Examples
    --------
    >>> import poolkit as pk
    >>> report = pk.diagnose((1, 3, 112, 112), "max", kernel_size=3, stride=2)
    >>> report.output_shape
    (1, 3, 55, 55)
    >>> report.axes[0].formula
    'floor((112 + 0 + 0 - 1*(3 - 1) - 1) / 2) + 1 = 55'
    >>> [f.code for f in report.findings]
    ['dropped-tail', 'dropped-tail', 'overlap-cost', 'aliasing']
    >>> print(report.findings[0].message)
    input rows 111 of 0..111 are never read (0.9% of the input)
    >>> print(report.findings[0].fix)
    use ceil_mode=True, or pad the rows (0, 1) (before, after), or crop the rows to 111
    """
    check_choice("op", op, OPS)
    check_flag("count_include_pad", count_include_pad)
    check_flag("channels_last", channels_last)
    try:
        dtype = np.dtype(dtype).name
    except TypeError as err:
        raise PoolingTypeError(f"dtype={dtype!r} is not a NumPy dtype; use e.g. 'float32'") from err
    shape = _full_shape(input_shape)
    spatial = shape[1:-1] if channels_last else shape[2:]
    if op.startswith("global_"):
        if kernel_size is not None:
            raise PoolingConfigError(f"op={op!r} pools the whole input; leave kernel_size=None (got {kernel_size!r})")
        window = Window.build(spatial, spatial, 1)
    else:
        if kernel_size is None:
            raise PoolingConfigError(f"op={op!r} needs kernel_size (an int or one int per spatial axis)")
        window = Window.build(spatial, kernel_size, stride, padding, dilation, ceil_mode, allow_padding_only=True)
    names = _axis_names(window.rank)
    coverage = tuple(
        AxisCoverage(i, names[i], a.size, a.out_size, _formula(a), _reads(a)) for i, a in enumerate(window.axes)
    )
    if channels_last:
        out_shape = (shape[0], *window.out_shape, shape[-1])
    else:
        out_shape = (shape[0], shape[1], *window.out_shape)
    findings = () if op.startswith("global_") else _findings(window, coverage, op, bool(count_include_pad))
    return Report(
        op=op,
        input_shape=shape,
        output_shape=out_shape,
        channels_last=bool(channels_last),
        window=window,
        count_include_pad=bool(count_include_pad),
        dtype=dtype,
        axes=coverage,
        findings=findings,
    )


def _full_shape(input_shape) -> tuple[int, ...]:
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, (Sequence, np.ndarray)):
        raise PoolingTypeError(f"input_shape={input_shape!r} must be a sequence of ints like (1, 3, 224, 224)")
    shape = []
    for size in input_shape:
        if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)):
            raise PoolingTypeError(f"input_shape={tuple(input_shape)!r} holds {size!r}; every size must be an int")
        if size < 1:
            raise PoolingConfigError(f"input_shape={tuple(input_shape)!r} holds {size}; every size must be >= 1")
        shape.append(int(size))
    if len(shape) < 3:
        raise PoolingConfigError(
            f"input_shape={tuple(shape)!r} needs a batch, a channel and at least one spatial axis, "
            "e.g. (1, 3, 224, 224)"
        )
    return tuple(shape)


def _axis_names(rank: int) -> tuple[str, ...]:
    if rank == 1:
        return ("positions",)
    if rank == 2:
        return ("rows", "columns")
    if rank == 3:
        return ("slices", "rows", "columns")
    return tuple(f"axis-{i} cells" for i in range(rank))


@functools.lru_cache(maxsize=512)
def _reads(axis: Axis) -> np.ndarray:
    """How many windows read each input index of the axis (read-only, cached like the Window)."""
    reads = np.zeros(axis.size, dtype=np.int64)
    for tap in axis.taps:
        reads[tap.in_slice] += 1
    reads.flags.writeable = False
    return reads


def _formula(axis: Axis) -> str:
    numerator = f"{axis.size} + {axis.pad_before} + {axis.pad_after} - {axis.dilation}*({axis.kernel} - 1) - 1"
    value = (axis.size + axis.pad_before + axis.pad_after - axis.span) / axis.stride
    if not axis.ceil_mode:
        return f"floor(({numerator}) / {axis.stride}) + 1 = {math.floor(value) + 1}"
    text = f"ceil(({numerator}) / {axis.stride}) + 1"
    if math.ceil(value) + 1 != axis.out_size:
        text += " - 1 (the last window would start in the right padding)"
    return f"{text} = {axis.out_size}"


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def _index_list(indices: Sequence[int], limit: int = 6) -> str:
    if len(indices) <= limit:
        return ", ".join(str(i) for i in indices)
    return ", ".join(str(i) for i in indices[: limit - 2]) + f", …, {indices[-1]} ({len(indices)} cells)"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def _percent(fraction: float) -> str:
    return f"{fraction:.1%}" if fraction >= 0.001 else f"{fraction:.2g}"


@functools.lru_cache(maxsize=512)
def _variant(axis: Axis, **changes) -> Axis | None:
    """``axis`` with some arguments changed, or None where poolkit refuses the result."""
    args = {
        "kernel_size": axis.kernel,
        "stride": axis.stride,
        "padding": ((axis.pad_before, axis.pad_after),),
        "dilation": axis.dilation,
        "ceil_mode": axis.ceil_mode,
    }
    args.update(changes)
    try:
        return Window.build((axis.size,), **args).axes[0]
    except PoolingConfigError:
        return None


def _findings(window: Window, coverage: tuple[AxisCoverage, ...], op: str, count_include_pad: bool):
    findings = []
    for i, (axis, cov) in enumerate(zip(window.axes, coverage)):
        findings += _padding_only(i, axis, cov)
    for i, (axis, cov) in enumerate(zip(window.axes, coverage)):
        findings += _axis_loss(i, axis, cov)
    findings += _padding_divisor(window, op, count_include_pad)
    for i, (axis, cov) in enumerate(zip(window.axes, coverage)):
        findings += _partial_ceil(i, axis, cov, op, count_include_pad)
    findings += _overlap(window, coverage)
    findings += _asymmetric(window, coverage, op)
    findings += _divergence(window, op)
    if op == "max" and any(s > 1 for s in window.stride):
        strides = _shape(window.stride)
        findings.append(
            Finding(
                "aliasing",
                "info",
                None,
                f"max pooling with stride {strides} keeps one value per window without low-pass filtering, "
                "so a one-cell shift of the input can change the output (aliasing)",
                "where shift invariance matters, use pk.antialiased_max_pool (max at stride 1, then a blur "
                "with the stride)",
            )
        )
    findings += _degenerate(window, op, count_include_pad)
    return tuple(findings)


def _padding_only(i: int, axis: Axis, cov: AxisCoverage) -> list[Finding]:
    empty = np.flatnonzero(axis.real_counts == 0)
    if empty.size == 0:
        return []
    first = int(empty[0])
    read = ", ".join(str(int(p)) for p in axis.starts[first] + axis.dilation * np.arange(axis.kernel))
    return [
        Finding(
            "padding-only-window",
            "error",
            i,
            f"{empty.size} of {axis.out_size} windows along the {cov.name} read only padding: window {first} "
            f"reads positions {read} of 0..{axis.size - 1} (padding {axis.pad_before}+{axis.pad_after}, "
            f"dilation {axis.dilation}); poolkit refuses this layer and PyTorch returns -inf there",
            f"use less padding or a smaller dilation on the {cov.name}",
        )
    ]


def _axis_loss(i: int, axis: Axis, cov: AxisCoverage) -> list[Finding]:
    never = np.flatnonzero(cov.reads == 0)
    if never.size == 0:
        return []
    name = cov.name
    # the tail: cells the next window (which the output size leaves out) would read; the rest lie between windows
    offset = never - (axis.out_size * axis.stride - axis.pad_before)
    in_tail = (offset >= 0) & (offset % axis.dilation == 0) & (offset < axis.span)
    tail, gaps = never[in_tail], never[~in_tail]
    found = []
    if tail.size:
        options = []
        ceil_axis = _variant(axis, ceil_mode=True)
        if ceil_axis is not None and np.all(_reads(ceil_axis)[tail] > 0):
            options.append("use ceil_mode=True")
        after = axis.out_size * axis.stride - axis.pad_before + axis.span - axis.size
        padded = _variant(axis, padding=((axis.pad_before, after),))
        if padded is not None and np.all(_reads(padded)[tail] > 0):
            options.append(f"pad the {name} ({axis.pad_before}, {after}) (before, after)")
        read = np.flatnonzero(cov.reads)
        if read.size and read[-1] < axis.size - 1:
            options.append(f"crop the {name} to {int(read[-1]) + 1}")
        if not options:
            options.append(f"change the stride or dilation so that the windows reach the end of the {name}")
        found.append(
            Finding(
                "dropped-tail",
                "warning",
                i,
                f"input {name} {_index_list(tail.tolist())} of 0..{axis.size - 1} are never read "
                f"({_percent(tail.size / axis.size)} of the input)",
                ", or ".join(options),
            )
        )
    if gaps.size:
        span = axis.span
        options = []
        if axis.stride > span:
            options.append(f"stride <= {span}")
            if axis.dilation == 1:
                options.append(f"kernel_size >= {axis.stride}")
        if axis.dilation > 1 and _variant(axis, dilation=1) is not None:
            options.append("dilation 1")
        if not options:
            options.append("stride 1")
        cause = f"stride {axis.stride}" + (f" with dilation {axis.dilation}" if axis.dilation > 1 else "")
        found.append(
            Finding(
                "skipped-cells",
                "warning",
                i,
                f"input {name} {_index_list(gaps.tolist())} lie between windows ({cause}, window span {span}) "
                f"and are never read ({_percent(gaps.size / axis.size)} of the input)",
                f"use {' or '.join(options)} on the {name}",
            )
        )
    return found


def _padding_divisor(window: Window, op: str, count_include_pad: bool) -> list[Finding]:
    if op != "avg" or not count_include_pad:
        return []
    ratio = window.real_counts / window.padded_counts
    worst = np.unravel_index(int(np.argmin(ratio)), ratio.shape)
    lowest = float(ratio[worst])
    if lowest == 1.0:
        return []
    real, padded = int(window.real_counts[worst]), int(window.padded_counts[worst])
    edge = int(np.count_nonzero(ratio < 1.0))
    where = f"window {tuple(int(w) for w in worst)}" if window.rank > 1 else f"window {int(worst[0])}"
    message = (
        f"{edge} of {ratio.size} windows count padding in their divisor; {where} reads {real} real cells "
        f"and divides by {padded}, so a constant input of 1 gives {lowest:.3g} there"
    )
    fix = "use count_include_pad=False to divide by the real cells (ONNX's and TensorFlow's rule)"
    if lowest < 0.5:
        return [Finding("padding-heavy-window", "warning", None, message + " (edge outputs shrink toward 0)", fix)]
    return [Finding("edge-divisor", "info", None, message, fix)]


def _partial_ceil(i: int, axis: Axis, cov: AxisCoverage, op: str, count_include_pad: bool) -> list[Finding]:
    if not axis.ceil_mode:
        return []
    floor_out = (axis.size + axis.pad_before + axis.pad_after - axis.span) // axis.stride + 1
    if axis.out_size <= floor_out:
        return []
    last = axis.out_size - 1
    start = int(axis.starts[last])
    stop = start + axis.span - 1
    past = stop - (axis.size - 1)
    beyond = stop - (axis.size - 1 + axis.pad_after)
    where = f"{past} cell(s) past the input" + (f", {beyond} past the padding" if beyond > 0 else "")
    real, padded = int(axis.real_counts[last]), int(axis.padded_counts[last])
    if op == "avg":
        how = (
            f"its divisor along the {cov.name} is {padded} (taps inside the padded extent)"
            if count_include_pad
            else f"its divisor along the {cov.name} is {real} (its real cells)"
        )
    elif op == "lp":
        how = "it sums its real cells only (PyTorch's lp_pool scales it by the full kernel size)"
    else:
        how = f"it compares its {real} real cell(s) only"
    return [
        Finding(
            "partial-ceil-window",
            "info",
            i,
            f"ceil_mode adds window {last} on the {cov.name}, reading {start}..{stop} and running {where}; {how}",
            f"set ceil_mode=False to drop it (and lose {cov.name} {max(start, 0)}..{axis.size - 1} "
            "not read by other windows)"
            if np.any(cov.reads[max(start, 0) :] == 1)
            else "none needed: it reads no cell the other windows miss; ceil_mode=False drops it",
        )
    ]


def _overlap(window: Window, coverage: tuple[AxisCoverage, ...]) -> list[Finding]:
    overlapping = [i for i, c in enumerate(coverage) if c.reads.max() > 1]
    if not overlapping:
        return []
    factor = math.prod(c.reads.sum() / np.count_nonzero(c.reads) for c in coverage)
    axes = ", ".join(
        f"{coverage[i].name} (stride {window.axes[i].stride} < kernel span {window.axes[i].span})" for i in overlapping
    )
    message = (
        f"windows overlap on the {axes}: each read input cell is read {factor:.3g} times on average, "
        f"{factor:.3g}x the reads of a non-overlapping layer (stride = kernel_size)"
    )
    sliding = [coverage[i].name for i, a in enumerate(window.axes) if is_sliding(a)]
    if sliding:
        fix = (
            f"none needed for cost: on the {', '.join(sliding)} poolkit's kernels combine blocks of 1, 2, 4, ... "
            "cells, so the cost per cell grows with log2 of the window, not with the window"
        )
    else:
        fix = "none needed if the overlap is intended; stride = kernel_size reads every cell once"
    return [Finding("overlap-cost", "info", None, message, fix)]


def _asymmetric(window: Window, coverage: tuple[AxisCoverage, ...], op: str) -> list[Finding]:
    uneven = [i for i, a in enumerate(window.axes) if a.pad_before != a.pad_after]
    if not uneven:
        return []
    where = ", ".join(
        f"({window.axes[i].pad_before}, {window.axes[i].pad_after}) on the {coverage[i].name}" for i in uneven
    )
    candidate = None
    try:
        candidate = Window.build(
            window.in_shape,
            window.kernel_size,
            window.stride,
            tuple(a.pad_before for a in window.axes),
            window.dilation,
            True,
        )
    except PoolingConfigError:
        pass
    if candidate is not None and candidate.out_shape == window.out_shape and not window.ceil_mode:
        before = tuple(a.pad_before for a in window.axes)
        pads = "0" if not any(before) else repr(before)
        fix = f"in PyTorch use padding={pads} with ceil_mode=True: the same windows" + (
            "" if op in ("max", "min") else " (check the last window's divisor)"
        )
    else:
        fix = "in PyTorch pad the input explicitly (torch.nn.functional.pad), then pool with padding=0"
    return [
        Finding(
            "asymmetric-padding",
            "info",
            None,
            f"padding {where} is asymmetric (before, after); PyTorch's padding= pads both sides equally "
            "and cannot express it",
            fix,
        )
    ]


def _divergence(window: Window, op: str) -> list[Finding]:
    found = []
    if window.ceil_mode:
        floor = tuple((a.size + a.pad_before + a.pad_after - a.span) // a.stride + 1 for a in window.axes)
        if floor != window.out_shape:
            found.append(
                Finding(
                    "framework-divergence",
                    "info",
                    None,
                    f"ceil_mode gives {_shape(window.out_shape)} windows in PyTorch and ONNX; TensorFlow has no "
                    f"ceil mode and gives {_shape(floor)} with the same padding",
                    "in TensorFlow, pad the end of each axis explicitly to get the extra windows",
                )
            )
    if op == "avg" and np.any(window.padded_counts != window.real_counts):
        worst = np.unravel_index(int(np.argmin(window.real_counts / window.padded_counts)), window.out_shape)
        found.append(
            Finding(
                "framework-divergence",
                "info",
                None,
                f"windows that read padding average differently: PyTorch's default count_include_pad=True "
                f"divides window {tuple(int(w) for w in worst)} by {int(window.padded_counts[worst])}, ONNX's "
                f"default count_include_pad=0 and TensorFlow's SAME by its {int(window.real_counts[worst])} "
                "real cells",
                "state count_include_pad explicitly when porting between frameworks",
            )
        )
    if op == "avg" and any(d > 1 for d in window.dilation):
        found.append(
            Finding(
                "framework-divergence",
                "info",
                None,
                f"average pooling with dilation {_shape(window.dilation)}: ONNX AveragePool has dilations "
                "(opset 19 on); PyTorch's avg_pool has none",
                "in PyTorch, use a strided convolution with a dilated box kernel",
            )
        )
    if op == "lp":
        found.append(
            Finding(
                "framework-divergence",
                "info",
                None,
                "PyTorch's lp_pool sums x**p without the absolute value (odd p on negative inputs differs) "
                "and scales ceil-mode partial windows by the full kernel; ONNX LpPool and poolkit sum |x|**p "
                "over the real cells",
                "compare with ONNX LpPool, not PyTorch, or keep the inputs non-negative and ceil_mode=False",
            )
        )
    return found


def _degenerate(window: Window, op: str, count_include_pad: bool) -> list[Finding]:
    if all(a.is_identity for a in window.axes):
        return [
            Finding(
                "degenerate",
                "warning",
                None,
                "kernel 1 with stride 1 and no padding: the layer returns its input unchanged",
                "remove the layer",
            )
        ]
    whole = all(a.out_size == 1 and a.real_counts[0] == a.size for a in window.axes)
    if not whole:
        return []
    same = op != "avg" or not count_include_pad or np.array_equal(window.padded_counts, window.real_counts)
    global_op = {"max": "global_max_pool", "min": None, "avg": "global_avg_pool", "lp": "global_lp_pool"}[op]
    if not same or global_op is None:
        return []
    return [
        Finding(
            "degenerate",
            "info",
            None,
            f"one {_shape(window.kernel_size)} window covers the whole {_shape(window.in_shape)} input: "
            "this is global pooling",
            f"use pk.{global_op} (ONNX Global*Pool): the same result, and it works for any input size",
        )
    ]

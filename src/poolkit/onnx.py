"""ONNX pooling nodes through poolkit: attribute mapping, execution and model audit.

This module owns the translation between ONNX's pooling operators and
poolkit: :func:`pool_arguments` maps a node's attributes onto poolkit's
arguments exactly (``auto_pad``, ``pads`` as all begins then all ends,
``strides`` defaulting to 1, ``count_include_pad`` defaulting to 0,
``ceil_mode``, ``dilations``, ``storage_order``), :func:`run_node` executes a
node with ONNX semantics (including the ``Indices`` layout of MaxPool), and
:func:`audit` diagnoses every pooling node of a model with
:func:`poolkit.diagnose`. It needs the ``onnx`` package (the ``[onnx]``
extra); ``import poolkit`` does not import it.

Supported operators: MaxPool, AveragePool, LpPool, GlobalMaxPool,
GlobalAveragePool, GlobalLpPool, MaxRoiPool and MaxUnpool.

Besides the findings of :func:`poolkit.diagnose`, an audit reports
``shape-unknown`` (warning: unknown or symbolic spatial sizes),
``shape-dynamic`` (info: symbolic batch or channel sizes), ``shape-mismatch``
(warning: the model's declared output shape differs from ONNX's rules),
``refused`` (error: poolkit cannot build the node's windows) and
``not-diagnosed`` (info: MaxRoiPool and MaxUnpool, listed only).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper

from . import ops
from .diagnostics import SEVERITIES, Finding, Report, diagnose
from .errors import PoolingConfigError, PoolingTypeError, PoolkitError
from .geometry import _unpooled_shape

__all__ = ["POOL_OPS", "ModelLoadError", "pool_arguments", "run_node", "audit", "ModelAudit", "NodeAudit"]

POOL_OPS = (
    "MaxPool",
    "AveragePool",
    "LpPool",
    "GlobalMaxPool",
    "GlobalAveragePool",
    "GlobalLpPool",
    "MaxRoiPool",
    "MaxUnpool",
)
_WINDOWED = {"MaxPool": "max", "AveragePool": "avg", "LpPool": "lp"}
_GLOBAL = {"GlobalMaxPool": "global_max", "GlobalAveragePool": "global_avg", "GlobalLpPool": "global_lp"}
_AUTO_PAD = {"SAME_UPPER": "same", "SAME_LOWER": "same_lower", "VALID": "valid"}


class ModelLoadError(PoolkitError, ValueError):
    """A file that is missing, unreadable, truncated or not an ONNX model."""


def pool_arguments(node: onnx.NodeProto, spatial_rank: int) -> dict:
    """poolkit's arguments for a windowed ONNX pooling node on ``spatial_rank`` spatial axes.

    Parameters
    ----------
    node : onnx.NodeProto
        A MaxPool, AveragePool, LpPool or MaxUnpool node.
    spatial_rank : int
        Number of spatial axes of its input (``X.ndim - 2``).

    Returns
    -------
    dict
        ``kernel_size``, ``stride`` (ONNX's default is 1, not the kernel),
        ``padding`` (``(begin, end)`` pairs from ``pads = [x1_begin, x2_begin,
        ..., x1_end, x2_end, ...]``, or ``"same"`` / ``"same_lower"`` /
        ``"valid"`` from ``auto_pad``), ``dilation``, ``ceil_mode``,
        ``count_include_pad`` (default False), ``p`` (default 2) and
        ``storage_order`` (default 0).

    Raises
    ------
    PoolingConfigError
        A missing ``kernel_shape``, attributes of the wrong length, an unknown
        ``auto_pad``.

    Examples
    --------
    >>> from onnx import helper
    >>> from poolkit.onnx import pool_arguments
    >>> node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[0, 1, 2, 1])
    >>> args = pool_arguments(node, 2)
    >>> args["padding"], args["stride"], args["count_include_pad"]
    (((0, 2), (1, 1)), (1, 1), False)
    """
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    label = f"{node.op_type} node {node.name!r}" if node.name else f"{node.op_type} node"
    if "kernel_shape" not in attrs:
        raise PoolingConfigError(f"{label} has no kernel_shape attribute; ONNX requires one")

    def per_axis(name: str, default: int, length: int = spatial_rank) -> tuple[int, ...]:
        values = tuple(int(v) for v in attrs.get(name, [default] * length))
        if len(values) != length:
            raise PoolingConfigError(
                f"{label} has {name}={list(values)} with {len(values)} entries; an input with {spatial_rank} "
                f"spatial axes needs {length}"
            )
        return values

    kernel = per_axis("kernel_shape", 1)
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad == "NOTSET":
        pads = per_axis("pads", 0, 2 * spatial_rank)
        padding = tuple((pads[i], pads[i + spatial_rank]) for i in range(spatial_rank))
    elif auto_pad in _AUTO_PAD:
        padding = _AUTO_PAD[auto_pad]
    else:
        raise PoolingConfigError(
            f"{label} has auto_pad={auto_pad!r}; ONNX allows NOTSET, SAME_UPPER, SAME_LOWER or VALID"
        )
    return {
        "kernel_size": kernel,
        "stride": per_axis("strides", 1),
        "padding": padding,
        "dilation": per_axis("dilations", 1),
        "ceil_mode": bool(attrs.get("ceil_mode", 0)),
        "count_include_pad": bool(attrs.get("count_include_pad", 0)),
        "p": attrs.get("p", 2),
        "storage_order": int(attrs.get("storage_order", 0)),
    }


def run_node(node: onnx.NodeProto, *inputs: np.ndarray) -> tuple[np.ndarray, ...]:
    """Execute one ONNX pooling node through poolkit, with ONNX semantics.

    MaxPool skips NaNs as ONNX Runtime does (``nan="ignore"``); its
    ``Indices`` output is flat over the whole ``N x C x D1 x ... x Dn``
    tensor, row-major within each plane (``storage_order=0``) or column-major
    (``storage_order=1``). MaxUnpool reads indices in that layout (row-major)
    and, given ``output_shape``, scatters into a plane of that shape, as ONNX
    Runtime and PyTorch do.

    Parameters
    ----------
    node : onnx.NodeProto
        One of :data:`POOL_OPS`, in the default ONNX domain.
    *inputs : numpy.ndarray
        The node's inputs in order (``X``; ``rois`` for MaxRoiPool; ``I`` and
        optionally ``output_shape`` for MaxUnpool).

    Returns
    -------
    tuple of numpy.ndarray
        One array per named output of the node.

    Raises
    ------
    PoolingConfigError
        An unsupported operator or domain, a wrong number of inputs, bad
        attributes, or indices outside their ``(n, c)`` plane.

    Examples
    --------
    >>> import numpy as np
    >>> from onnx import helper
    >>> from poolkit.onnx import run_node
    >>> node = helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2], strides=[2, 2])
    >>> x = np.arange(32, dtype=np.float32).reshape(1, 2, 4, 4)
    >>> y, indices = run_node(node, x)
    >>> indices[0, 1]            # flat over N*C*H*W: the second plane starts at 16
    array([[21, 23],
           [29, 31]])
    """
    if node.domain not in ("", "ai.onnx"):
        raise PoolingConfigError(f"run_node runs the default ONNX domain; got domain {node.domain!r}")
    if node.op_type not in POOL_OPS:
        raise PoolingConfigError(f"run_node runs {', '.join(POOL_OPS)}; got {node.op_type!r}")
    needed = {"MaxRoiPool": (2, 2), "MaxUnpool": (2, 3)}.get(node.op_type, (1, 1))
    if not needed[0] <= len(inputs) <= needed[1]:
        raise PoolingConfigError(
            f"{node.op_type} takes {needed[0]}"
            + (f" to {needed[1]}" if needed[1] > needed[0] else "")
            + f" input(s); got {len(inputs)}"
        )
    x = np.asarray(inputs[0])
    outputs = [name for name in node.output if name]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type in _GLOBAL:
        if node.op_type == "GlobalMaxPool":
            return (ops.global_max_pool(x, keepdims=True),)
        if node.op_type == "GlobalAveragePool":
            return (ops.global_avg_pool(x, keepdims=True),)
        return (ops.global_lp_pool(x, attrs.get("p", 2), keepdims=True),)
    if node.op_type == "MaxRoiPool":
        if "pooled_shape" not in attrs:
            raise PoolingConfigError("MaxRoiPool needs its pooled_shape attribute")
        pooled = tuple(int(v) for v in attrs["pooled_shape"])
        return (ops.roi_pool(x, np.asarray(inputs[1]), pooled, float(attrs.get("spatial_scale", 1.0))),)
    rank = x.ndim - 2
    if rank < 1:
        raise PoolingConfigError(f"{node.op_type} needs (N, C, D1, ...) input; got shape {x.shape}")
    args = pool_arguments(node, rank)
    window = {k: args[k] for k in ("kernel_size", "stride", "padding")}
    if node.op_type == "MaxUnpool":
        return (_max_unpool(x, np.asarray(inputs[1]), inputs[2] if len(inputs) > 2 else None, window),)
    window.update(dilation=args["dilation"], ceil_mode=args["ceil_mode"])
    if node.op_type == "AveragePool":
        return (ops.avg_pool(x, count_include_pad=args["count_include_pad"], **window),)
    if node.op_type == "LpPool":
        return (ops.lp_pool(x, args["p"], **window),)
    if len(outputs) < 2:
        return (ops.max_pool(x, nan="ignore", **window),)
    y, indices = ops.max_pool(x, nan="ignore", return_indices=True, **window)
    return y, _onnx_indices(indices, x.shape, args["storage_order"])


def _onnx_indices(indices: np.ndarray, in_shape: tuple[int, ...], storage_order: int) -> np.ndarray:
    """PyTorch-layout indices (flat within each (n, c) plane, row-major) in ONNX's layout."""
    if storage_order not in (0, 1):
        raise PoolingConfigError(f"storage_order={storage_order} must be 0 (row-major) or 1 (column-major)")
    spatial = in_shape[2:]
    if storage_order == 1:
        indices = np.ravel_multi_index(np.unravel_index(indices, spatial), spatial, order="F")
    planes = np.arange(in_shape[0] * in_shape[1], dtype=np.int64).reshape(in_shape[:2] + (1,) * len(spatial))
    return indices + planes * math.prod(spatial)


def _max_unpool(x: np.ndarray, indices: np.ndarray, output_shape, window: dict) -> np.ndarray:
    if indices.shape != x.shape:
        raise PoolingConfigError(f"MaxUnpool indices have shape {indices.shape}; they must match X's {x.shape}")
    if isinstance(window["padding"], str):
        raise PoolingConfigError(f"MaxUnpool takes explicit pads; got auto_pad {window['padding']!r}")
    if output_shape is not None:
        output_shape = tuple(int(v) for v in np.asarray(output_shape).ravel())
        if len(output_shape) != x.ndim or output_shape[:2] != x.shape[:2]:
            raise PoolingConfigError(
                f"MaxUnpool output_shape={list(output_shape)} must be (N, C, ...) with N, C = {x.shape[:2]}"
            )
    if output_shape is None:
        plane = math.prod(_unpooled_shape(x.shape[2:], window["kernel_size"], window["stride"], window["padding"]))
    else:
        plane = math.prod(output_shape[2:])
    starts = np.arange(x.shape[0] * x.shape[1], dtype=np.int64).reshape(x.shape[:2] + (1,) * (x.ndim - 2)) * plane
    local = indices.astype(np.int64) - starts
    outside = (local < 0) | (local >= plane)
    if np.any(outside):
        at = tuple(int(i) for i in np.argwhere(outside)[0])
        start = (at[0] * x.shape[1] + at[1]) * plane
        raise PoolingConfigError(
            f"MaxUnpool index {int(indices[at])} at {at} is outside its (n, c) plane [{start}, {start + plane}); "
            "poolkit scatters each value within its own plane, as MaxPool's indices are"
        )
    return ops.max_unpool(
        x,
        local,
        window["kernel_size"],
        window["stride"],
        window["padding"],
        output_size=output_shape[2:] if output_shape is not None else None,
    )


@dataclass(frozen=True)
class NodeAudit:
    """The diagnosis of one pooling node of a model.

    Attributes
    ----------
    name, op_type : str
        The node's name (or ``#index`` when it has none) and operator.
    input_shape, output_shape : tuple or None
        Shapes from the model and ONNX shape inference: ints, dim names (str)
        for symbolic dims, None for unknown dims; None when the rank is unknown.
    report : Report or None
        :func:`poolkit.diagnose` of the node, when its geometry is known.
    findings : tuple of Finding
        The report's findings and the audit's own (unknown shapes, refused
        configurations, shape mismatches, nodes poolkit cannot diagnose).
    """

    name: str
    op_type: str
    input_shape: tuple | None
    output_shape: tuple | None
    report: Report | None
    findings: tuple[Finding, ...]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "op_type": self.op_type,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "output_shape": None if self.output_shape is None else list(self.output_shape),
            "report": None if self.report is None else self.report.to_dict(),
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass(frozen=True)
class ModelAudit:
    """Every pooling node of an ONNX model, diagnosed (see :func:`audit`)."""

    path: str
    opset: int
    nodes: tuple[NodeAudit, ...]

    @property
    def counts(self) -> dict[str, int]:
        """Number of findings per severity over all nodes."""
        return {s: sum(f.severity == s for n in self.nodes for f in n.findings) for s in SEVERITIES}

    def to_dict(self) -> dict:
        """Plain Python data with stable keys (JSON-ready)."""
        return {
            "model": self.path,
            "opset": self.opset,
            "nodes": [n.to_dict() for n in self.nodes],
            "counts": self.counts,
        }

    def __str__(self) -> str:
        return self.to_text()

    def to_text(self) -> str:
        """One row per node (name, op, input -> output shape, findings), the warnings spelled out, a summary."""
        lines = [f"{self.path} (opset {self.opset}): {len(self.nodes)} pooling node(s)", ""]
        rows = [("node", "op", "input -> output", "findings")]
        for n in self.nodes:
            codes = [f"{f.severity} {f.code}" + (f"[{f.axis}]" if f.axis is not None else "") for f in n.findings]
            rows.append((n.name, n.op_type, f"{_dims(n.input_shape)} -> {_dims(n.output_shape)}", ", ".join(codes)))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3] for r in rows]
        serious = [(n, f) for n in self.nodes for f in n.findings if f.severity != "info"]
        if serious:
            lines += ["", "errors and warnings:"]
            for n, f in serious:
                lines.append(f"  {n.name} {f.severity} {f.code}: {f.message}")
                lines.append(f"      fix: {f.fix}")
        counts = self.counts
        losing = sum(any(f.code in ("dropped-tail", "skipped-cells") for f in n.findings) for n in self.nodes)
        lines += [
            "",
            f"summary: {len(self.nodes)} pooling node(s); {counts['error']} error(s), {counts['warning']} "
            f"warning(s), {counts['info']} info; {losing} node(s) never read part of their input",
        ]
        return "\n".join(lines).rstrip()


def audit(model: str | os.PathLike | onnx.ModelProto) -> ModelAudit:
    """Diagnose every pooling node of an ONNX model.

    The model is loaded without its external weight data, shapes are taken
    from the graph and from ONNX shape inference, and each MaxPool,
    AveragePool, LpPool and Global*Pool node is diagnosed with
    :func:`poolkit.diagnose` under ONNX's attribute rules. MaxRoiPool and
    MaxUnpool nodes, nodes with unknown spatial input sizes, and nodes whose
    configuration poolkit refuses are listed with a finding that says so;
    none is skipped.

    Parameters
    ----------
    model : str, path-like or onnx.ModelProto

    Returns
    -------
    ModelAudit

    Raises
    ------
    ModelLoadError
        The file is missing, unreadable, truncated or not an ONNX model.

    Examples
    --------
    >>> from onnx import TensorProto, helper
    >>> from poolkit.onnx import audit
    >>> x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 112, 112])
    >>> y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    >>> node = helper.make_node("MaxPool", ["x"], ["y"], name="pool1", kernel_shape=[3, 3], strides=[2, 2])
    >>> result = audit(helper.make_model(helper.make_graph([node], "g", [x], [y])))
    >>> [(f.code, f.axis) for f in result.nodes[0].findings]
    [('dropped-tail', 0), ('dropped-tail', 1), ('overlap-cost', None), ('aliasing', None)]
    """
    path, proto = _load(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except (onnx.onnx_cpp2py_export.shape_inference.InferenceError, ValueError, RuntimeError):
        inferred = proto
    shapes = _value_shapes(inferred)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    nodes = tuple(
        _audit_node(node, index, shapes)
        for index, node in enumerate(proto.graph.node)
        if node.op_type in POOL_OPS and node.domain in ("", "ai.onnx")
    )
    return ModelAudit(path, opset, nodes)


def _load(model) -> tuple[str, onnx.ModelProto]:
    if isinstance(model, onnx.ModelProto):
        return "<model>", model
    path = os.fspath(model)
    if not os.path.isfile(path):
        raise ModelLoadError(f"{path}: no such file")
    try:
        proto = onnx.load(path, load_external_data=False)
    except (DecodeError, OSError, ValueError, RuntimeError) as err:
        raise ModelLoadError(f"{path}: not a readable ONNX model ({type(err).__name__}: {err})") from err
    if proto.ir_version <= 0 or not proto.HasField("graph") or not proto.opset_import:
        raise ModelLoadError(f"{path}: not an ONNX model (no IR version, graph or opset import)")
    return path, proto


def _value_shapes(model: onnx.ModelProto) -> dict[str, tuple | None]:
    shapes = {}
    graph = model.graph
    for info in [*graph.input, *graph.value_info, *graph.output]:
        tensor = info.type.tensor_type
        if not tensor.HasField("shape"):
            shapes.setdefault(info.name, None)
            continue
        dims = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param if d.dim_param else None) for d in tensor.shape.dim
        )
        shapes[info.name] = dims
    for init in graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def _dims(shape) -> str:
    if shape is None:
        return "?"
    return "x".join("?" if d is None else str(d) for d in shape)


def _audit_node(node: onnx.NodeProto, index: int, shapes: dict) -> NodeAudit:
    name = node.name or f"#{index}"
    in_shape = shapes.get(node.input[0]) if node.input else None
    out_shape = shapes.get(node.output[0]) if node.output else None

    def result(report, *findings):
        own = report.findings if report is not None else ()
        return NodeAudit(name, node.op_type, in_shape, out_shape, report, (*findings, *own))

    if node.op_type in ("MaxRoiPool", "MaxUnpool"):
        why = (
            "its windows come from the RoI tensor at run time"
            if node.op_type == "MaxRoiPool"
            else "it scatters values to the positions its indices input names"
        )
        return result(
            None,
            Finding(
                "not-diagnosed",
                "info",
                None,
                f"{node.op_type} is listed, not diagnosed: {why}",
                "diagnose the MaxPool whose indices it inverts" if node.op_type == "MaxUnpool" else "none",
            ),
        )
    if in_shape is None or len(in_shape) < 3 or any(not isinstance(d, int) or d <= 0 for d in in_shape[2:]):
        return result(
            None,
            Finding(
                "shape-unknown",
                "warning",
                None,
                f"the input shape {_dims(in_shape)} has unknown or symbolic spatial sizes, so the windows "
                "cannot be diagnosed",
                "give the model's input fixed spatial sizes (e.g. with onnx.tools.update_model_dims) and re-run",
            ),
        )
    concrete = tuple(d if isinstance(d, int) and d > 0 else 1 for d in in_shape)
    notes = []
    if concrete[:2] != in_shape[:2]:
        notes.append(
            Finding(
                "shape-dynamic",
                "info",
                None,
                f"batch/channel sizes {_dims(in_shape[:2])} are symbolic; byte counts assume 1 for them",
                "none",
            )
        )
    try:
        if node.op_type in _GLOBAL:
            report = diagnose(concrete, _GLOBAL[node.op_type])
        else:
            args = pool_arguments(node, len(concrete) - 2)
            report = diagnose(
                concrete,
                _WINDOWED[node.op_type],
                args["kernel_size"],
                args["stride"],
                args["padding"],
                args["dilation"],
                args["ceil_mode"],
                args["count_include_pad"] if node.op_type == "AveragePool" else True,
            )
    except (PoolingConfigError, PoolingTypeError) as err:
        return result(
            None,
            Finding("refused", "error", None, f"poolkit cannot build this layer's windows: {err}", "see the message"),
        )
    if out_shape is not None and all(isinstance(d, int) and d > 0 for d in out_shape):
        expected = report.output_shape[2:]
        if tuple(out_shape[2:]) != expected:
            notes.append(
                Finding(
                    "shape-mismatch",
                    "warning",
                    None,
                    f"the model declares output {_dims(out_shape)}, ONNX's rules give spatial size {_dims(expected)}",
                    "re-export the model or check the node's attributes",
                )
            )
    return result(report, *notes)

"""poolkit.onnx.run_node: ONNX's own backend cases, its PyTorch fixtures, and ONNX Runtime as the oracle."""

from __future__ import annotations

import functools
import glob
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import poolkit as pk

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from poolkit.onnx import POOL_OPS, pool_arguments, run_node  # noqa: E402

DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")

# ONNX's reference MaxUnpool places the indices in the inferred 4x4 plane and pads that to output_shape
# 5x5; ONNX Runtime and PyTorch index the 5x5 plane directly, as the operator's documentation says.
# poolkit follows ONNX Runtime, so this case is checked against ONNX Runtime instead.
RUNTIME_ORACLE = {"test_maxunpool_export_with_output_shape"}


@functools.cache
def node_cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tuple(c for c in collect_testcases() if c.model.graph.node[0].op_type in POOL_OPS)


def ort_run(node, inputs, opset=22):
    """Run one node in ONNX Runtime."""
    names = [f"in{i}" for i in range(len(inputs))]
    outputs = [f"out{i}" for i, name in enumerate(node.output) if name]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    single = helper.make_node(node.op_type, names, outputs, **attrs)
    types = [helper.np_dtype_to_tensor_dtype(x.dtype) for x in inputs]
    graph = helper.make_graph(
        [single],
        "g",
        [helper.make_tensor_value_info(n, t, x.shape) for n, t, x in zip(names, types, inputs)],
        [
            helper.make_tensor_value_info(n, types[0] if i == 0 else TensorProto.INT64, None)
            for i, n in enumerate(outputs)
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, dict(zip(names, inputs)))


def assert_outputs(got, expected, rtol, atol, label):
    assert len(got) == len(expected), label
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype, f"{label}: {g.shape} {g.dtype} vs {e.shape} {e.dtype}"
        if e.dtype.kind in "iu":
            np.testing.assert_array_equal(g, e, err_msg=label)
        else:
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=label)


def test_every_pooling_case_of_the_onnx_backend_suite():
    cases = node_cases()
    names = {c.name for c in cases}
    assert RUNTIME_ORACLE <= names  # the exception list stays current
    for op in ("MaxPool", "AveragePool", "LpPool", "GlobalMaxPool", "GlobalAveragePool", "MaxUnpool"):
        assert any(c.model.graph.node[0].op_type == op for c in cases), op
    passed = []
    for case in cases:
        (node,) = case.model.graph.node
        for inputs, expected in case.data_sets:
            got = run_node(node, *inputs)
            if case.name in RUNTIME_ORACLE:
                assert not np.array_equal(expected[0], ort_run(node, inputs)[0])
                expected = ort_run(node, inputs)
            assert_outputs(got, expected, case.rtol, case.atol, case.name)
            passed.append(case.name)
    # 53 pooling cases in onnx 1.2x, all passing (one against ONNX Runtime)
    assert len(passed) == len(cases)
    print(f"\nONNX backend pooling cases: {len(cases)} collected, {len(passed)} passed")


PYTORCH_FIXTURES = sorted(
    glob.glob(os.path.join(DATA, "pytorch-converted", "test_*Pool*"))
    + glob.glob(os.path.join(DATA, "pytorch-operator", "test_*pool*"))
)


def poolkit_evaluator(model):
    """ONNX's reference evaluator with every pooling operator replaced by run_node."""
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    def make(op_type):
        def _run(self, *inputs, **attributes):
            return run_node(self.onnx_node, *inputs)

        return type(op_type, (OpRun,), {"op_domain": "", "_run": _run})

    return ReferenceEvaluator(model, new_ops=[make(op) for op in POOL_OPS])


@pytest.mark.parametrize("directory", PYTORCH_FIXTURES, ids=os.path.basename)
def test_onnx_pytorch_fixtures(directory):
    model = onnx.load(os.path.join(directory, "model.onnx"))
    assert any(n.op_type in POOL_OPS for n in model.graph.node)
    for data in sorted(glob.glob(os.path.join(directory, "test_data_set_*"))):
        inputs = [numpy_helper.to_array(onnx.load_tensor(f)) for f in sorted(glob.glob(f"{data}/input_*.pb"))]
        expected = [numpy_helper.to_array(onnx.load_tensor(f)) for f in sorted(glob.glob(f"{data}/output_*.pb"))]
        feeds = dict(zip([i.name for i in model.graph.input], inputs))
        got = poolkit_evaluator(model).run(None, feeds)
        assert_outputs(got, expected, 1e-3, 1e-7, os.path.basename(directory))


def test_fixture_count():
    # 15 pytorch-converted pooling fixtures and pytorch-operator's test_operator_maxpool
    assert len(PYTORCH_FIXTURES) == 16


@st.composite
def windowed_nodes(draw):
    """Windowed pooling nodes inside what poolkit and ONNX Runtime both accept."""
    op = draw(st.sampled_from(["MaxPool", "AveragePool", "LpPool"]))
    rank = draw(st.integers(1, 3))
    kernel = [draw(st.integers(1, 4)) for _ in range(rank)]
    strides = [draw(st.integers(1, 3)) for _ in range(rank)]
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    attrs = {"kernel_shape": kernel, "strides": strides}
    # ONNX Runtime leaves dilation out of SAME padding (the spec and shape inference include it), and
    # fails or shifts windows when SAME padding comes out negative (kernel < stride): kept apart below.
    dilations = [1] * rank if auto_pad.startswith("SAME") else [draw(st.integers(1, 2)) for _ in range(rank)]
    if draw(st.booleans()):
        attrs["dilations"] = dilations
    else:
        dilations = [1] * rank
    sizes = [draw(st.integers(d * (k - 1) + 1, 8)) for k, d in zip(kernel, dilations)]
    if auto_pad == "NOTSET":
        attrs["pads"] = [draw(st.integers(0, k // 2)) for k in kernel * 2]
    else:
        attrs["auto_pad"] = auto_pad
        if auto_pad.startswith("SAME") and any((-(-n // s) - 1) * s + k < n for n, s, k in zip(sizes, strides, kernel)):
            attrs["auto_pad"] = "VALID"
    if draw(st.booleans()):
        attrs["ceil_mode"] = 1
    outputs = ["y"]
    if op == "AveragePool":
        attrs["count_include_pad"] = draw(st.integers(0, 1))
    if op == "LpPool":
        attrs["p"] = draw(st.integers(1, 3))
    if op == "MaxPool" and draw(st.booleans()):
        outputs.append("indices")
        attrs["storage_order"] = draw(st.integers(0, 1))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *sizes)
    return helper.make_node(op, ["x"], outputs, **attrs), shape


@settings(max_examples=120, deadline=None)
@given(windowed_nodes(), st.integers(0, 2**32 - 1))
def test_windowed_nodes_match_onnx_runtime(config, seed):
    node, shape = config
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)  # ONNX Runtime's float kernels
    assert_outputs(run_node(node, x), ort_run(node, [x]), 1e-5, 1e-6, str(node))


def test_max_pool_skips_nan_like_the_onnx_reference():
    # ONNX's reference skips NaNs; ONNX Runtime 1.2x returns NaN or not depending on where it sits in the
    # window, so the reference is the oracle here. poolkit gives NaN where a window holds only NaNs.
    from onnx.reference import ReferenceEvaluator

    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], pads=[1, 1, 1, 1])
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = x[0, 0, 2, 2] = x[0, 0, 3, 2] = np.nan
    (got,) = run_node(node, x)
    np.testing.assert_array_equal(got, ReferenceEvaluator(node).run(None, {"x": x})[0])
    assert got[0, 0, 0, 1] == 0.0 and got[0, 0, 3, 2] == 13.0
    x[0, 0, 3, 3] = np.nan
    assert np.isnan(run_node(node, x)[0][0, 0, 4, 3])  # its window holds x[3, 2] and x[3, 3], both NaN


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_same_padding_with_dilation_follows_the_onnx_spec(auto_pad):
    # pad_shape = (out - 1) * stride + ((kernel - 1) * dilation + 1) - in, as ONNX's documentation and
    # shape inference say (ONNX Runtime 1.2x leaves the dilation out).
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3], dilations=[2], auto_pad=auto_pad)
    x = np.arange(6, dtype=np.float32).reshape(1, 1, 6)
    (got,) = run_node(node, x)
    model = helper.make_model(
        helper.make_graph(
            [node],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 6])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        )
    )
    inferred = onnx.shape_inference.infer_shapes(model).graph.output[0].type.tensor_type.shape
    assert got.shape == tuple(d.dim_value for d in inferred.dim) == (1, 1, 6)
    # total padding 4 = 2 + 2 either way: window o reads o-2, o, o+2 (inside 0..5)
    np.testing.assert_array_equal(got[0, 0], [2, 3, 4, 5, 4, 5])


@pytest.mark.parametrize("op", ["GlobalMaxPool", "GlobalAveragePool", "GlobalLpPool"])
@pytest.mark.parametrize("shape", [(2, 3, 7), (1, 4, 5, 6), (2, 2, 3, 4, 5)])
def test_global_nodes_match_onnx_runtime(op, shape):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    attrs = {"p": 3} if op == "GlobalLpPool" else {}
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    # ONNX Runtime implements GlobalLpPool-2 (opset 2 to 21)
    assert_outputs(run_node(node, x), ort_run(node, [x], opset=21), 1e-6, 1e-7, op)


def test_max_roi_pool_matches_onnx_runtime():
    x = np.random.default_rng(2).standard_normal((2, 3, 10, 12)).astype(np.float32)
    rois = np.array([[0, 0, 0, 11, 9], [1, 2.4, 3.6, 7.5, 8.2], [0, 5, 5, 5, 5], [1, -3, -2, 30, 4]], dtype=np.float32)
    for scale in (1.0, 0.5):
        node = helper.make_node("MaxRoiPool", ["x", "rois"], ["y"], pooled_shape=[3, 2], spatial_scale=scale)
        # ONNX Runtime implements MaxRoiPool-1 (opset 1 to 21)
        assert_outputs(run_node(node, x, rois), ort_run(node, [x, rois], opset=21), 0, 0, f"scale {scale}")


@pytest.mark.parametrize(
    ("shape", "kernel", "strides", "pads"),
    [((2, 3, 6, 6), [2, 2], [2, 2], [0, 0, 0, 0]), ((2, 3, 7, 6), [3, 2], [2, 1], [1, 0, 1, 1])],
)
@pytest.mark.parametrize("with_shape", [False, True])
def test_max_unpool_inverts_max_pool_like_onnx_runtime(shape, kernel, strides, pads, with_shape):
    # shapes where MaxUnpool's inferred output, (in - 1) * stride - pads + kernel, is MaxPool's input
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    pool = helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=kernel, strides=strides, pads=pads)
    y, indices = run_node(pool, x)
    inputs = [y, indices] + ([np.array(x.shape, dtype=np.int64)] if with_shape else [])
    unpool = helper.make_node(
        "MaxUnpool", ["y", "i", "s"][: len(inputs)], ["z"], kernel_shape=kernel, strides=strides, pads=pads
    )
    (got,) = run_node(unpool, *inputs)
    assert_outputs((got,), ort_run(unpool, inputs), 0, 0, "MaxUnpool")
    if with_shape:  # every max lands back where it came from
        np.testing.assert_array_equal(got.ravel()[indices.ravel()], y.ravel())


def test_indices_layout_across_planes_and_storage_order():
    x = np.random.default_rng(4).standard_normal((2, 3, 5, 4)).astype(np.float32)
    for order in (0, 1):
        node = helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 3], strides=[2, 1], storage_order=order)
        y, indices = run_node(node, x)
        # the ONNX index names the cell of the whole tensor, in C or Fortran order within the plane
        n, c = np.unravel_index(np.arange(indices.size), indices.shape)[:2]
        plane, inner = np.divmod(indices.ravel(), 20)
        np.testing.assert_array_equal(plane, n * 3 + c)
        rows, cols = np.unravel_index(inner, (5, 4), order="F" if order else "C")
        np.testing.assert_array_equal(x[n, c, rows, cols], y.ravel())


def test_pool_arguments_map_onnx_attributes():
    node = helper.make_node(
        "AveragePool", ["x"], ["y"], kernel_shape=[3, 2, 2], pads=[0, 1, 2, 3, 0, 1], ceil_mode=1, dilations=[1, 2, 1]
    )
    args = pool_arguments(node, 3)
    assert args == {
        "kernel_size": (3, 2, 2),
        "stride": (1, 1, 1),
        "padding": ((0, 3), (1, 0), (2, 1)),
        "dilation": (1, 2, 1),
        "ceil_mode": True,
        "count_include_pad": False,
        "p": 2,
        "storage_order": 0,
    }
    for auto_pad, padding in (("SAME_UPPER", "same"), ("SAME_LOWER", "same_lower"), ("VALID", "valid")):
        node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2], auto_pad=auto_pad)
        assert pool_arguments(node, 1)["padding"] == padding
    old_lp = helper.make_node("LpPool", ["x"], ["y"], kernel_shape=[2], p=3.0)  # opset 1 had a float p
    assert pool_arguments(old_lp, 1)["p"] == 3.0


@pytest.mark.parametrize(
    ("node", "inputs", "match"),
    [
        (helper.make_node("Conv", ["x"], ["y"]), 1, r"run_node runs MaxPool, .*; got 'Conv'"),
        (helper.make_node("MaxPool", ["x"], ["y"], domain="com.microsoft", kernel_shape=[2]), 1, r"got domain 'com"),
        (helper.make_node("MaxPool", ["x"], ["y"]), 1, r"MaxPool node has no kernel_shape attribute"),
        (helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2]), 1, r"kernel_shape=\[2, 2\] with 2 entries"),
        (
            helper.make_node("MaxPool", ["x"], ["y"], name="p1", kernel_shape=[2], pads=[1]),
            1,
            r"node 'p1' has pads=\[1\]",
        ),
        (helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2], auto_pad="SAME"), 1, r"auto_pad='SAME'; ONNX"),
        (helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2], storage_order=2), 1, r"storage_order=2"),
        (helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2]), 2, r"MaxPool takes 1 input\(s\); got 2"),
        (helper.make_node("MaxRoiPool", ["x", "r"], ["y"]), 2, r"MaxRoiPool needs its pooled_shape"),
    ],
)
def test_run_node_errors(node, inputs, match):
    x = np.zeros((1, 1, 4), dtype=np.float32)
    with pytest.raises(pk.PoolingConfigError, match=match):
        run_node(node, *[x] * inputs)


def test_max_unpool_errors():
    node = helper.make_node("MaxUnpool", ["x", "i"], ["y"], kernel_shape=[2], strides=[2])
    x = np.ones((1, 2, 2), dtype=np.float32)
    with pytest.raises(pk.PoolingConfigError, match=r"index 1 at \(0, 1, 1\) is outside its \(n, c\) plane \[4, 8\)"):
        run_node(node, x, np.array([[[0, 2], [4, 1]]]))
    with pytest.raises(pk.PoolingConfigError, match=r"indices have shape \(1, 2, 1\); they must match"):
        run_node(node, x, np.zeros((1, 2, 1), dtype=np.int64))
    with pytest.raises(pk.PoolingConfigError, match=r"output_shape=\[1, 3, 4\] must be \(N, C, \.\.\.\)"):
        run_node(node, x, np.array([[[0, 2], [4, 6]]]), np.array([1, 3, 4]))


def test_import_poolkit_does_not_import_onnx():
    code = "import sys, poolkit; assert 'onnx' not in sys.modules and 'onnxruntime' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)

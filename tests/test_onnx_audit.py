"""poolkit.onnx.audit on the CNNs shipped in the onnx wheel and on hand-made graphs."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from poolkit.onnx import ModelLoadError, audit  # noqa: E402

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
MODELS = sorted(glob.glob(os.path.join(LIGHT, "*.onnx")))


def summary(result):
    """(name, op, input shape, output shape, [(code, severity, axis), ...]) per node."""
    return [
        (n.name, n.op_type, n.input_shape, n.output_shape, [(f.code, f.severity, f.axis) for f in n.findings])
        for n in result.nodes
    ]


def test_all_nine_light_models_are_audited():
    assert [os.path.basename(m) for m in MODELS] == [
        "light_bvlc_alexnet.onnx", "light_densenet121.onnx", "light_inception_v1.onnx", "light_inception_v2.onnx",
        "light_resnet50.onnx", "light_shufflenet.onnx", "light_squeezenet.onnx", "light_vgg19.onnx",
        "light_zfnet512.onnx",
    ]  # fmt: skip
    pooling = {}
    for path in MODELS:
        result = audit(path)
        model = onnx.load(path, load_external_data=False)
        expected = [n.name for n in model.graph.node if n.op_type.endswith("Pool")]
        assert [n.name for n in result.nodes] == expected  # every pooling node, none skipped
        for node in result.nodes:
            assert node.report is not None  # all shapes are known in these graphs
            # poolkit's output shape under ONNX's rules agrees with ONNX shape inference
            assert node.report.output_shape == node.output_shape
            assert not any(f.severity == "error" for f in node.findings)
        pooling[os.path.basename(path)] = len(result.nodes)
    assert sum(pooling.values()) == 54


def test_alexnet():
    # n3: 54x54, k=3, s=2, no padding: floor((54 - 3) / 2) + 1 = 26 windows at 0, 2, ..., 50; the last
    # reads 50..52, so row and column 53 are never read (1/54 = 1.9%). ceil_mode=True adds a window at 52
    # reading 52, 53 and a padding cell; so does padding (0, 1). Per axis 26 * 3 = 78 reads of 53 cells.
    # n7: 26x26 the same way: 12 windows end at 24, row/column 25 is lost (1/26 = 3.8%).
    # n14: 12x12 with pads (0, 1): 6 windows at 0..10, the last reads 10, 11 and the padding, so nothing
    # is lost; the padding is asymmetric, and ceil_mode=True with no padding gives the same 6 windows.
    result = audit(os.path.join(LIGHT, "light_bvlc_alexnet.onnx"))
    tail_overlap_alias = [
        ("dropped-tail", "warning", 0),
        ("dropped-tail", "warning", 1),
        ("overlap-cost", "info", None),
        ("aliasing", "info", None),
    ]
    assert summary(result) == [
        ("n3", "MaxPool", (1, 96, 54, 54), (1, 96, 26, 26), tail_overlap_alias),
        ("n7", "MaxPool", (1, 256, 26, 26), (1, 256, 12, 12), tail_overlap_alias),
        (
            "n14",
            "MaxPool",
            (1, 256, 12, 12),
            (1, 256, 6, 6),
            [("overlap-cost", "info", None), ("asymmetric-padding", "info", None), ("aliasing", "info", None)],
        ),
    ]
    n3, n7, n14 = result.nodes
    assert n3.findings[0].message == "input rows 53 of 0..53 are never read (1.9% of the input)"
    assert n3.findings[0].fix == "use ceil_mode=True, or pad the rows (0, 1) (before, after), or crop the rows to 53"
    assert n7.findings[1].message == "input columns 25 of 0..25 are never read (3.8% of the input)"
    assert "read 2.17 times on average" in n3.findings[2].message  # (78 / 53) ** 2
    assert "read 2.01 times on average" in n14.findings[0].message  # ((6 * 3 - 1) / 12) ** 2
    assert n14.findings[1].fix == "in PyTorch use padding=0 with ceil_mode=True: the same windows"
    assert n3.report.never_read_fraction == pytest.approx(1 - (53 / 54) ** 2)
    assert result.counts == {"error": 0, "warning": 4, "info": 7}


def test_vgg19():
    # five 2x2 stride-2 max pools on 224, 112, 56, 28, 14: even sizes, every cell read exactly once;
    # the only finding is that strided max pooling aliases.
    result = audit(os.path.join(LIGHT, "light_vgg19.onnx"))
    sizes = [224, 112, 56, 28, 14]
    channels = [64, 128, 256, 512, 512]
    assert summary(result) == [
        (name, "MaxPool", (1, c, s, s), (1, c, s // 2, s // 2), [("aliasing", "info", None)])
        for name, c, s in zip(["n4", "n9", "n18", "n27", "n36"], channels, sizes)
    ]
    assert all(n.report.reads_per_input == 1.0 and n.report.never_read_fraction == 0 for n in result.nodes)


def test_resnet50():
    # n3: 112x112, k=3, s=2, pads 1: floor((112 + 2 - 3) / 2) + 1 = 56 windows at -1, 1, ..., 109; the
    # last reads 109..111, so all is read, 56 * 3 - 1 = 167 reads of 112 cells per axis.
    # n172: a 7x7 average over a 7x7 input (no padding): global average pooling.
    result = audit(os.path.join(LIGHT, "light_resnet50.onnx"))
    assert summary(result) == [
        ("n3", "MaxPool", (1, 64, 112, 112), (1, 64, 56, 56), [("overlap-cost", "info", None),
                                                                ("aliasing", "info", None)]),
        ("n172", "AveragePool", (1, 2048, 7, 7), (1, 2048, 1, 1), [("degenerate", "info", None)]),
    ]  # fmt: skip
    assert "read 2.22 times on average" in result.nodes[0].findings[0].message  # (167 / 112) ** 2
    assert result.nodes[1].findings[0].fix.startswith("use pk.global_avg_pool")


def test_inception_v1():
    # n2: 112 -> 55 with k=3, s=2 loses row/column 111 (1/112 = 0.9%); n9 (55 -> 27), n38 (27 -> 13) and
    # n109 (13 -> 6) end exactly at the last cell. Nine 3x3 stride-1 max pools with padding 1 overlap but
    # do not subsample. n138 averages 6x6 with a 7x7 window and pads (0, 1): one window holding all 36
    # cells; ONNX's count_include_pad=0 divides by 36 (a global average), PyTorch's default by 49; the
    # padding is asymmetric, and ceil_mode cannot replace it (a 7-cell window on 6 cells needs padding).
    result = audit(os.path.join(LIGHT, "light_inception_v1.onnx"))
    rows = summary(result)
    overlap, alias = ("overlap-cost", "info", None), ("aliasing", "info", None)
    assert rows[0][4] == [("dropped-tail", "warning", 0), ("dropped-tail", "warning", 1), overlap, alias]
    assert [r[4] for r in rows[1:13]] == [
        [overlap, alias] if r[0] in ("n9", "n38", "n109") else [overlap] for r in rows[1:13]
    ]
    assert rows[13] == (
        "n138",
        "AveragePool",
        (1, 1024, 6, 6),
        (1, 1024, 1, 1),
        [("asymmetric-padding", "info", None), ("framework-divergence", "info", None), ("degenerate", "info", None)],
    )
    n138 = result.nodes[13]
    assert "divides window (0, 0) by 49, ONNX's default count_include_pad=0 and TensorFlow's SAME by its 36" in (
        n138.findings[1].message
    )
    assert n138.findings[0].fix.startswith("in PyTorch pad the input explicitly")
    assert result.nodes[0].findings[0].message == "input rows 111 of 0..111 are never read (0.9% of the input)"


def test_text_and_json(tmp_path):
    result = audit(os.path.join(LIGHT, "light_bvlc_alexnet.onnx"))
    text = result.to_text()
    assert "light_bvlc_alexnet.onnx (opset 9): 3 pooling node(s)" in text
    assert "n3    MaxPool  1x96x54x54 -> 1x96x26x26" in text
    assert "n3 warning dropped-tail: input rows 53 of 0..53 are never read (1.9% of the input)" in text
    assert text.endswith(
        "summary: 3 pooling node(s); 0 error(s), 4 warning(s), 7 info; 2 node(s) never read part of their input"
    )
    data = json.loads(json.dumps(result.to_dict()))
    assert sorted(data) == ["counts", "model", "nodes", "opset"]
    assert sorted(data["nodes"][0]) == ["findings", "input_shape", "name", "op_type", "output_shape", "report"]
    assert data["nodes"][0]["report"]["output_shape"] == [1, 96, 26, 26]


def graph_model(nodes, inputs, outputs, opset=22, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def value(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def test_unknown_symbolic_and_data_dependent_nodes_are_listed():
    nodes = [
        helper.make_node("MaxPool", ["x"], ["a"], name="dyn", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("AveragePool", ["z"], ["b"], name="batch", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("MaxRoiPool", ["z", "rois"], ["c"], name="roi", pooled_shape=[2, 2]),
        helper.make_node("MaxPool", ["z"], ["d", "i"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("MaxUnpool", ["d", "i"], ["e"], name="unpool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalLpPool", ["z"], ["f"], name="glp"),
    ]
    model = graph_model(
        nodes,
        [value("x", ["N", 3, "H", "W"]), value("z", ["N", 3, 8, 8]), value("rois", [4, 5])],
        [value(o, None) for o in "abcef"],
        opset=21,
    )
    result = audit(model)
    assert [(n.name, [f.code for f in n.findings]) for n in result.nodes] == [
        ("dyn", ["shape-unknown"]),
        ("batch", ["shape-dynamic"]),
        ("roi", ["not-diagnosed"]),
        ("pool", ["shape-dynamic", "aliasing"]),
        ("unpool", ["not-diagnosed"]),
        ("glp", ["shape-dynamic"]),
    ]
    assert result.nodes[0].input_shape == ("N", 3, "H", "W")
    assert result.nodes[0].findings[0].severity == "warning"
    assert result.nodes[1].report.output_shape == (1, 3, 4, 4)
    assert result.nodes[5].report.output_shape == (1, 3, 1, 1)
    assert "RoI tensor" in result.nodes[2].findings[0].message
    # ONNX shape inference names the unknown output sizes unk__0, unk__1
    assert "dyn     MaxPool       Nx3xHxW -> Nx3xunk__0xunk__1  warning shape-unknown" in result.to_text()


def test_refused_configuration_and_shape_mismatch():
    nodes = [
        helper.make_node("MaxPool", ["x"], ["a"], name="big", kernel_shape=[5, 5]),
        helper.make_node("MaxPool", ["x"], ["b"], name="wrong", kernel_shape=[2, 2], strides=[1, 1]),
    ]
    model = graph_model(nodes, [value("x", [1, 1, 3, 3])], [value("a", None), value("b", [1, 1, 3, 3])])
    result = audit(model)
    big, wrong = result.nodes
    assert [(f.code, f.severity) for f in big.findings] == [("refused", "error")]
    assert "kernel_size=5 is larger than the padded input (3 after padding 0+0)" in big.findings[0].message
    assert [f.code for f in wrong.findings][:1] == ["shape-mismatch"]
    assert wrong.findings[0].message == "the model declares output 1x1x3x3, ONNX's rules give spatial size 2x2"
    assert result.counts["error"] == 1


def test_external_data_is_not_loaded(tmp_path):
    weights = numpy_helper.from_array(np.ones((4, 3, 1, 1), dtype=np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
        helper.make_node("MaxPool", ["c"], ["y"], name="pool", kernel_shape=[3, 3], strides=[2, 2]),
    ]
    model = graph_model(nodes, [value("x", [1, 3, 10, 10])], [value("y", None)], initializers=[weights])
    path = tmp_path / "model.onnx"
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
    os.remove(tmp_path / "w.bin")
    (node,) = audit(path).nodes
    assert node.input_shape == (1, 4, 10, 10)
    assert [f.code for f in node.findings] == ["dropped-tail", "dropped-tail", "overlap-cost", "aliasing"]


def test_unreadable_models(tmp_path):
    with pytest.raises(ModelLoadError, match=r"nothere.onnx: no such file"):
        audit(tmp_path / "nothere.onnx")
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n")
    with pytest.raises(ModelLoadError, match=r"notes.onnx: not a readable ONNX model \(DecodeError"):
        audit(text)
    truncated = tmp_path / "truncated.onnx"
    data = open(os.path.join(LIGHT, "light_bvlc_alexnet.onnx"), "rb").read()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"truncated.onnx: not a readable ONNX model"):
        audit(truncated)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"empty.onnx: not an ONNX model \(no IR version, graph or opset"):
        audit(empty)

"""RoI max pooling against ONNX Runtime's MaxRoiPool (forward) and finite differences (gradient)."""

from __future__ import annotations

import numpy as np
import pytest
from gradients import finite_difference_grad
from hypothesis import given, settings
from hypothesis import strategies as st

import poolkit as pk


def ort_max_roi_pool(x, rois, pooled_shape, spatial_scale):
    """ONNX Runtime's MaxRoiPool (float32 only), the node built with onnx.helper."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    helper, tensor = onnx.helper, onnx.TensorProto.FLOAT
    node = helper.make_node(
        "MaxRoiPool", ["X", "rois"], ["Y"], pooled_shape=list(pooled_shape), spatial_scale=float(spatial_scale)
    )
    graph = helper.make_graph(
        [node],
        "roi",
        [helper.make_tensor_value_info("X", tensor, None), helper.make_tensor_value_info("rois", tensor, None)],
        [helper.make_tensor_value_info("Y", tensor, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"X": x, "rois": rois})[0]


@st.composite
def cases(draw):
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    batch, channels = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    height, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    count = draw(st.integers(0, 4))
    scale = draw(st.sampled_from([1.0, 0.5, 0.25, 1 / 3, 2.0]))
    x1, y1 = rng.uniform(-4, 14, count), rng.uniform(-4, 14, count)
    x2, y2 = x1 + rng.uniform(0, 14, count), y1 + rng.uniform(0, 14, count)
    rois = np.stack([rng.integers(0, batch, count), x1, y1, x2, y2], axis=1).astype(np.float32)
    if draw(st.booleans()):
        rois[:, 1:] = np.round(rois[:, 1:] * 2) / 2  # halves: the rounding rule matters
    pooled = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    return rng, (batch, channels, height, width), rois, pooled, scale


@settings(max_examples=80, deadline=None)
@given(case=cases(), channels_last=st.booleans())
def test_matches_onnx_runtime(case, channels_last):
    rng, shape, rois, pooled, scale = case
    x = rng.standard_normal(shape).astype(np.float32)
    expected = ort_max_roi_pool(x, rois, pooled, scale)
    np.testing.assert_array_equal(pk.roi_pool(x, rois, pooled, scale), expected)
    if channels_last:
        got = pk.roi_pool(np.moveaxis(x, 1, -1), rois, pooled, scale, channels_last=True)
        np.testing.assert_array_equal(got, np.moveaxis(expected, 1, -1))


def test_gradient_goes_to_each_bins_maximum():
    rng = np.random.default_rng(0)
    x = rng.permutation(2 * 3 * 7 * 8).reshape(2, 3, 7, 8) / 336.0  # distinct: no ties
    rois = np.array([[1, 0.4, 1.2, 6.6, 5.5], [0, 2, 2, 3, 3], [1, -3, -3, 12, 12], [0, 9, 9, 12, 12]])
    y, pullback = pk.vjp(pk.roi_pool, x, rois, (3, 2), 0.9)
    dy = rng.standard_normal(y.shape)
    numeric = finite_difference_grad(lambda v: pk.roi_pool(v, rois, (3, 2), 0.9), x, dy)
    np.testing.assert_allclose(pullback(dy), numeric, atol=1e-8)
    np.testing.assert_array_equal(y[3], 0)  # a region past the border: every bin is empty


def test_channels_last_gradient_and_ties():
    x = np.zeros((1, 2, 3, 3))
    x[0, 1, 2, 2] = 5.0
    rois = np.array([[0, 0, 0, 2, 2]])
    y, pullback = pk.vjp(pk.roi_pool, np.moveaxis(x, 1, -1), rois, 1, channels_last=True)
    np.testing.assert_array_equal(y, [[[[0.0, 5.0]]]])
    dx = pullback(np.array([[[[1.0, 2.0]]]]))
    expected = np.zeros((1, 3, 3, 2))
    expected[0, 0, 0, 0] = 1.0  # all zeros: the first cell takes the tie
    expected[0, 2, 2, 1] = 2.0
    np.testing.assert_array_equal(dx, expected)


def test_nan_wins_its_bin_and_integer_input_keeps_its_dtype():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan
    y = pk.roi_pool(x, np.array([[0, 0, 0, 3, 3]]), 2)
    np.testing.assert_array_equal(y, [[[[np.nan, 7.0], [13.0, 15.0]]]])
    y_int = pk.roi_pool(np.arange(16, dtype=np.int32).reshape(1, 1, 4, 4), np.array([[0, 0, 0, 3, 3]]), 2)
    assert y_int.dtype == np.int32
    np.testing.assert_array_equal(y_int, [[[[5, 7], [13, 15]]]])


def test_no_regions_give_an_empty_result():
    y, pullback = pk.vjp(pk.roi_pool, np.ones((2, 3, 4, 4)), np.zeros((0, 5)), (2, 3))
    assert y.shape == (0, 3, 2, 3)
    np.testing.assert_array_equal(pullback(y), np.zeros((2, 3, 4, 4)))
    y, pullback = pk.vjp(pk.roi_pool, np.ones((2, 0, 4, 4)), np.zeros((1, 5)), (2, 3))  # no channels
    assert y.shape == (1, 0, 2, 3)
    assert pullback(y).shape == (2, 0, 4, 4)


ERRORS = [
    (dict(rois=np.zeros((2, 4))), r"rois must have shape \(K, 5\).*got shape \(2, 4\)"),
    (dict(rois=np.zeros(5)), r"rois must have shape \(K, 5\).*got shape \(5,\)"),
    (dict(rois=np.array([[2, 0, 0, 1, 1]])), r"rois\[0\] has batch index 2, but x holds 2 image\(s\).*0\.\.1"),
    (dict(rois=np.array([[0, 0, 0, 1, 1], [-1, 0, 0, 1, 1]])), r"rois\[1\] has batch index -1"),
    (dict(rois=np.array([[0.5, 0, 0, 1, 1]])), r"rois\[0\] has batch index 0.5.*must be an integer"),
    (dict(rois=np.array([[0, 3, 0, 1, 1]])), r"rois\[0\] = \[0.0, 3.0, 0.0, 1.0, 1.0\] has x2=1 < x1=3"),
    (dict(rois=np.array([[0, 0, 2.5, 1, 1]])), r"has y2=1 < y1=2.5"),
    (dict(rois=np.array([[0, 0, 0, np.inf, 1]])), r"rois must be finite; rois\[0\]"),
    (dict(x=np.zeros((2, 4, 4))), r"takes non-empty 2-D feature maps \(N, C, H, W\); got shape \(2, 4, 4\)"),
    (dict(x=np.zeros((2, 1, 0, 4))), r"takes non-empty 2-D feature maps"),
    (dict(output_size=(2, 0)), r"output_size=\(2, 0\) must be positive"),
    (dict(spatial_scale=0.0), r"spatial_scale=0.0 is not allowed"),
]


@pytest.mark.parametrize(("change", "message"), ERRORS)
def test_errors(change, message):
    args = dict(x=np.zeros((2, 1, 4, 4)), rois=np.array([[0, 0, 0, 1, 1]]), output_size=2) | change
    with pytest.raises(pk.PoolingConfigError, match=message):
        pk.roi_pool(**args)


def test_non_numeric_rois_are_a_type_error():
    with pytest.raises(pk.PoolingTypeError, match=r"roi_pool needs an array of real numbers .* for rois"):
        pk.roi_pool(np.zeros((1, 1, 4, 4)), np.array([["0", "0", "0", "1", "1"]]), 2)


def test_rois_beyond_the_range_of_a_pixel_index_are_refused():
    with pytest.raises(pk.PoolingConfigError, match=r"roi_pool: roi 1 scaled by spatial_scale=1.0 reaches .*1e\+30"):
        pk.roi_pool(np.ones((1, 1, 4, 4)), np.array([[0, 0, 0, 3, 3], [0, 0, 0, 1e30, 1e30]]), 2)

"""pk.diagnose and Report: shapes against PyTorch, coverage against a brute-force scan, exact findings."""

from __future__ import annotations

import itertools
import json
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import poolkit as pk
from poolkit.diagnostics import Finding


def brute_reads(size, kernel, stride, pad_before, dilation, out_size):
    """Windows reading each input index, by walking every tap of every window."""
    reads = np.zeros(size, dtype=np.int64)
    for o in range(out_size):
        for j in range(kernel):
            pos = o * stride - pad_before + j * dilation
            if 0 <= pos < size:
                reads[pos] += 1
    return reads


def codes(report):
    return [(f.code, f.severity, f.axis) for f in report.findings]


@st.composite
def configs(draw):
    rank = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(rank))
    stride = tuple(draw(st.integers(1, 5)) for _ in range(rank))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    sizes = tuple(draw(st.integers(d * (k - 1) + 1, 13)) for k, d in zip(kernel, dilation))
    ceil_mode = draw(st.booleans())
    return (2, 3, *sizes), kernel, stride, padding, dilation, ceil_mode


@settings(max_examples=60, deadline=None)
@given(configs())
def test_shape_and_coverage_match_pytorch_and_a_brute_force_scan(config):
    torch = pytest.importorskip("torch")
    shape, kernel, stride, padding, dilation, ceil_mode = config
    report = pk.diagnose(shape, "max", kernel, stride, padding, dilation, ceil_mode)
    pool = {1: torch.nn.functional.max_pool1d, 2: torch.nn.functional.max_pool2d, 3: torch.nn.functional.max_pool3d}
    expected = pool[len(kernel)](torch.zeros(shape), kernel, stride, padding, dilation, ceil_mode).shape
    assert report.output_shape == tuple(expected)
    grid = np.zeros(shape[2:], dtype=bool)
    for i, (axis, k, s, p, d) in enumerate(zip(report.axes, kernel, stride, padding, dilation)):
        reads = brute_reads(shape[2 + i], k, s, p, d, expected[2 + i])
        np.testing.assert_array_equal(axis.reads, reads)
        assert axis.never_read == tuple(np.flatnonzero(reads == 0))
        # the formula shows the numbers and ends in the output size
        assert axis.formula.endswith(f"= {expected[2 + i]}")
        assert f"{shape[2 + i]} + {p} + {p} - {d}*({k} - 1) - 1" in axis.formula
    for cell in itertools.product(*(range(n) for n in shape[2:])):
        grid[cell] = all(a.reads[c] > 0 for a, c in zip(report.axes, cell))
    assert report.never_read_fraction == pytest.approx(1 - grid.mean())
    lossy = any(a.never_read for a in report.axes)
    assert lossy == any(f.code in ("dropped-tail", "skipped-cells") for f in report.findings)


@settings(max_examples=60, deadline=None)
@given(configs())
def test_suggested_fixes_for_a_dropped_tail_read_it(config):
    shape, kernel, stride, padding, dilation, ceil_mode = config
    try:
        report = pk.diagnose(shape, "max", kernel, stride, padding, dilation, ceil_mode)
    except pk.PoolingConfigError:
        return
    for finding in report.findings:
        if finding.code != "dropped-tail":
            continue
        tail = [int(t) for t in finding.message.split(" of 0..")[0].split()[-1].split(",") if t.strip().isdigit()]
        if "ceil_mode=True" in finding.fix:
            fixed = pk.diagnose(shape, "max", kernel, stride, padding, dilation, True)
            assert all(fixed.axes[finding.axis].reads[t] > 0 for t in tail)
        if "(before, after)" in finding.fix:
            after = int(finding.fix.split("(before, after)")[0].rsplit(", ", 1)[1].rstrip(") "))
            pads = [(p, p) for p in padding]
            pads[finding.axis] = (padding[finding.axis], after)
            fixed = pk.diagnose(shape, "max", kernel, stride, tuple(pads), dilation, ceil_mode)
            assert all(fixed.axes[finding.axis].reads[t] > 0 for t in tail)


def test_dropped_tail_is_reported_with_numbers_and_fixes():
    # 112 rows, k=3, s=2: 55 windows start at 0, 2, ..., 108 and the last reads 108..110; row 111 is
    # never read, 1/112 = 0.9% of the input. ceil_mode adds window 55 at 110..112; padding (0, 1) too.
    report = pk.diagnose((1, 3, 112, 112), "max", 3, 2)
    assert report.output_shape == (1, 3, 55, 55)
    assert report.axes[0].never_read == (111,)
    assert report.never_read_fraction == pytest.approx(1 - (111 / 112) ** 2)
    tail = report.findings[0]
    assert tail == Finding(
        "dropped-tail",
        "warning",
        0,
        "input rows 111 of 0..111 are never read (0.9% of the input)",
        "use ceil_mode=True, or pad the rows (0, 1) (before, after), or crop the rows to 111",
    )
    assert codes(report) == [
        ("dropped-tail", "warning", 0),
        ("dropped-tail", "warning", 1),
        ("overlap-cost", "info", None),
        ("aliasing", "info", None),
    ]
    # per axis 55 windows x 3 taps = 165 reads of 111 read cells; squared: 2.21 reads per read cell
    assert "read 2.21 times on average" in report.findings[2].message


def test_skipped_cells_between_windows():
    # k=2, s=3 over 32 positions: windows 0-1, 3-4, ..., 30-31; positions 2, 5, ..., 29 lie between them.
    report = pk.diagnose((1, 1, 32), "avg", 2, 3)
    assert report.output_shape == (1, 1, 11)
    assert report.axes[0].never_read == tuple(range(2, 30, 3))
    (finding,) = report.findings
    assert finding.code == "skipped-cells" and finding.severity == "warning" and finding.axis == 0
    assert finding.message == (
        "input positions 2, 5, 8, 11, …, 29 (10 cells) lie between windows (stride 3, window span 2) "
        "and are never read (31.2% of the input)"
    )
    assert finding.fix == "use stride <= 2 or kernel_size >= 3 on the positions"


def test_dilation_gaps_and_a_tail_no_padding_can_reach():
    # k=2, d=3, s=2 over 32: window o reads 2o and 2o+3 (o = 0..14); 1 is read by no window, 30 only
    # by a 16th window starting at 30, which needs 2 cells of padding after: more than an int padding
    # may give (k // 2 = 1), so the fix names the explicit (before, after) pair.
    report = pk.diagnose((1, 1, 32), "max", 2, 2, dilation=3)
    assert report.axes[0].never_read == (1, 30)
    tail, gaps = report.findings[:2]
    assert (tail.code, gaps.code) == ("dropped-tail", "skipped-cells")
    assert tail.fix == "pad the positions (0, 2) (before, after)"
    assert pk.max_pool(np.ones((1, 1, 32)), 2, 2, [(0, 2)], dilation=3).shape == (1, 1, 16)
    assert gaps.fix == "use dilation 1 on the positions"


def test_padding_heavy_windows_and_edge_divisors():
    # 3x3, stride 1, padding 1: the corner window holds 4 real cells of 9, so a constant 1 averages to 4/9.
    heavy = pk.diagnose((1, 1, 4, 4), "avg", 3, 1, 1)
    finding = heavy.findings[0]
    assert (finding.code, finding.severity) == ("padding-heavy-window", "warning")
    assert "12 of 16 windows count padding" in finding.message
    assert "window (0, 0) reads 4 real cells and divides by 9, so a constant input of 1 gives 0.444" in finding.message
    assert pk.avg_pool(np.ones((1, 1, 4, 4)), 3, 1, 1)[0, 0, 0, 0] == pytest.approx(4 / 9)
    # 1-D: the edge windows read 2 of 3 cells: only an info
    edge = pk.diagnose((1, 1, 5), "avg", 3, 1, 1)
    assert [f.code for f in edge.findings][:1] == ["edge-divisor"]
    assert "a constant input of 1 gives 0.667" in edge.findings[0].message
    # not counting padding, or max: no divisor finding
    assert "padding-heavy-window" not in [
        f.code for f in pk.diagnose((1, 1, 4, 4), "avg", 3, 1, 1, 1, False, False).findings
    ]
    assert "padding-heavy-window" not in [f.code for f in pk.diagnose((1, 1, 4, 4), "max", 3, 1, 1).findings]


def test_partial_ceil_window_says_how_it_divides():
    # 5 cells, k=2, s=2, ceil: windows 0-1, 2-3 and 4-5; the last runs 1 cell past the input and the
    # padding (none). Its count_include_pad divisor is the 1 tap inside the padded extent.
    report = pk.diagnose((1, 1, 5), "avg", 2, 2, ceil_mode=True)
    assert report.output_shape == (1, 1, 3)
    partial = [f for f in report.findings if f.code == "partial-ceil-window"]
    assert partial == [
        Finding(
            "partial-ceil-window",
            "info",
            0,
            "ceil_mode adds window 2 on the positions, reading 4..5 and running 1 cell(s) past the input, "
            "1 past the padding; its divisor along the positions is 1 (taps inside the padded extent)",
            "set ceil_mode=False to drop it (and lose positions 4..4 not read by other windows)",
        )
    ]
    np.testing.assert_allclose(pk.avg_pool(np.arange(5.0)[None, None], 2, 2, ceil_mode=True), [[[0.5, 2.5, 4.0]]])
    assert "1 real cell(s) only" in pk.diagnose((1, 1, 5), "max", 2, 2, ceil_mode=True).findings[0].message
    shapes = [f for f in report.findings if f.code == "framework-divergence"]
    assert "TensorFlow has no ceil mode and gives 2 with the same padding" in shapes[0].message


def test_overlap_cost_and_sliding_windows():
    # k=3, s=1, no padding over 10: reads per cell 1,2,3,3,...,3,2,1: 24 reads of 10 cells = 2.4 each.
    report = pk.diagnose((1, 1, 10), "max", 3, 1)
    (finding,) = report.findings
    assert finding.code == "overlap-cost"
    assert "each read input cell is read 2.4 times on average" in finding.message
    assert finding.fix.startswith("none needed if the overlap is intended")
    large = pk.diagnose((1, 1, 32, 32), "max", 9, 1, 4)
    overlap = next(f for f in large.findings if f.code == "overlap-cost")
    assert "rows, columns poolkit's kernels combine blocks of 1, 2, 4, ... cells" in overlap.fix


def test_asymmetric_padding_and_its_pytorch_spelling():
    # AlexNet's last pool: 12x12, k=3, s=2, pads (0, 1): 6 windows at 0, 2, ..., 10, the last one
    # reading 10, 11 and a padding cell; ceil_mode=True with no padding gives the same 6 windows.
    report = pk.diagnose((1, 256, 12, 12), "max", 3, 2, ((0, 1), (0, 1)))
    finding = next(f for f in report.findings if f.code == "asymmetric-padding")
    assert finding.message.startswith("padding (0, 1) on the rows, (0, 1) on the columns is asymmetric")
    assert finding.fix == "in PyTorch use padding=0 with ceil_mode=True: the same windows"
    assert pk.diagnose((1, 256, 12, 12), "max", 3, 2, 0, ceil_mode=True).output_shape == report.output_shape
    same = pk.diagnose((1, 1, 6), "max", 2, 1, "same")
    assert "(0, 1) on the positions" in next(f for f in same.findings if f.code == "asymmetric-padding").message


def test_framework_divergence_for_avg_padding_dilation_and_lp():
    avg = pk.diagnose((1, 1, 6, 6), "avg", 3, 2, 1, count_include_pad=False)
    divergence = [f.message for f in avg.findings if f.code == "framework-divergence"]
    assert divergence == [
        "windows that read padding average differently: PyTorch's default count_include_pad=True divides "
        "window (0, 0) by 9, ONNX's default count_include_pad=0 and TensorFlow's SAME by its 4 real cells"
    ]
    dilated = pk.diagnose((1, 1, 9), "avg", 2, 1, dilation=2)
    assert any("PyTorch's avg_pool has none" in f.message for f in dilated.findings)
    lp = pk.diagnose((1, 1, 8), "lp", 2)
    assert [f.code for f in lp.findings] == ["framework-divergence"]
    assert "without the absolute value" in lp.findings[0].message


def test_aliasing_only_for_strided_max():
    assert "aliasing" in [f.code for f in pk.diagnose((1, 1, 8, 8), "max", 2).findings]
    assert "aliasing" not in [f.code for f in pk.diagnose((1, 1, 8, 8), "avg", 2).findings]
    assert "aliasing" not in [f.code for f in pk.diagnose((1, 1, 8, 8), "max", 3, 1, 1).findings]


def test_degenerate_layers():
    identity = pk.diagnose((1, 3, 8, 8), "max", 1, 1)
    assert codes(identity) == [("degenerate", "warning", None)]
    assert identity.findings[0].fix == "remove the layer"
    whole = pk.diagnose((1, 2048, 7, 7), "avg", 7)
    assert codes(whole) == [("degenerate", "info", None)]
    assert whole.findings[0].fix.startswith("use pk.global_avg_pool")
    # padding counted in the divisor makes it differ from a global average: not suggested
    padded = pk.diagnose((1, 1, 6, 6), "avg", 7, 1, ((0, 1), (0, 1)), count_include_pad=True)
    assert "degenerate" not in [f.code for f in padded.findings]
    assert "degenerate" in [
        f.code for f in pk.diagnose((1, 1, 6, 6), "avg", 7, 1, ((0, 1), (0, 1)), count_include_pad=False).findings
    ]


def test_global_ops_read_everything_once():
    report = pk.diagnose((2, 8, 5, 7), "global_max")
    assert report.output_shape == (2, 8, 1, 1)
    assert report.findings == ()
    assert report.never_read_fraction == 0.0
    assert report.reads_per_input == 1.0


def test_channels_last_shapes_and_costs():
    report = pk.diagnose((2, 8, 8, 3), "max", 2, channels_last=True)
    assert report.output_shape == (2, 4, 4, 3)
    assert report.bytes_read == 2 * 3 * 64 * 4
    assert report.bytes_written == 2 * 3 * 16 * 4
    assert report.ops_per_output == 4.0
    ints = pk.diagnose((2, 3, 8, 8), "avg", 2, dtype="int8")
    assert (ints.bytes_read, ints.bytes_written) == (2 * 3 * 64, 2 * 3 * 16 * 8)  # avg of ints is float64


def test_text_and_json_renderings():
    report = pk.diagnose((1, 3, 112, 112), "max", 3, 2)
    text = str(report)
    assert "max pool: input 1x3x112x112 -> output 1x3x55x55" in text
    assert "floor((112 + 0 + 0 - 1*(3 - 1) - 1) / 2) + 1 = 55" in text
    assert "warning dropped-tail [rows]: input rows 111 of 0..111 are never read" in text
    data = json.loads(report.to_json())
    assert sorted(data) == ["axes", "channels_last", "cost", "counts", "coverage", "findings", "input_shape", "op",
                            "output_shape", "params"]  # fmt: skip
    assert data["params"] == {
        "kernel_size": [3, 3], "stride": [2, 2], "padding": [[0, 0], [0, 0]], "dilation": [1, 1],
        "ceil_mode": False, "count_include_pad": True,
    }  # fmt: skip
    assert data["axes"][0]["never_read"] == [111]
    assert data["axes"][0]["reads"][:4] == [1, 1, 2, 1]
    assert data["findings"][0] == {
        "code": "dropped-tail", "severity": "warning", "axis": 0,
        "message": "input rows 111 of 0..111 are never read (0.9% of the input)",
        "fix": "use ceil_mode=True, or pad the rows (0, 1) (before, after), or crop the rows to 111",
    }  # fmt: skip
    assert data["counts"] == {"error": 0, "warning": 2, "info": 2}
    assert data["cost"]["bytes_read"] == 3 * 111 * 111 * 4


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    for shape, kernel in (((1, 1, 9, 12), (3, 2)), ((1, 1, 10), 3), ((1, 1, 4, 5, 6), 2)):
        path = tmp_path / "coverage.png"
        pk.diagnose(shape, "max", kernel, 2).plot(path)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(pk.PoolingConfigError, match=r"axes=\(1, 1\) must name two different spatial axes"):
        pk.diagnose((1, 1, 9, 12), "max", 2).plot(tmp_path / "x.png", axes=(1, 1))


def test_plot_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(ImportError, match=r"pip install 'poolkit\[plot\]'"):
        pk.diagnose((1, 1, 9, 12), "max", 2).plot(tmp_path / "x.png")


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (((1, 1, 8), "mean", 2), {}, pk.PoolingConfigError, r"op='mean' is not an option; use 'max' or"),
        (((1, 1, 8), "max"), {}, pk.PoolingConfigError, r"op='max' needs kernel_size"),
        (((1, 1, 8), "global_avg", 2), {}, pk.PoolingConfigError, r"op='global_avg' pools the whole input"),
        (("1x1x8", "max", 2), {}, pk.PoolingTypeError, r"input_shape='1x1x8' must be a sequence of ints"),
        (((1, 8), "max", 2), {}, pk.PoolingConfigError, r"needs a batch, a channel and at least one spatial"),
        (((1, 1, 0), "max", 2), {}, pk.PoolingConfigError, r"holds 0; every size must be >= 1"),
        (((1, 1, 8.0), "max", 2), {}, pk.PoolingTypeError, r"holds 8.0; every size must be an int"),
        (((1, 1, 8), "max", 2), {"dtype": "nope"}, pk.PoolingTypeError, r"dtype='nope' is not a NumPy dtype"),
        (((1, 1, 8), "avg", 2), {"count_include_pad": 1}, pk.PoolingTypeError, r"count_include_pad=1 must be"),
        (((1, 1, 8), "max", 3, 1, 2), {}, pk.PoolingConfigError, r"more than half the kernel"),
    ],
)
def test_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        pk.diagnose(*args, **kwargs)


def test_a_window_of_padding_alone_is_an_error_finding_and_the_ops_refuse_it():
    # k=2, dilation 4, padding 1 over 3 cells: window o reads o-1 and o+3; window 0 reads -1 and 3, both padding.
    report = pk.diagnose((1, 1, 3), "max", 2, 1, 1, dilation=4)
    finding = report.findings[0]
    assert (finding.code, finding.severity, finding.axis) == ("padding-only-window", "error", 0)
    assert finding.message == (
        "1 of 1 windows along the positions read only padding: window 0 reads positions -1, 3 of 0..2 "
        "(padding 1+1, dilation 4); poolkit refuses this layer and PyTorch returns -inf there"
    )
    assert finding.fix == "use less padding or a smaller dilation on the positions"
    assert report.to_dict()["findings"][0]["code"] == "padding-only-window"
    with pytest.raises(pk.PoolingConfigError, match=r"1 window\(s\) along spatial axis 0 read only padding"):
        pk.max_pool(np.ones((1, 1, 3)), 2, 1, 1, dilation=4)


def test_report_is_exact_for_a_large_axis():
    # MaxPool1d of ONNX's PyTorch fixtures: 220000 cells, k=200, dilation 10, padding 100, stride 10.
    # Every tap lands on o*10 - 100 + j*10, a multiple of 10: nine cells in ten are never read. The
    # 21821 windows end at 218100 + 1990 = 220090, past the input: no tail, only gaps.
    report = pk.diagnose((1, 1, 220000), "max", 200, 10, 100, 10)
    assert report.output_shape == (1, 1, 21821)
    reads = np.zeros(220000, dtype=np.int64)
    positions = (np.arange(21821)[:, None] * 10 - 100 + np.arange(200) * 10).ravel()
    np.add.at(reads, positions[(positions >= 0) & (positions < 220000)], 1)
    np.testing.assert_array_equal(report.axes[0].reads, reads)
    assert report.never_read_fraction == pytest.approx(0.9)
    gaps, *others = report.findings
    assert gaps.code == "skipped-cells"
    assert "dropped-tail" not in [f.code for f in others]
    assert gaps.message.endswith(
        "(stride 10 with dilation 10, window span 1991) and are never read (90.0% of the input)"
    )
    assert gaps.fix == "use dilation 1 on the positions"

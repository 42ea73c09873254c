"""Window: output sizes, padding forms, ceil mode, taps, counts and divisors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poolkit import PoolingConfigError, Window


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "dilation", "ceil", "out"),
    [
        (112, 3, 2, 1, 1, False, 56),  # ResNet stem
        (7, 2, 2, 0, 1, False, 3),  # floor drops the last row
        (7, 2, 2, 0, 1, True, 4),  # ceil keeps a partial window
        (5, 2, 2, 1, 1, True, 3),  # a 4th ceil window would start in the right padding: dropped
        (10, 3, 1, 0, 3, False, 4),  # dilation: span 7
        (5, 1, 3, 0, 1, False, 2),
    ],
)
def test_out_size_formula(size, kernel, stride, padding, dilation, ceil, out):
    window = Window.build((size,), kernel, stride, padding, dilation, ceil)
    assert window.out_shape == (out,)


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "dilation", "same", "same_lower"),
    [
        (5, 2, 1, 1, (0, 1), (1, 0)),
        (5, 3, 2, 1, (1, 1), (1, 1)),
        (6, 3, 2, 1, (0, 1), (1, 0)),
        (7, 4, 1, 1, (1, 2), (2, 1)),
        (7, 3, 1, 2, (2, 2), (2, 2)),
        (8, 3, 4, 1, (0, 0), (0, 0)),
    ],
)
def test_same_padding_splits_the_odd_cell(size, kernel, stride, dilation, same, same_lower):
    upper = Window.build((size,), kernel, stride, "same", dilation)
    lower = Window.build((size,), kernel, stride, "SAME_LOWER", dilation)
    assert upper.padding == (same,) and lower.padding == (same_lower,)
    assert upper.out_shape == lower.out_shape == (-(-size // stride),)


def test_padding_forms():
    assert Window.build((8, 8), 3, padding=1).padding == ((1, 1), (1, 1))
    assert Window.build((8, 8), 3, padding=(1, 0)).padding == ((1, 1), (0, 0))
    assert Window.build((8, 8), 3, padding=((0, 1), 1)).padding == ((0, 1), (1, 1))
    assert Window.build((8, 8), 3, padding="valid").padding == ((0, 0), (0, 0))
    assert Window.build((8, 8), [3, 2], stride=np.array([1, 2])).kernel_size == (3, 2)


def test_window_is_cached_and_immutable():
    first = Window.build((9, 9), 3, 2, 1)
    assert Window.build((9, 9), (3, 3), (2, 2), ((1, 1), (1, 1))) is first
    with pytest.raises(ValueError, match="read-only"):
        first.axes[0].real_counts[0] = 5
    with pytest.raises(AttributeError):
        first.axes = ()


def test_a_window_hashes_as_its_axes_once_formed_and_after_pickling():
    """The hash is formed once and kept (the kernels' caches look a Window up on every call); an equal
    Window built apart, or one that went through pickle, hashes and compares the same."""
    first = Window.build((9, 9), 3, 2, 1)
    apart = Window(axes=first.axes)
    copied = pickle.loads(pickle.dumps(first))
    assert apart is not first and apart == first == copied
    assert hash(first) == hash(apart) == hash(copied) == hash(first.axes)
    assert {first: "tables"}[copied] == "tables"
    assert hash(Window.build((9, 9), 3, 2, 0)) != hash(first)


def test_counts_and_divisors_at_the_border():
    window = Window.build((5,), 3, 2, 1, ceil_mode=True)  # windows start at -1, 1, 3
    axis = window.axes[0]
    assert axis.starts.tolist() == [-1, 1, 3]
    assert axis.real_counts.tolist() == [2, 3, 2]  # last window reads 3, 4 and hangs past the end
    assert axis.padded_counts.tolist() == [3, 3, 3]  # clipped at 5 + 1 padding cell
    np.testing.assert_array_equal(window.divisor(False), [2.0, 3.0, 2.0])
    np.testing.assert_array_equal(window.divisor(divisor_override=4), [4.0, 4.0, 4.0])
    two_d = Window.build((5, 4), (3, 2), (2, 2), ((1, 1), (0, 0)))
    np.testing.assert_array_equal(two_d.real_counts, np.outer([2, 3, 2], [2, 2]))


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(1, 12),
    kernel=st.integers(1, 5),
    stride=st.integers(1, 4),
    dilation=st.integers(1, 3),
    data=st.data(),
)
def test_taps_list_exactly_the_real_cells_of_each_window(size, kernel, stride, dilation, data):
    before = data.draw(st.integers(0, kernel // 2))
    after = data.draw(st.integers(0, kernel // 2))
    ceil = data.draw(st.booleans())
    try:
        window = Window.build((size,), kernel, stride, ((before, after),), dilation, ceil)
    except PoolingConfigError:
        return
    axis = window.axes[0]
    # brute force: every window's taps, and which of them are real
    expected = {}
    for o in range(axis.out_size):
        for j in range(kernel):
            pos = o * stride - before + j * dilation
            if 0 <= pos < size:
                expected[(o, j)] = pos
    got = {}
    for tap in axis.taps:
        for o, pos in zip(range(tap.out_start, tap.out_stop), tap.in_positions):
            got[(o, tap.offset)] = int(pos)
    assert got == expected
    assert axis.real_counts.tolist() == [sum(1 for (o, _) in expected if o == i) for i in range(axis.out_size)]
    # the last window starts inside the input or the left padding, and the output is maximal
    assert (axis.out_size - 1) * stride - before < size
    span = dilation * (kernel - 1) + 1
    if not ceil:
        assert (axis.out_size - 1) * stride + span <= size + before + after
        assert axis.out_size * stride + span > size + before + after


def test_flat_index_of_a_tap():
    window = Window.build((4, 5), 2)
    offsets, taps = list(window.taps())[3]
    assert offsets == (1, 1)
    np.testing.assert_array_equal(window.flat_index(taps), [[6, 8], [16, 18]])


def test_identity_axes():
    """Kernel 1, stride 1 and no padding change nothing; the kernels skip such axes."""
    window = Window.build((5, 6, 7), (1, 2, 1), stride=(1, 1, 2))
    assert [a.is_identity for a in window.axes] == [True, False, False]
    assert Window.build((5,), 1, padding="same").axes[0].is_identity


def test_cached_resolution_keeps_every_check():
    """Plain arguments resolve once; a bool or a NumPy scalar equal to a cached int is still checked."""
    from poolkit import PoolingTypeError

    assert Window.build((8,), 2) is Window.build((8,), 2)
    assert Window.build((8,), np.int64(2)) == Window.build((8,), 2)  # checked, then an equal window
    Window.build((8,), 1)  # cached: True == 1 must not find it
    with pytest.raises(PoolingTypeError, match=r"kernel_size=True must be an integer, got bool"):
        Window.build((8,), True)
    Window.build((8,), 2, ceil_mode=True)
    with pytest.raises(PoolingTypeError, match=r"ceil_mode=1 must be True or False"):
        Window.build((8,), 2, ceil_mode=1)
    for _ in range(2):  # errors are not cached
        with pytest.raises(PoolingConfigError, match=r"padding=2 puts 2 cells on one side"):
            Window.build((8,), 3, padding=2)


def test_divisor_factors_count_each_windows_taps_along_each_axis():
    window = Window.build((7, 6, 5), (3, 2, 4), (2, 1, 3), ((1, 2), 1, 2), ceil_mode=True)
    for include_pad in (True, False):
        for factor, axis in zip(window.divisor_factors(include_pad), window.axes):
            low, high = (-axis.pad_before, axis.size + axis.pad_after) if include_pad else (0, axis.size)
            # brute force: the taps of window o at o*stride - pad_before + j*dilation inside [low, high)
            expected = [
                sum(low <= o * axis.stride - axis.pad_before + j * axis.dilation < high for j in range(axis.kernel))
                for o in range(axis.out_size)
            ]
            assert factor.dtype == np.float64 and factor.tolist() == expected
    override = window.divisor_factors(True, 5)
    first, *rest = window.out_shape
    assert [f.tolist() for f in override] == [[5.0] * first, *([1.0] * n for n in rest)]
    np.testing.assert_array_equal(window.divisor(True, 5), np.full(window.out_shape, 5.0))


def test_bins_of_no_axis_are_refused():
    from poolkit.geometry import Bins

    with pytest.raises(PoolingConfigError, match=r"pooling needs at least one spatial axis; got an input with none"):
        Bins.adaptive((), 1)


def test_a_tap_that_reads_nothing_has_an_empty_input_slice():
    """Tap 0 of this window lands in the padding only: its input slice is empty, not a wrap-around to the end."""
    axis = Window.build((7,), 4, 5, 2, 2).axes[0]
    empty = axis.taps[0]
    assert empty.out_start == empty.out_stop
    assert np.arange(7)[empty.in_slice].size == 0
    assert [int(i) for tap in axis.taps for i in np.arange(7)[tap.in_slice]] == [0, 2, 4]

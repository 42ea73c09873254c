"""The other layers of a small CNN: :class:`Conv2d`, :class:`Linear`, :class:`ReLU`, :class:`Flatten`, :class:`Dropout`.

Weights are drawn with He initialisation (:func:`he_normal`) from a seeded
:class:`numpy.random.Generator`, so a network built with the same seeds is
the same network. Layers compute in their parameters' dtype (``float32`` by
default; :meth:`Module.astype` converts).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from ..errors import PoolingConfigError
from ..geometry import Axis, IntOrSeq, Window
from .module import Module, Parameter

__all__ = ["he_normal", "Conv2d", "Linear", "ReLU", "Flatten", "Dropout"]


def he_normal(
    rng: np.random.Generator | int | None, shape: tuple[int, ...], fan_in: int, dtype: DTypeLike
) -> np.ndarray:
    """Weights drawn from ``N(0, 2 / fan_in)``: He et al.'s initialisation for layers followed by ReLU.

    Examples
    --------
    >>> w = he_normal(0, (1000, 50), fan_in=50, dtype="float32")
    >>> round(float(w.std() ** 2 * 50), 1)
    2.0
    """
    return (np.random.default_rng(rng).standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)


def _positive_int(layer: str, name: str, value: object) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise PoolingConfigError(f"{layer}: {name}={value!r} must be a positive int")
    return int(value)


def _conv_padding(padding: object, window: Window) -> tuple[tuple[int, int], ...]:
    """PyTorch's conv2d padding as ``(before, after)`` per axis, given the kernel, stride and dilation of ``window``."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * window.rank
        if padding == "same":
            if any(s != 1 for s in window.stride):
                raise PoolingConfigError(
                    f"Conv2d: padding='same' needs stride 1 (as in PyTorch); got stride={window.stride}. "
                    "Give the padding as ints"
                )
            totals = [d * (k - 1) for k, d in zip(window.kernel_size, window.dilation)]
            return tuple((t // 2, t - t // 2) for t in totals)
        raise PoolingConfigError(
            f"Conv2d: padding={padding!r} is not an option; use an int, two ints, 'valid' or 'same'"
        )
    values = (padding,) * window.rank if isinstance(padding, (int, np.integer)) else padding
    try:
        values = tuple(values)
    except TypeError:
        values = ()
    if len(values) != window.rank or any(
        isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 0 for v in values
    ):
        raise PoolingConfigError(
            f"Conv2d: padding={padding!r} must be a non-negative int, {window.rank} of them, 'valid' or 'same'"
        )
    return tuple((int(v), int(v)) for v in values)


class Conv2d(Module):
    """2-D convolution (cross-correlation, as in PyTorch) by im2col and one batched matrix product.

    ``y[n, o, i, j] = b[o] + sum_{c, u, v} w[o, c, u, v] * x[n, g*C/G + c, i*s - p + u*d, j*s - p + v*d]``
    where ``g`` is the group of output channel ``o``, and the output size per
    axis is ``floor((L + 2p - d*(k-1) - 1) / s) + 1``. The taps are those of a
    :class:`poolkit.Window` (padding is never materialised), but the rules are
    PyTorch's for convolution: any padding, and windows that read only
    padding give the bias.

    Parameters
    ----------
    in_channels, out_channels : int
        Both divisible by ``groups``.
    kernel_size, stride, dilation : int or (int, int)
        As in :func:`torch.nn.functional.conv2d`.
    padding : int, (int, int), "valid" or "same"
        As in PyTorch: symmetric per axis; ``"same"`` (stride 1 only) keeps the
        size and puts an odd padding cell at the end.
    groups : int
        ``groups=in_channels`` gives a depthwise convolution.
    bias : bool
        Add a learnable per-channel bias (initialised to 0).
    rng : numpy.random.Generator, int or None
        Source of the He-initialised weights.
    dtype : dtype
        Parameter dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> conv = nn.Conv2d(3, 8, 3, padding=1, rng=0)
    >>> conv(np.zeros((2, 3, 8, 8), dtype=np.float32)).shape
    (2, 8, 8, 8)
    >>> conv.weight.value.shape
    (8, 3, 3, 3)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrSeq,
        stride: IntOrSeq = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: IntOrSeq = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        rng: np.random.Generator | int | None = None,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        in_channels = _positive_int("Conv2d", "in_channels", in_channels)
        out_channels = _positive_int("Conv2d", "out_channels", out_channels)
        groups = _positive_int("Conv2d", "groups", groups)
        if in_channels % groups or out_channels % groups:
            raise PoolingConfigError(
                f"Conv2d: groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}"
            )
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.stride, self.padding, self.dilation = stride, padding, dilation
        # Kernel, stride and dilation are checked as a pooling window's; padding follows conv2d's own rules.
        probe = Window.build((2**20, 2**20), kernel_size, stride, 0, dilation)
        self.kernel_size = probe.kernel_size
        self._strides, self._dilations = probe.stride, probe.dilation
        self._pads = _conv_padding(padding, probe)
        fan_in = in_channels // groups * self.kernel_size[0] * self.kernel_size[1]
        self.weight = Parameter(he_normal(rng, (out_channels, in_channels // groups, *self.kernel_size), fan_in, dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype=dtype)) if bias else None
        self._cols = self._x_shape = self._window = None

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        for name, default in (("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1)):
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)!r}"
        return text + ("" if self.bias is not None else ", bias=False")

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.check_input(x, ("N", self.in_channels, "H", "W"))
        x = np.asarray(x)
        n, _, _, _ = x.shape
        window = self._window_for(x.shape[2:])
        out_h, out_w = window.out_shape
        groups, per_group = self.groups, self.in_channels // self.groups
        kh, kw = self.kernel_size
        dtype = np.result_type(x.dtype, self.weight.value.dtype)
        cols = np.zeros((n, groups, per_group, kh, kw, out_h, out_w), dtype=dtype)
        grouped = x.reshape(n, groups, per_group, *x.shape[2:])
        for (u, v), (tap_h, tap_w) in window.taps():
            cols[:, :, :, u, v, tap_h.out_slice, tap_w.out_slice] = grouped[..., tap_h.in_slice, tap_w.in_slice]
        cols = cols.reshape(n, groups, per_group * kh * kw, out_h * out_w)
        weight = self.weight.value.reshape(groups, self.out_channels // groups, -1)
        y = np.matmul(weight, cols).reshape(n, self.out_channels, out_h, out_w)
        if self.bias is not None:
            y += self.bias.value[:, None, None]
        if self.training:
            self._cols, self._x_shape, self._window = cols, x.shape, window
        return y

    def _window_for(self, spatial: tuple[int, int]) -> Window:
        """The taps of this convolution over an input of size ``spatial``."""
        axes = []
        for size, kernel, stride, dilation, (before, after) in zip(
            spatial, self.kernel_size, self._strides, self._dilations, self._pads
        ):
            span = dilation * (kernel - 1) + 1
            if size + before + after < span:
                raise self._shape_error(
                    f"needs input of at least {span - before - after} cells along each spatial axis for its "
                    f"{span}-cell dilated kernel (padding {before}+{after}); got shape {(-1, -1, *spatial)}"
                )
            out = (size + before + after - span) // stride + 1
            axes.append(Axis(size, kernel, stride, dilation, before, after, False, out))
        return Window(tuple(axes))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        cols = self._require("_cols")
        window, (n, _, height, width) = self._window, self._x_shape
        out_h, out_w = window.out_shape
        self.check_output_grad(dy, (n, self.out_channels, out_h, out_w))
        groups, per_group = self.groups, self.in_channels // self.groups
        kh, kw = self.kernel_size
        grouped_dy = np.asarray(dy).reshape(n, groups, self.out_channels // groups, out_h * out_w)
        if self.bias is not None:
            self.bias.grad += grouped_dy.sum(axis=(0, 3)).reshape(-1)
        # Batched products, then a sum over the batch: unlike one large tensordot, this stays fast when a
        # multi-threaded BLAS meets these small matrices.
        self.weight.grad += (
            np.matmul(grouped_dy, cols.transpose(0, 1, 3, 2)).sum(axis=0).reshape(self.weight.grad.shape)
        )
        weight = self.weight.value.reshape(groups, self.out_channels // groups, -1)
        dcols = np.matmul(weight.transpose(0, 2, 1), grouped_dy).reshape(n, groups, per_group, kh, kw, out_h, out_w)
        dx = np.zeros((n, groups, per_group, height, width), dtype=dcols.dtype)
        for (u, v), (tap_h, tap_w) in window.taps():
            dx[..., tap_h.in_slice, tap_w.in_slice] += dcols[:, :, :, u, v, tap_h.out_slice, tap_w.out_slice]
        return dx.reshape(n, self.in_channels, height, width)


class Linear(Module):
    """Fully connected layer: ``y = x @ weight.T + bias``, weight of shape ``(out_features, in_features)``.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> layer = nn.Linear(3, 2, rng=0)
    >>> layer(np.ones((4, 3), dtype=np.float32)).shape
    (4, 2)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        rng: np.random.Generator | int | None = None,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        self.in_features = _positive_int("Linear", "in_features", in_features)
        self.out_features = _positive_int("Linear", "out_features", out_features)
        self.weight = Parameter(he_normal(rng, (self.out_features, self.in_features), self.in_features, dtype))
        self.bias = Parameter(np.zeros(self.out_features, dtype=dtype)) if bias else None
        self._x = None

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}" + ("" if self.bias is not None else ", bias=False")

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.check_input(x, ("N", self.in_features))
        x = np.asarray(x)
        y = x @ self.weight.value.T
        if self.bias is not None:
            y += self.bias.value
        self._x = x if self.training else None
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x = self._require("_x")
        self.check_output_grad(dy, (x.shape[0], self.out_features))
        self.weight.grad += dy.T @ x
        if self.bias is not None:
            self.bias.grad += dy.sum(axis=0)
        return dy @ self.weight.value


class ReLU(Module):
    """``max(x, 0)``; the gradient is passed where ``x > 0``.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> nn.ReLU()(np.array([-1.0, 0.0, 2.0]))
    array([0., 0., 2.])
    """

    def __init__(self) -> None:
        super().__init__()
        self._mask = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        mask = x > 0
        self._mask = mask if self.training else None
        return np.where(mask, x, np.zeros((), dtype=x.dtype))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        mask = self._require("_mask")
        self.check_output_grad(dy, mask.shape)
        return np.where(mask, dy, np.zeros((), dtype=np.asarray(dy).dtype))


class Flatten(Module):
    """``(N, *rest) -> (N, prod(rest))``.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> nn.Flatten()(np.zeros((2, 3, 4, 4))).shape
    (2, 48)
    """

    def __init__(self) -> None:
        super().__init__()
        self._x_shape = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim < 1:
            raise self._shape_error(f"expects input with a batch axis, got shape {x.shape}")
        self._x_shape = x.shape if self.training else None
        return x.reshape(x.shape[0], -1)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x_shape = self._require("_x_shape")
        self.check_output_grad(dy, (x_shape[0], int(np.prod(x_shape[1:]))))
        return np.reshape(dy, x_shape)


class Dropout(Module):
    """Zero each input with probability ``p`` in training and scale the rest by ``1 / (1 - p)``; identity in eval.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> drop = nn.Dropout(0.5, rng=0)
    >>> drop(np.ones(6))
    array([2., 0., 0., 0., 2., 2.])
    >>> drop.eval()(np.ones(3))
    array([1., 1., 1.])
    """

    def __init__(self, p: float = 0.5, *, rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.floating)) or not 0 <= p < 1:
            raise PoolingConfigError(f"Dropout: p={p!r} must be a probability in [0, 1)")
        self.p = float(p)
        self.rng = np.random.default_rng(rng)
        self._scale = None

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if not self.training or self.p == 0:
            self._scale = np.ones((), dtype=x.dtype) if self.training else None
            return x
        keep = self.rng.random(x.shape) >= self.p
        self._scale = keep.astype(x.dtype) / x.dtype.type(1 - self.p)
        return x * self._scale

    def backward(self, dy: np.ndarray) -> np.ndarray:
        scale = self._require("_scale")
        if scale.ndim:
            self.check_output_grad(dy, scale.shape)
        return dy * scale

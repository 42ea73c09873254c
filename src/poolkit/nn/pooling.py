"""A layer for every 2-D pooling op of poolkit, each a thin wrapper around :func:`poolkit.vjp`.

A pooling layer holds its op's configuration. In training mode its forward
pass runs ``poolkit.vjp(op, x, **config)`` and keeps the pullback, and its
backward pass calls it: the gradients are the ops' own, there is no second
copy of any of them here. In evaluation mode the op runs without a pullback
(max pooling then skips its indices). Layers with a learnable parameter
(:class:`MixedPool2d`'s ``alpha``, :class:`GeM`'s ``p``) pass the parameter to
the op and take its gradient from the pullback's ``(dx, dparam)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import DTypeLike

import poolkit

from ..autodiff import vjp
from ..errors import PoolingConfigError
from .module import Module, Parameter

__all__ = [
    "MaxPool2d", "AvgPool2d", "LPPool2d", "MinPool2d",
    "GlobalAvgPool", "GlobalMaxPool", "GlobalLPPool", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "GeM",
    "SpatialPyramidPool", "SPPConcat", "StochasticPool2d", "FractionalMaxPool2d", "MixedPool2d",
    "BlurPool2d", "AntialiasedMaxPool2d",
]  # fmt: skip


class _Pool(Module):
    """One poolkit op with a fixed configuration; subclasses name the op and their parameters."""

    op_name: str  # the function's name in the poolkit namespace

    def __init__(self, **config: object) -> None:
        super().__init__()
        self.config = config
        self._pullback = self._y_shape = None

    @property
    def op(self) -> Callable:
        return getattr(poolkit, self.op_name)

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={value!r}" for name, value in self.config.items())

    def arguments(self) -> dict[str, object]:
        """The op's keyword arguments for the next call."""
        return self.config

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.check_input(x, ("N", "C", "H", "W"))
        if self.training:
            y, self._pullback = vjp(self.op, x, **self.arguments())
        else:
            y, self._pullback = self.op(x, **self.arguments()), None
        self._y_shape = np.shape(y)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        pullback = self._require("_pullback")
        self.check_output_grad(dy, self._y_shape)
        return self.take_gradients(pullback(dy))

    def take_gradients(self, gradients: object) -> np.ndarray:
        """Keep the gradients of this layer's parameters from the pullback's result; return ``dx``."""
        return gradients


class _LearnablePool(_Pool):
    """A pool whose op takes one learnable value and whose pullback returns ``(dx, dvalue)``.

    The layer's :class:`~poolkit.nn.Parameter` (attribute ``param_name``) maps
    to the op's argument ``op_param`` through :meth:`to_op`; :meth:`chain`
    carries the op's gradient back through that map.
    """

    param_name: str
    op_param: str

    def __init__(self, initial: np.ndarray, dtype: DTypeLike, **config: object) -> None:
        super().__init__(**config)
        setattr(self, self.param_name, Parameter(np.asarray(initial, dtype=dtype)))

    def to_op(self, raw: np.ndarray) -> np.ndarray:
        """The op's argument for the parameter value ``raw``."""
        return raw

    def chain(self, raw: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """The gradient with respect to ``raw``, given the gradient ``grad`` with respect to :meth:`to_op`."""
        return grad

    def current(self) -> np.ndarray:
        """The value the op receives now."""
        return self.to_op(getattr(self, self.param_name).value)

    def extra_repr(self) -> str:
        value = self.current()
        shown = f"{float(value):.4g}" if value.ndim == 0 else f"<{value.shape[0]} per channel>"
        return ", ".join(filter(None, [super().extra_repr(), f"{self.op_param}={shown}"]))

    def arguments(self) -> dict[str, object]:
        value = self.current()
        return {**self.config, self.op_param: float(value) if value.ndim == 0 else value}

    def take_gradients(self, gradients: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        dx, dvalue = gradients
        param = getattr(self, self.param_name)
        param.grad += self.chain(param.value, np.reshape(dvalue, param.value.shape))
        return dx


class MaxPool2d(_Pool):
    """:func:`poolkit.max_pool2d` as a layer.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> pool = nn.MaxPool2d(2)
    >>> y = pool(np.arange(16.).reshape(1, 1, 4, 4))
    >>> y[0, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    >>> pool.backward(np.ones_like(y))[0, 0]
    array([[0., 0., 0., 0.],
           [0., 1., 0., 1.],
           [0., 0., 0., 0.],
           [0., 1., 0., 1.]])
    """

    op_name = "max_pool2d"

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False) -> None:
        super().__init__(
            kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode
        )


class MinPool2d(_Pool):
    """:func:`poolkit.min_pool2d` as a layer.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> nn.MinPool2d(2)(np.arange(16.).reshape(1, 1, 4, 4))[0, 0]
    array([[ 0.,  2.],
           [ 8., 10.]])
    """

    op_name = "min_pool2d"

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False) -> None:
        super().__init__(
            kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode
        )


class AvgPool2d(_Pool):
    """:func:`poolkit.avg_pool2d` as a layer.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> nn.AvgPool2d(2)(np.arange(16.).reshape(1, 1, 4, 4))[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    """

    op_name = "avg_pool2d"

    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> None:
        super().__init__(
            kernel_size=kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
            count_include_pad=count_include_pad, divisor_override=divisor_override,
        )  # fmt: skip


class LPPool2d(_Pool):
    """:func:`poolkit.lp_pool2d` as a layer: ``(sum |x|**p)**(1/p)`` per window (the power mean with ``mean=True``).

    ``norm_type=2`` is L2 pooling. Unlike PyTorch's ``LPPool2d`` it takes the
    absolute value, so it is right for negative inputs and odd powers.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> nn.LPPool2d(2, 2)(np.full((1, 1, 2, 2), 3.0))[0, 0]
    array([[6.]])
    """

    op_name = "lp_pool2d"

    def __init__(self, norm_type: float, kernel_size, stride=None, ceil_mode: bool = False, mean: bool = False):
        super().__init__(p=norm_type, kernel_size=kernel_size, stride=stride, ceil_mode=ceil_mode, mean=mean)


class GlobalAvgPool(_Pool):
    """:func:`poolkit.global_avg_pool` as a layer: ``(N, C, H, W) -> (N, C)``, any ``H, W``.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> nn.GlobalAvgPool()(np.arange(8.).reshape(1, 2, 2, 2))
    array([[1.5, 5.5]])
    """

    op_name = "global_avg_pool"

    def __init__(self) -> None:
        super().__init__()


class GlobalMaxPool(_Pool):
    """:func:`poolkit.global_max_pool` as a layer: ``(N, C, H, W) -> (N, C)``, any ``H, W``.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> nn.GlobalMaxPool()(np.arange(8.).reshape(1, 2, 2, 2))
    array([[3., 7.]])
    """

    op_name = "global_max_pool"

    def __init__(self) -> None:
        super().__init__()


class GlobalLPPool(_Pool):
    """:func:`poolkit.global_lp_pool` as a layer: ``(sum |x|**p)**(1/p)`` over each channel, ``(N, C, H, W) -> (N, C)``.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> nn.GlobalLPPool(2)(np.array([[[[3., 4.]]]]))
    array([[5.]])
    """

    op_name = "global_lp_pool"

    def __init__(self, norm_type: float = 2.0) -> None:
        super().__init__(p=norm_type)


class AdaptiveAvgPool2d(_Pool):
    """:func:`poolkit.adaptive_avg_pool2d` as a layer: any ``H, W`` to ``output_size``.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> nn.AdaptiveAvgPool2d(2)(np.ones((1, 3, 7, 5))).shape
    (1, 3, 2, 2)
    """

    op_name = "adaptive_avg_pool2d"

    def __init__(self, output_size) -> None:
        super().__init__(output_size=output_size)


class AdaptiveMaxPool2d(_Pool):
    """:func:`poolkit.adaptive_max_pool2d` as a layer: any ``H, W`` to ``output_size``.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> nn.AdaptiveMaxPool2d((1, 2))(np.arange(12.).reshape(1, 1, 3, 4))
    array([[[[ 9., 11.]]]])
    """

    op_name = "adaptive_max_pool2d"

    def __init__(self, output_size) -> None:
        super().__init__(output_size=output_size)


class GeM(_LearnablePool):
    """Generalised-mean pooling, :func:`poolkit.gem_pool`, with a learnable power ``p``.

    ``y = (mean over the bin of max(x, eps)**p)**(1/p)`` over ``output_size``
    adaptive bins (the default 1: global, ``(N, C, 1, 1)``). ``p`` is a
    :class:`~poolkit.nn.Parameter` whose gradient comes from the op's pullback.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> gem = nn.GeM(p=3.0)
    >>> y = gem(np.array([[[[1., 2.], [3., 4.]]]]))
    >>> dx = gem.backward(np.ones_like(y))
    >>> round(float(y.item()), 4), round(float(gem.p.grad), 4)   # ((1 + 8 + 27 + 64) / 4) ** (1/3)
    (2.924, 0.1621)
    """

    op_name = "gem_pool"
    param_name = op_param = "p"

    def __init__(self, p: float = 3.0, eps: float = 1e-6, output_size=1, *, dtype=np.float32) -> None:
        super().__init__(p, dtype, eps=eps, output_size=output_size)


class SpatialPyramidPool(_Pool):
    """:func:`poolkit.spatial_pyramid_pool` as a layer: ``(N, C, H, W) -> (N, C * sum(level**2))`` for any ``H, W``.

    The output length does not depend on the input size, so a network with
    this layer before its classifier takes images of any size (He et al. 2014).

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> spp = nn.SpatialPyramidPool(levels=(2, 1))
    >>> spp(np.ones((1, 3, 5, 7))).shape, spp(np.ones((1, 3, 9, 4))).shape
    ((1, 15), (1, 15))
    """

    op_name = "spatial_pyramid_pool"

    def __init__(self, levels=(4, 2, 1), op: str = "max", mode: str = "adaptive") -> None:
        super().__init__(levels=levels, op=op, mode=mode)


class SPPConcat(_Pool):
    """:func:`poolkit.spp_concat` as a layer: YOLO's SPP block, ``x`` and its same-size max pools on the channel axis.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> nn.SPPConcat((3, 5))(np.ones((1, 4, 6, 6))).shape
    (1, 12, 6, 6)
    """

    op_name = "spp_concat"

    def __init__(self, kernel_sizes=(5, 9, 13)) -> None:
        super().__init__(kernel_sizes=kernel_sizes)


class StochasticPool2d(_Pool):
    """:func:`poolkit.stochastic_pool` as a layer (Zeiler & Fergus 2013).

    In training each window outputs one of its cells, drawn with probability
    proportional to its (non-negative) activation, from the layer's seeded
    generator; in evaluation mode it outputs the probability-weighted average.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> pool = nn.StochasticPool2d(2, rng=0)
    >>> x = np.array([[[[0., 1.], [0., 3.]]]])
    >>> float(pool.eval()(x).item())                # (1*1 + 3*3) / (1 + 3)
    2.5
    """

    op_name = "stochastic_pool"

    def __init__(self, kernel_size, stride=None, padding=0, *, rng: np.random.Generator | int | None = None) -> None:
        super().__init__(kernel_size=kernel_size, stride=stride, padding=padding)
        self.rng = np.random.default_rng(rng)

    def arguments(self) -> dict[str, object]:
        return {**self.config, "training": self.training, "rng": self.rng}


class FractionalMaxPool2d(_Pool):
    """:func:`poolkit.fractional_max_pool2d` as a layer (Graham 2014): pseudo-random windows, a fractional size ratio.

    Give ``output_size`` or ``output_ratio``; the window positions are drawn
    anew at every call from the layer's seeded generator.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> nn.FractionalMaxPool2d(2, output_ratio=0.7, rng=0)(np.ones((1, 2, 8, 8))).shape
    (1, 2, 5, 5)
    """

    op_name = "fractional_max_pool2d"

    def __init__(
        self, kernel_size, output_size=None, output_ratio=None, *, rng: np.random.Generator | int | None = None
    ) -> None:
        super().__init__(kernel_size=kernel_size, output_size=output_size, output_ratio=output_ratio)
        self.rng = np.random.default_rng(rng)

    def arguments(self) -> dict[str, object]:
        return {**self.config, "rng": self.rng}


class MixedPool2d(_LearnablePool):
    """Mixed max-average pooling, :func:`poolkit.mixed_pool`, with a learnable mixing weight (Lee et al. 2016).

    ``y = alpha * max_pool(x) + (1 - alpha) * avg_pool(x)``. The learned
    parameter is ``alpha_logit`` with ``alpha = sigmoid(alpha_logit)``, which
    keeps ``alpha`` in ``(0, 1)`` whatever the optimizer does; its gradient is
    the op's ``dalpha`` times ``alpha * (1 - alpha)``. ``channels=C`` learns one
    ``alpha`` per channel.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> pool = nn.MixedPool2d(2, alpha=0.25)
    >>> x = np.array([[[[1., 3.], [2., 6.]]]])
    >>> y = pool(x)
    >>> round(float(y.item()), 6)                     # 0.25 * 6 + 0.75 * 3
    3.75
    >>> dx = pool.backward(np.ones_like(y))
    >>> round(float(pool.alpha_logit.grad), 6)        # (6 - 3) * 0.25 * 0.75
    0.5625
    """

    op_name = "mixed_pool"
    param_name = "alpha_logit"
    op_param = "alpha"

    def __init__(
        self, kernel_size, stride=None, padding=0, alpha: float = 0.5, channels: int | None = None, *, dtype=np.float32
    ) -> None:
        if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, (int, float, np.floating)) or not 0 < alpha < 1:
            raise PoolingConfigError(f"MixedPool2d: alpha={alpha!r} must lie strictly between 0 and 1")
        logit = np.log(alpha / (1 - alpha))
        initial = logit if channels is None else np.full(channels, logit)
        super().__init__(initial, dtype, kernel_size=kernel_size, stride=stride, padding=padding)

    def to_op(self, raw: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-raw.astype(np.float64)))

    def chain(self, raw: np.ndarray, grad: np.ndarray) -> np.ndarray:
        alpha = self.to_op(raw)
        return (grad * alpha * (1 - alpha)).astype(raw.dtype)


class BlurPool2d(_Pool):
    """:func:`poolkit.blur_pool` as a layer: a binomial low-pass filter, then subsampling (Zhang 2019).

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> nn.BlurPool2d()(np.ones((1, 2, 8, 8))).shape
    (1, 2, 4, 4)
    """

    op_name = "blur_pool"

    def __init__(self, stride=2, filter_size: int = 3, padding_mode: str = "reflect") -> None:
        super().__init__(stride=stride, filter_size=filter_size, padding_mode=padding_mode)


class AntialiasedMaxPool2d(_Pool):
    """:func:`poolkit.antialiased_max_pool` as a layer: max pooling at stride 1, then :class:`BlurPool2d` (Zhang 2019).

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> nn.AntialiasedMaxPool2d(2, 2)(np.ones((1, 2, 8, 8))).shape
    (1, 2, 4, 4)
    """

    op_name = "antialiased_max_pool"

    def __init__(self, kernel_size=2, stride=2, filter_size: int = 3, padding_mode: str = "reflect") -> None:
        super().__init__(kernel_size=kernel_size, stride=stride, filter_size=filter_size, padding_mode=padding_mode)

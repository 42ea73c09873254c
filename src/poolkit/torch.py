"""PyTorch layers over poolkit: what ``torch.nn`` lacks or gets wrong, with autograd.

Every layer and :func:`pool` run a poolkit op inside one
``torch.autograd.Function``: the forward pass views the tensor as a NumPy
array (``Tensor.numpy()``, no copy for a CPU tensor), calls
:func:`poolkit.vjp`, and wraps the result with ``torch.from_numpy`` (no copy);
the backward pass hands ``dy`` to the op's pullback the same way. A tensor on
another device (CUDA, ...) is copied to the CPU and the result copied back.
Gradients are first order (``once_differentiable``); learnable parameters
(``GeM.p``, ``MixedPool2d.alpha``) get theirs from the op's pullback.

The layers:

* :class:`MaxPool1d` … :class:`MinPool3d`, :class:`AvgPool1d` …: PyTorch's
  arguments plus ``padding="same"`` / ``"same_lower"`` (TensorFlow / ONNX
  SAME, asymmetric) and per-side ``(before, after)`` padding pairs, dilation
  for avg, and ``channels_last``;
* :class:`LPPool1d` … :class:`LPPool3d`: ``(sum |x|**p)**(1/p)`` with the
  absolute value and no ceil-mode over-count (PyTorch's ``LPPool`` has both
  wrong), optional padding and power mean;
* :class:`SpatialPyramidPool`, :class:`StochasticPool2d`,
  :class:`MixedPool2d` (learnable ``alpha``), :class:`GeM` (learnable ``p``),
  :class:`BlurPool2d`, :class:`AntialiasedMaxPool2d`, :class:`RoIPool`;
* :class:`Pool` and :func:`pool`: any poolkit op by name.

Examples
--------
>>> import torch, poolkit.torch as pkt
>>> x = torch.arange(25.0).reshape(1, 1, 5, 5).requires_grad_()
>>> y = pkt.MaxPool2d(2, padding="same")(x)    # TF SAME: output ceil(5 / 2) = 3, pad (0, 1)
>>> y
tensor([[[[ 6.,  8.,  9.],
          [16., 18., 19.],
          [21., 23., 24.]]]], grad_fn=<PoolkitFunctionBackward>)
>>> y.sum().backward()
>>> int(x.grad.sum())
9
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

from . import ops
from .autodiff import vjp
from .errors import PoolingConfigError
from .geometry import IntOrSeq, Padding
from .ops._common import as_array

__all__ = [
    "pool", "Pool",
    "MaxPool", "MaxPool1d", "MaxPool2d", "MaxPool3d",
    "AvgPool", "AvgPool1d", "AvgPool2d", "AvgPool3d",
    "LPPool", "LPPool1d", "LPPool2d", "LPPool3d",
    "MinPool", "MinPool1d", "MinPool2d", "MinPool3d",
    "SpatialPyramidPool", "StochasticPool2d", "MixedPool2d", "GeM",
    "BlurPool2d", "AntialiasedMaxPool2d", "RoIPool",
]  # fmt: skip

# The keyword arguments of each op that a tensor may fill with gradient, in the order its pullback returns them.
_LEARNABLE = {ops.gem_pool: ("p",), ops.mixed_pool: ("alpha",)}


def pool(x: torch.Tensor, op: str | Callable, /, *args: Any, **params: Any) -> torch.Tensor:
    """Apply the poolkit op ``op`` to ``x``, with autograd.

    Parameters
    ----------
    x : torch.Tensor
        The input, in the op's layout (``(N, C, *spatial)`` unless
        ``channels_last=True``). float32 and float64 give gradients; integer
        tensors pool without them.
    op : str or callable
        A poolkit op: ``"max"``, ``"avg"``, ``"lp"``, ``"min"`` (the generic
        N-D functions), any op's name such as ``"max_pool2d"``,
        ``"adaptive_avg"`` or ``"gem_pool"``, or the function itself.
    *args, **params
        The op's other arguments. A tensor given for a learnable parameter
        (``p`` of ``gem_pool``, ``alpha`` of ``mixed_pool``) gets a gradient;
        other tensors (e.g. RoIs) are read as arrays.

    Returns
    -------
    torch.Tensor
        On ``x``'s device; shares memory with the op's NumPy result.

    Raises
    ------
    PoolingConfigError
        ``op`` names no poolkit op; any error of the op itself.
    PoolingTypeError
        ``x`` cannot be read as an array (a meta tensor, bfloat16).

    Examples
    --------
    >>> import torch, poolkit.torch as pkt
    >>> x = torch.tensor([[[3.0, -4.0, 0.0, 12.0]]], requires_grad=True)
    >>> y = pkt.pool(x, "lp", 2, 2)   # (|3|^2 + |-4|^2)^(1/2), (0 + 12^2)^(1/2)
    >>> y
    tensor([[[ 5., 12.]]], grad_fn=<PoolkitFunctionBackward>)
    >>> y.sum().backward()
    >>> x.grad
    tensor([[[ 0.6000, -0.8000,  0.0000,  1.0000]]])
    """
    function = _resolve(op)
    names = tuple(name for name in _LEARNABLE.get(function, ()) if isinstance(params.get(name), torch.Tensor))
    learnable = [params.pop(name) for name in names]
    args = tuple(_plain(value, function) for value in args)
    params = {key: _plain(value, function) for key, value in params.items()}
    return PoolkitFunction.apply(function, args, params, names, x, *learnable)


class PoolkitFunction(torch.autograd.Function):
    """``torch.autograd.Function`` over :func:`poolkit.vjp`; use it through :func:`pool`.

    ``apply(op, args, params, names, x, *learnable)`` returns
    ``op(x, *args, **params, **dict(zip(names, learnable)))``.
    """

    @staticmethod
    def forward(ctx, op, args, params, names, x, *learnable):
        values = {name: _learnable_value(tensor, op, name) for name, tensor in zip(names, learnable)}
        x_array = _to_numpy(x, op, "x")
        y, pullback = vjp(op, x_array, *args, **params, **values)
        if np.may_share_memory(y, x_array):  # an output aliasing its input would confuse autograd
            y = y.copy()
        ctx.pullback = pullback
        ctx.op = op
        ctx.learnable = [(tensor.dtype, tensor.shape, tensor.device) for tensor in learnable]
        ctx.x_dtype = x.dtype
        ctx.save_for_backward(x)  # only so that autograd refuses a backward after x changed in place
        return _to_tensor(y, x.device)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        gradients = ctx.pullback(_to_numpy(dy, ctx.op, "dy"))
        if not ctx.learnable:
            gradients = (gradients,)
        dx = _to_tensor(gradients[0], x.device).to(x.dtype)
        dparams = [
            torch.as_tensor(np.asarray(grad), dtype=dtype).reshape(shape).to(device)
            for grad, (dtype, shape, device) in zip(gradients[1:], ctx.learnable)
        ]
        return (None, None, None, None, dx, *dparams)


def _resolve(op) -> Callable:
    """The poolkit function named by ``op`` (or ``op`` itself)."""
    if callable(op):
        return op
    if isinstance(op, str):
        for name in (f"{op}_pool", op):
            if name in ops.__all__:
                return getattr(ops, name)
    raise PoolingConfigError(
        f"op={op!r} names no poolkit op; use 'max', 'avg', 'lp', 'min', an op's name such as 'max_pool2d', "
        "'adaptive_avg' or 'gem_pool', or the function itself"
    )


def _to_numpy(value: torch.Tensor, op, name: str) -> np.ndarray:
    """A tensor as a NumPy array: a view for CPU tensors, a CPU copy from other devices (not from meta)."""
    if value.device.type not in ("cpu", "meta"):
        value = value.detach().cpu()
    return as_array(value, getattr(op, "__name__", str(op)), name)


def _learnable_value(tensor: torch.Tensor, op, name: str) -> float | np.ndarray:
    """A learnable parameter for the NumPy op: a float if it has one element, else an array."""
    value = _to_numpy(tensor, op, name)
    return float(value) if value.ndim == 0 else value


def _to_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A NumPy result as a tensor on ``device``: shared memory on the CPU."""
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array).to(device)


def _plain(value, op):
    """A non-learnable argument for a NumPy op: tensors become arrays, everything else stays."""
    return _to_numpy(value, op, "argument") if isinstance(value, torch.Tensor) else value


# ------------------------------------------------------------------ layers


class Pool(nn.Module):
    """Any poolkit op as a layer: ``Pool("max", 3, stride=2, padding="same")``.

    Parameters
    ----------
    op : str or callable
        As in :func:`pool`.
    *args, **params
        The op's arguments after ``x``, fixed when the layer is built.

    Examples
    --------
    >>> import torch, poolkit.torch as pkt
    >>> layer = pkt.Pool("adaptive_avg", 1)
    >>> layer
    Pool(op='adaptive_avg', 1)
    >>> layer(torch.ones(2, 3, 4, 4)).shape
    torch.Size([2, 3, 1, 1])
    """

    def __init__(self, op: str | Callable, *args: Any, **params: Any):
        super().__init__()
        self.op, self.args, self.params = op, args, params
        _resolve(op)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool(x, self.op, *self.args, **self.params)

    def extra_repr(self) -> str:
        shown = [f"op={getattr(self.op, '__name__', self.op)!r}", *map(repr, self.args)]
        return ", ".join(shown + [f"{key}={value!r}" for key, value in self.params.items()])


class _Fixed(nn.Module):
    """A layer over one poolkit op with its arguments fixed; ``_rank`` selects the ``{op}{rank}d`` function."""

    _op = ""
    _rank: int | None = None  # spatial axes, for the 1d/2d/3d layers
    _fixed_rank = True  # whether poolkit has the op's f"{op}{rank}d" function (else the layer checks the rank)

    def __init__(self, **params: Any):
        super().__init__()
        self.params = params

    @property
    def function(self) -> Callable:
        return getattr(ops, f"{self._op}{self._rank}d" if self._rank and self._fixed_rank else self._op)

    def _check_rank(self, x: torch.Tensor) -> None:
        if self._rank and not self._fixed_rank and x.dim() != self._rank + 2:
            raise PoolingConfigError(
                f"{type(self).__name__} takes (N, C, {', '.join('DHW'[-self._rank :])}) input "
                f"({self._rank + 2} axes); got shape {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_rank(x)
        return pool(x, self.function, **self.params)

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self.params.items())


class MaxPool(_Fixed):
    """Max pooling (:func:`poolkit.max_pool`), N-D; ``MaxPool1d/2d/3d`` fix the rank and accept unbatched input.

    Unlike ``torch.nn.MaxPool2d`` it takes ``padding="same"`` / ``"same_lower"``
    (TF / ONNX SAME: output ``ceil(L / stride)``, the odd padding cell at the
    end / start), ``(before, after)`` padding pairs, ``channels_last`` and
    ``nan="ignore"``.

    Examples
    --------
    >>> import torch, poolkit.torch as pkt
    >>> pkt.MaxPool2d(3, stride=2, padding="same")(torch.zeros(1, 1, 6, 6)).shape
    torch.Size([1, 1, 3, 3])
    """

    _op = "max_pool"

    def __init__(
        self,
        kernel_size: IntOrSeq,
        stride: IntOrSeq | None = None,
        padding: Padding = 0,
        dilation: IntOrSeq = 1,
        ceil_mode: bool = False,
        *,
        channels_last: bool = False,
        nan: str = "propagate",
    ):
        super().__init__(
            kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode,
            channels_last=channels_last, nan=nan,
        )  # fmt: skip


class MinPool(MaxPool):
    """Min pooling (:func:`poolkit.min_pool`); the arguments of :class:`MaxPool`."""

    _op = "min_pool"


class AvgPool(_Fixed):
    """Average pooling (:func:`poolkit.avg_pool`), N-D; ``AvgPool1d/2d/3d`` fix the rank.

    Takes ``padding="same"`` too. TensorFlow's SAME average divides by the
    real cells only: use ``count_include_pad=False`` for that.

    Examples
    --------
    >>> import torch, poolkit.torch as pkt
    >>> pkt.AvgPool1d(2, padding="same", count_include_pad=False)(torch.tensor([[1.0, 2.0, 3.0]]))
    tensor([[1.5000, 3.0000]])
    """

    _op = "avg_pool"

    def __init__(
        self,
        kernel_size: IntOrSeq,
        stride: IntOrSeq | None = None,
        padding: Padding = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
        *,
        dilation: IntOrSeq = 1,
        channels_last: bool = False,
    ):
        super().__init__(
            kernel_size=kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
            count_include_pad=count_include_pad, divisor_override=divisor_override, dilation=dilation,
            channels_last=channels_last,
        )  # fmt: skip


class LPPool(_Fixed):
    """Power-norm pooling (:func:`poolkit.lp_pool`): ``(sum |x|**p)**(1/p)`` over each window's real cells.

    ``torch.nn.LPPool2d``'s arguments (``norm_type``, ``kernel_size``,
    ``stride``, ``ceil_mode``) in its order, computed right: with ``|x|``
    (PyTorch drops it, so negative inputs with odd ``p`` go wrong) and, in
    ceil mode, without counting the cells past the input (PyTorch scales the
    partial window by the full kernel size). Adds ``padding``, ``dilation``,
    ``mean=True`` (the power mean) and ``channels_last``.

    Examples
    --------
    >>> import torch, poolkit.torch as pkt
    >>> x = torch.tensor([[[-3.0, 4.0, 2.0]]])
    >>> pkt.LPPool1d(2, 2, ceil_mode=True)(x)    # PyTorch gives nan and 2.8284
    tensor([[[5., 2.]]])
    """

    _op = "lp_pool"

    def __init__(
        self,
        norm_type: float,
        kernel_size: IntOrSeq,
        stride: IntOrSeq | None = None,
        ceil_mode: bool = False,
        *,
        padding: Padding = 0,
        dilation: IntOrSeq = 1,
        mean: bool = False,
        channels_last: bool = False,
    ):
        super().__init__(
            p=norm_type, kernel_size=kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode, mean=mean,
            dilation=dilation, channels_last=channels_last,
        )  # fmt: skip


class MaxPool1d(MaxPool):
    _rank = 1


class MaxPool2d(MaxPool):
    _rank = 2


class MaxPool3d(MaxPool):
    _rank = 3


class MinPool1d(MinPool):
    _rank = 1


class MinPool2d(MinPool):
    _rank = 2


class MinPool3d(MinPool):
    _rank = 3


class AvgPool1d(AvgPool):
    _rank = 1


class AvgPool2d(AvgPool):
    _rank = 2


class AvgPool3d(AvgPool):
    _rank = 3


class LPPool1d(LPPool):
    _rank = 1


class LPPool2d(LPPool):
    _rank = 2


class LPPool3d(LPPool):
    _rank = 3


class SpatialPyramidPool(_Fixed):
    """Spatial pyramid pooling (:func:`poolkit.spatial_pyramid_pool`): a fixed-length vector from any input size.

    ``(N, C, *spatial)`` to ``(N, C * sum(level**d for level in levels))``.

    Examples
    --------
    >>> import torch, poolkit.torch as pkt
    >>> pkt.SpatialPyramidPool((2, 1))(torch.zeros(3, 8, 13, 7)).shape
    torch.Size([3, 40])
    """

    _op = "spatial_pyramid_pool"

    def __init__(
        self,
        levels: int | Sequence[int] = (4, 2, 1),
        op: str = "max",
        mode: str = "adaptive",
        *,
        channels_last: bool = False,
    ):
        super().__init__(levels=levels, op=op, mode=mode, channels_last=channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # poolkit.vjp's own first parameter is named op, so spatial_pyramid_pool's op goes by position.
        params = self.params
        return pool(
            x, self.function, params["levels"], params["op"], params["mode"], channels_last=params["channels_last"]
        )


class StochasticPool2d(_Fixed):
    """Stochastic pooling (:func:`poolkit.stochastic_pool`, Zeiler & Fergus 2013) of non-negative activations.

    In ``train()`` mode each window returns one of its cells, drawn with
    probability proportional to its value; the draws come from PyTorch's
    generator (``torch.manual_seed`` makes them repeatable). In ``eval()``
    mode it returns the expectation ``sum a**2 / sum a``.

    Examples
    --------
    >>> import torch, poolkit.torch as pkt
    >>> layer = pkt.StochasticPool2d(2).eval()
    >>> layer(torch.tensor([[[[1.0, 3.0], [0.0, 0.0]]]]))
    tensor([[[[2.5000]]]])
    """

    _op = "stochastic_pool"
    _rank = 2
    _fixed_rank = False

    def __init__(
        self,
        kernel_size: IntOrSeq,
        stride: IntOrSeq | None = None,
        padding: Padding = 0,
        *,
        channels_last: bool = False,
    ):
        super().__init__(kernel_size=kernel_size, stride=stride, padding=padding, channels_last=channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_rank(x)
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64)) if self.training else None
        return pool(x, self.function, **self.params, training=self.training, rng=seed)


class MixedPool2d(_Fixed):
    """Mixed pooling (:func:`poolkit.mixed_pool`): ``alpha * max + (1 - alpha) * avg`` with learnable ``alpha``.

    ``alpha`` is a parameter (one, or one per channel with ``channels=C``),
    clamped to ``[0, 1]`` when used; a step that takes it outside stops its
    gradient at the bound.

    Examples
    --------
    >>> import torch, poolkit.torch as pkt
    >>> layer = pkt.MixedPool2d(2, alpha=0.25)
    >>> layer(torch.tensor([[[[1.0, 3.0], [2.0, 6.0]]]]))
    tensor([[[[3.7500]]]], grad_fn=<PoolkitFunctionBackward>)
    >>> dict(layer.named_parameters())["alpha"]
    Parameter containing:
    tensor(0.2500, requires_grad=True)
    """

    _op = "mixed_pool"
    _rank = 2
    _fixed_rank = False

    def __init__(
        self,
        kernel_size: IntOrSeq,
        stride: IntOrSeq | None = None,
        padding: Padding = 0,
        alpha: float = 0.5,
        *,
        channels: int | None = None,
        channels_last: bool = False,
    ):
        super().__init__(kernel_size=kernel_size, stride=stride, padding=padding, channels_last=channels_last)
        initial = torch.full((channels,) if channels else (), float(alpha), dtype=torch.get_default_dtype())
        self.alpha = nn.Parameter(initial)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_rank(x)
        return pool(x, self.function, **self.params, alpha=self.alpha.clamp(0.0, 1.0))


class GeM(_Fixed):
    """Generalised-mean pooling (:func:`poolkit.gem_pool`) with a learnable power ``p``.

    ``y = (mean over the bin of max(x, eps)**p)**(1/p)``: ``p=1`` is average
    pooling, large ``p`` approaches max pooling (image retrieval,
    Radenović et al. 2018). ``learn_p=False`` keeps ``p`` fixed.

    Examples
    --------
    >>> import torch, poolkit.torch as pkt
    >>> layer = pkt.GeM(p=2.0)
    >>> layer(torch.tensor([[[[3.0, 4.0]]]]))
    tensor([[[[3.5355]]]], grad_fn=<PoolkitFunctionBackward>)
    """

    _op = "gem_pool"

    def __init__(
        self, p: float = 3.0, eps: float = 1e-6, output_size=1, *, learn_p: bool = True, channels_last: bool = False
    ):
        super().__init__(eps=eps, output_size=output_size, channels_last=channels_last)
        self.p = nn.Parameter(torch.tensor(float(p), dtype=torch.get_default_dtype()), requires_grad=learn_p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool(x, self.function, **self.params, p=self.p)


class BlurPool2d(_Fixed):
    """Anti-aliased downsampling (:func:`poolkit.blur_pool`, Zhang 2019): a binomial blur, then a stride.

    Examples
    --------
    >>> import torch, poolkit.torch as pkt
    >>> pkt.BlurPool2d()(torch.ones(1, 2, 6, 6)).shape
    torch.Size([1, 2, 3, 3])
    """

    _op = "blur_pool"
    _rank = 2
    _fixed_rank = False

    def __init__(
        self, stride: IntOrSeq = 2, filter_size: int = 3, padding_mode: str = "reflect", *, channels_last: bool = False
    ):
        super().__init__(stride=stride, filter_size=filter_size, padding_mode=padding_mode, channels_last=channels_last)


class AntialiasedMaxPool2d(_Fixed):
    """Anti-aliased max pooling (:func:`poolkit.antialiased_max_pool`): max at stride 1, then :class:`BlurPool2d`.

    Examples
    --------
    >>> import torch, poolkit.torch as pkt
    >>> pkt.AntialiasedMaxPool2d()(torch.ones(1, 2, 6, 6)).shape
    torch.Size([1, 2, 3, 3])
    """

    _op = "antialiased_max_pool"
    _rank = 2
    _fixed_rank = False

    def __init__(
        self,
        kernel_size: IntOrSeq = 2,
        stride: IntOrSeq = 2,
        *,
        filter_size: int = 3,
        padding_mode: str = "reflect",
        channels_last: bool = False,
    ):
        super().__init__(
            kernel_size=kernel_size, stride=stride, filter_size=filter_size, padding_mode=padding_mode,
            channels_last=channels_last,
        )  # fmt: skip


class RoIPool(_Fixed):
    """Region-of-interest max pooling (:func:`poolkit.roi_pool`, Fast R-CNN): ``forward(x, rois)``.

    ``rois`` is ``(K, 5)``: batch index, ``x1, y1, x2, y2`` in input
    coordinates before ``spatial_scale``; the result is ``(K, C, *output_size)``.
    The gradient flows to ``x`` only.

    Examples
    --------
    >>> import torch, poolkit.torch as pkt
    >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> pkt.RoIPool(2)(x, torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0]]))
    tensor([[[[ 5.,  7.],
              [13., 15.]]]])
    """

    _op = "roi_pool"
    _rank = 2
    _fixed_rank = False

    def __init__(self, output_size: IntOrSeq, spatial_scale: float = 1.0):
        super().__init__(output_size=output_size, spatial_scale=spatial_scale)

    def forward(self, x: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        self._check_rank(x)
        return pool(x, self.function, rois, **self.params)

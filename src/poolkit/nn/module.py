"""The building blocks of a NumPy network: :class:`Parameter`, :class:`Module`, :class:`Sequential`.

A module computes ``forward(x)`` and, from the gradient of the loss with
respect to its output, ``backward(dy) -> dx``; on the way it adds the
gradients of its own parameters to their ``grad``. There is no tape: a
:class:`Sequential` calls its layers forward in order and backward in reverse,
and each layer keeps what its backward pass needs from its last forward call.

This module also owns the errors a network raises: a :class:`ShapeMismatchError`
names the layer (its path in the model and its configuration), the shape it
expects and the shape it got.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
from numpy.typing import DTypeLike

from ..errors import PoolkitError

__all__ = ["Parameter", "Module", "Sequential", "ShapeMismatchError", "NonFiniteLossError"]


class ShapeMismatchError(PoolkitError, ValueError):
    """An array reached a layer (or a state was loaded) with a shape the layer cannot take."""


class NonFiniteLossError(PoolkitError, FloatingPointError):
    """The training loss became NaN or infinite."""


class Parameter:
    """A learnable array and the gradient accumulated for it.

    Attributes
    ----------
    value : numpy.ndarray
        The parameter; optimizers update it in place.
    grad : numpy.ndarray
        Same shape and dtype; every ``backward`` adds to it,
        :meth:`Module.zero_grad` clears it.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit.nn import Parameter
    >>> p = Parameter(np.ones(3, dtype=np.float32))
    >>> p.grad
    array([0., 0., 0.], dtype=float32)
    """

    __slots__ = ("grad", "value")

    def __init__(self, value: np.ndarray) -> None:
        self.value = np.array(value)
        self.grad = np.zeros_like(self.value)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.value.shape}, dtype={self.value.dtype})"


class Module:
    """Base class of every layer and network.

    Subclasses set :class:`Parameter` and :class:`Module` attributes in
    ``__init__`` (after calling ``super().__init__()``); both are found by
    :meth:`named_parameters` in the order they were set. A subclass implements
    :meth:`forward` and :meth:`backward`; call the module itself (``layer(x)``)
    rather than ``forward``, so that an error names the layer.

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> model = nn.Sequential(nn.Linear(4, 3, rng=0), nn.ReLU(), nn.Linear(3, 2, rng=1))
    >>> y = model(np.ones((5, 4), dtype=np.float32))
    >>> y.shape
    (5, 2)
    >>> model.backward(np.ones_like(y)).shape
    (5, 4)
    >>> sorted(model.state_dict())
    ['0.bias', '0.weight', '2.bias', '2.weight']
    >>> model.num_parameters()
    23
    """

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_children", {})
        object.__setattr__(self, "_path", "")
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: object) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() before setting {name}")
        self._parameters.pop(name, None)
        self._children.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._children[name] = value
            value._set_path(f"{self._path}.{name}" if self._path else name)
        object.__setattr__(self, name, value)

    def _set_path(self, path: str) -> None:
        object.__setattr__(self, "_path", path)
        for name, child in self._children.items():
            child._set_path(f"{path}.{name}")

    # -- running -----------------------------------------------------------------------------------------

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``forward(x)``; a poolkit error raised inside names this layer."""
        try:
            return self.forward(x)
        except PoolkitError as err:
            if getattr(err, "layer", None) is not None:
                raise
            located = type(err)(f"{self.describe()}: {err}")
            located.layer = self._path
            raise located from err

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The layer's output for ``x``; keeps what :meth:`backward` needs."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """The gradient with respect to the last forward input, given ``dy`` for its output.

        Adds the gradients of this module's parameters to their ``grad``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def describe(self) -> str:
        """How errors name this layer: its path in the model, if any, and its configuration."""
        where = f"layer '{self._path}' " if self._path else ""
        return f"{where}{type(self).__name__}({self.extra_repr()})"

    def check_input(self, x: np.ndarray, expected: Sequence[int | str]) -> None:
        """Raise :class:`ShapeMismatchError` unless ``x.shape`` matches ``expected``.

        ``expected`` has one entry per axis: an int that the axis must equal,
        or a name (``"N"``, ``"H"``) for an axis of any size.
        """
        shape = np.shape(x)
        if len(shape) == len(expected) and all(isinstance(e, str) or e == s for e, s in zip(expected, shape)):
            return
        wanted = "(" + ", ".join(str(e) for e in expected) + ")"
        raise self._shape_error(f"expects input of shape {wanted}, got {tuple(shape)}")

    def check_output_grad(self, dy: np.ndarray, y_shape: tuple[int, ...]) -> None:
        """Raise :class:`ShapeMismatchError` unless ``dy`` has the shape of the last output."""
        if np.shape(dy) != tuple(y_shape):
            raise self._shape_error(
                f"backward got dy of shape {np.shape(dy)}; it must have the shape of the last forward "
                f"output, {tuple(y_shape)}"
            )

    def _shape_error(self, message: str) -> ShapeMismatchError:
        err = ShapeMismatchError(f"{self.describe()} {message}")
        err.layer = self._path
        return err

    def _require(self, attribute: str) -> object:
        """A value the last forward call kept for backward, or an error saying forward comes first."""
        value = getattr(self, attribute, None)
        if value is None:
            raise RuntimeError(
                f"{self.describe()}.backward called without a forward pass in training mode before it; "
                "call model.train() and model(x) first"
            )
        return value

    # -- parameters and state ----------------------------------------------------------------------------

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """Every parameter of this module and its children, with its dotted name."""
        for name, param in self._parameters.items():
            yield name, param
        for child_name, child in self._children.items():
            for name, param in child.named_parameters():
                yield f"{child_name}.{name}", param

    def parameters(self) -> list[Parameter]:
        """Every parameter (each with its ``grad``), in a fixed order: what an optimizer takes."""
        return [param for _, param in self.named_parameters()]

    def num_parameters(self) -> int:
        """The number of learnable scalars."""
        return sum(param.value.size for param in self.parameters())

    def zero_grad(self) -> None:
        """Set every parameter's gradient to zero."""
        for param in self.parameters():
            param.grad[...] = 0

    def train(self, mode: bool = True) -> Module:
        """Switch this module and its children to training (``True``) or evaluation mode."""
        object.__setattr__(self, "training", bool(mode))
        for child in self._children.values():
            child.train(mode)
        return self

    def eval(self) -> Module:
        """Switch to evaluation mode: dropout off, stochastic pooling deterministic, nothing kept for backward."""
        return self.train(False)

    def astype(self, dtype: DTypeLike) -> Module:
        """Convert every parameter (and its gradient) to ``dtype`` in place; returns the module."""
        for param in self.parameters():
            param.value = param.value.astype(dtype)
            param.grad = np.zeros_like(param.value)
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of every parameter's value, keyed by its dotted name."""
        return {name: param.value.copy() for name, param in self.named_parameters()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy ``state`` into the parameters; names and shapes must match exactly.

        Raises
        ------
        ShapeMismatchError
            A name is missing or unexpected, or an array has another shape.
        """
        params = dict(self.named_parameters())
        missing = sorted(set(params) - set(state))
        unexpected = sorted(set(state) - set(params))
        if missing or unexpected:
            raise ShapeMismatchError(
                f"{type(self).__name__} state does not match the model: missing {missing}, unexpected "
                f"{unexpected}; load a state saved from a model built the same way"
            )
        for name, param in params.items():
            value = np.asarray(state[name])
            if value.shape != param.value.shape:
                raise ShapeMismatchError(
                    f"{type(self).__name__} state entry '{name}' has shape {value.shape}; the model's "
                    f"parameter has {param.value.shape}"
                )
            param.value[...] = value

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`state_dict` to an ``.npz`` file."""
        np.savez(path, **self.state_dict())

    def load(self, path: str | os.PathLike) -> None:
        """Read a state written by :meth:`save` into this model (see :meth:`load_state_dict`)."""
        with np.load(path, allow_pickle=False) as archive:
            self.load_state_dict({name: archive[name] for name in archive.files})

    # -- printing ------------------------------------------------------------------------------------------

    def extra_repr(self) -> str:
        """The configuration shown inside the parentheses of ``repr``."""
        return ""

    def __repr__(self) -> str:
        if not self._children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"  ({name}): " + repr(child).replace("\n", "\n  ") for name, child in self._children.items()]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


class Sequential(Module):
    """Layers applied in order; ``backward`` runs them in reverse.

    The layers are named ``"0"``, ``"1"``, … (the prefixes in
    :meth:`~Module.state_dict` and in error messages).

    Examples
    --------
    >>> import numpy as np
    >>> from poolkit import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10, rng=0))
    >>> model(np.zeros((2, 1, 4, 4), dtype=np.float32)).shape
    (2, 10)
    >>> model(np.zeros((2, 1, 5, 5), dtype=np.float32))
    Traceback (most recent call last):
    ...
    poolkit.nn.module.ShapeMismatchError: layer '1' Linear(16, 10) expects input of shape (N, 16), got (2, 25)
    """

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        for index, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential takes Module instances; argument {index} is {type(layer).__name__}")
            setattr(self, str(index), layer)

    def __len__(self) -> int:
        return len(self._children)

    def __getitem__(self, index: int) -> Module:
        return list(self._children.values())[index]

    def __iter__(self) -> Iterator[Module]:
        return iter(self._children.values())

    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self:
            x = layer(x)
        return x

    def backward(self, dy: np.ndarray) -> np.ndarray:
        for layer in reversed(self._children.values()):
            dy = layer.backward(dy)
        return dy

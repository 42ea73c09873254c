"""Any array in, NumPy out: every op reads NumPy, PyTorch, JAX, ``__array__`` and ``__dlpack__`` inputs.

The oracle is the same op on the equivalent NumPy array; the zero-copy claims
are checked on the array :func:`~poolkit.ops._common.as_pool_input` hands the
kernels, and device errors with a fake DLPack GPU array and PyTorch's ``meta``
tensors (no GPU is needed).
"""

from __future__ import annotations

import numpy as np
import pytest

import poolkit as pk
from poolkit import PoolingTypeError
from poolkit.ops._common import as_array, as_pool_input

torch = pytest.importorskip("torch", reason="torch==2.13.0 (the [test] extra) makes the tensors")
jnp = pytest.importorskip("jax.numpy", reason="jax (the [test] extra) makes the JAX arrays")

X = np.random.default_rng(0).standard_normal((2, 3, 6, 5))

OPS = {
    "max": lambda x: pk.max_pool(x, 3, stride=2, padding=1),
    "avg": lambda x: pk.avg_pool(x, 2, ceil_mode=True),
    "lp": lambda x: pk.lp_pool(x, 2, (2, 3), stride=1),
    "min": lambda x: pk.min_pool2d(x, 2, padding="same"),
}


class ArrayProtocol:
    """Exposes only ``__array__``, as a third-party container might."""

    def __init__(self, array):
        self.array = array

    def __array__(self, dtype=None, copy=None):
        return self.array if dtype is None else self.array.astype(dtype)


class DLPackOnly:
    """Exposes only ``__dlpack__`` / ``__dlpack_device__`` (no ``__array__``), in CPU memory."""

    def __init__(self, array):
        self.array = array

    def __dlpack__(self, **kwargs):
        return self.array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()


class FakeCudaArray(DLPackOnly):
    """Claims to live on CUDA device 1, as a CuPy array or a CUDA tensor would."""

    def __dlpack_device__(self):
        return (2, 1)


def _inputs(array):
    """Every form of ``array`` (float64) that poolkit takes, by name."""
    tensor = torch.from_numpy(array.copy())
    return {
        "numpy": array,
        "torch": tensor,
        "torch_requires_grad": tensor.clone().requires_grad_(True),
        "torch_strided": torch.from_numpy(np.ascontiguousarray(array.transpose(0, 1, 3, 2))).transpose(2, 3),
        "jax": jnp.asarray(array.astype(np.float32)),
        "array_protocol": ArrayProtocol(array),
        "dlpack": DLPackOnly(array),
        "list": array.tolist(),
    }


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("form", list(_inputs(X)))
def test_every_input_form_gives_the_numpy_result(op, form):
    value = _inputs(X)[form]
    result = OPS[op](value)
    assert type(result) is np.ndarray
    expected = OPS[op](X.astype(np.float32) if form == "jax" else X)
    assert result.dtype == expected.dtype
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("form", ["torch", "torch_requires_grad", "torch_strided", "jax", "array_protocol", "dlpack"])
def test_inputs_are_viewed_without_a_copy(form):
    value = _inputs(X)[form]
    viewed, _ = as_pool_input(value, None, False, "max_pool")
    if form.startswith("torch"):
        address = value.data_ptr()
    elif form == "jax":
        address = value.unsafe_buffer_pointer()
    else:
        address = X.ctypes.data
    assert viewed.ctypes.data == address
    if form.startswith("torch"):
        assert viewed.strides == tuple(step * viewed.itemsize for step in value.stride())


def test_a_tensor_that_requires_grad_is_read_in_place_and_keeps_its_autograd_state():
    tensor = torch.arange(16.0).reshape(1, 1, 4, 4).requires_grad_(True)
    viewed = as_array(tensor, "max_pool")
    assert np.shares_memory(viewed, tensor.detach().numpy())
    assert tensor.requires_grad and tensor.grad is None
    np.testing.assert_array_equal(pk.max_pool(tensor, 2), [[[[5.0, 7.0], [13.0, 15.0]]]])


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8, torch.bool, torch.float16])
def test_tensor_dtypes_map_to_numpy_dtypes(dtype):
    tensor = (torch.arange(8).reshape(1, 1, 8) % 3).to(dtype)
    result = pk.max_pool(tensor, 2)
    np.testing.assert_array_equal(result, pk.max_pool(tensor.numpy(), 2))
    assert result.dtype == tensor.numpy().dtype


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            FakeCudaArray(X),
            r"max_pool got x \(FakeCudaArray\) on device 'cuda:1'; poolkit's NumPy functions read CPU memory only\. "
            r"Move it to the CPU first \(x\.cpu\(\) in PyTorch, jax\.device_get\(x\) in JAX\), or use the "
            r"poolkit\.torch layers",
        ),
        (
            torch.zeros(1, 1, 4, 4, device="meta"),
            r"max_pool got x \(Tensor\) on PyTorch's 'meta' device, which holds a shape but no values",
        ),
        (
            torch.zeros(1, 1, 4, 4, dtype=torch.bfloat16),
            r"max_pool could not read x \(Tensor\) as an array: .*BFloat16.*x\.float\(\)",
        ),
        (
            torch.zeros(1, 1, 4, 4, dtype=torch.complex64),
            r"max_pool needs an array of real numbers \(bool, int, uint or float\) for x; got dtype complex64",
        ),
    ],
)
def test_unreadable_devices_and_dtypes_are_refused_with_a_fix(value, message):
    with pytest.raises(PoolingTypeError, match=message):
        pk.max_pool(value, 2)


def test_dlpack_device_that_cannot_be_named_is_refused():
    class BrokenDevice(DLPackOnly):
        def __dlpack_device__(self):
            raise ValueError("Unknown device type npu for Dlpack")

    with pytest.raises(PoolingTypeError, match=r"on device 'unknown \(Unknown device type npu for Dlpack\)'"):
        pk.avg_pool(BrokenDevice(X), 2)


@pytest.mark.parametrize("form", ["numpy", "torch", "torch_requires_grad", "jax", "array_protocol", "dlpack"])
@pytest.mark.parametrize("op", [pk.max_pool2d, pk.avg_pool2d])
def test_pullback_takes_dy_in_every_form(op, form):
    y, pullback = pk.vjp(op, torch.from_numpy(X.copy()).requires_grad_(True), 2)
    dy = np.random.default_rng(1).standard_normal(y.shape)
    expected = pk.vjp(op, X, 2)[1](dy.astype(np.float32) if form == "jax" else dy)
    result = pullback(_inputs(dy)[form])
    assert type(result) is np.ndarray
    np.testing.assert_allclose(result, expected, rtol=1e-6)


def test_pullback_refuses_dy_on_another_device():
    y, pullback = pk.vjp(pk.max_pool2d, X, 2)
    with pytest.raises(PoolingTypeError, match=r"max_pool2d pullback got dy \(FakeCudaArray\) on device 'cuda:1'"):
        pullback(FakeCudaArray(np.zeros(y.shape)))

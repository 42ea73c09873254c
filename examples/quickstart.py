"""poolkit in one screen: pool a batch four ways, get PyTorch's numbers, and a gradient.

Run: python examples/quickstart.py
"""

import numpy as np

import poolkit as pk

rng = np.random.default_rng(0)
images = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)  # N, C, H, W

print("input", images.shape, images.dtype)
for name, pooled in [
    ("max_pool2d(x, 3, 2, 1)", pk.max_pool2d(images, 3, 2, 1)),
    ("avg_pool2d(x, 2)", pk.avg_pool2d(images, 2)),
    ("lp_pool2d(x, 2, 2, mean=True)", pk.lp_pool2d(images, 2, 2, mean=True)),
    ("min_pool2d(x, 2, padding='same')", pk.min_pool2d(images, 2, padding="same")),
]:
    print(f"{name:34s} -> {pooled.shape} {pooled.dtype}, mean {pooled.mean():+.4f}")

values, indices = pk.max_pool2d(images, 2, return_indices=True)
print("argmax of the first window, flat in its 32x32 plane:", indices[0, 0, 0, 0])

y, pullback = pk.vjp(pk.max_pool2d, images, 2)
dx = pullback(np.ones_like(y))
print(f"max-pool gradient: {int(dx.sum())} of {dx.size} inputs receive the upstream gradient")

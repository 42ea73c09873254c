"""``poolkit.nn``: layers, a loss and optimizers to train small CNNs in NumPy with any poolkit pooling.

Every pooling layer is a thin wrapper around :func:`poolkit.vjp`, so its
gradient is the op's own. ``import poolkit.nn`` needs nothing beyond NumPy and
poolkit.

Examples
--------
>>> import numpy as np
>>> from poolkit import nn
>>> model = nn.Sequential(
...     nn.Conv2d(1, 4, 3, padding=1, rng=0), nn.ReLU(), nn.MaxPool2d(2),
...     nn.Flatten(), nn.Linear(4 * 4 * 4, 10, rng=1),
... )
>>> x = np.zeros((2, 1, 8, 8), dtype=np.float32)
>>> loss_fn = nn.CrossEntropyLoss()
>>> loss = loss_fn(model(x), np.array([3, 7]))
>>> dx = model.backward(loss_fn.backward())
>>> dx.shape, model[0].weight.grad.shape
((2, 1, 8, 8), (4, 1, 3, 3))
"""

from .layers import *  # noqa: F403
from .layers import __all__ as _layers_all
from .loss import *  # noqa: F403
from .loss import __all__ as _loss_all
from .module import *  # noqa: F403
from .module import __all__ as _module_all
from .optim import *  # noqa: F403
from .optim import __all__ as _optim_all
from .pooling import *  # noqa: F403
from .pooling import __all__ as _pooling_all
from .train import *  # noqa: F403
from .train import __all__ as _train_all

__all__ = [*_module_all, *_layers_all, *_pooling_all, *_loss_all, *_optim_all, *_train_all]

"""Test-session guards."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config):
    """A bounds-checked run must compile afresh: Numba's disk cache ignores NUMBA_BOUNDSCHECK.

    With the default cache a ``NUMBA_BOUNDSCHECK=1`` run would load the
    unchecked kernels compiled earlier and check nothing.
    """
    if os.environ.get("NUMBA_BOUNDSCHECK") == "1" and not os.environ.get("NUMBA_CACHE_DIR"):
        raise pytest.UsageError(
            "NUMBA_BOUNDSCHECK=1 needs its own NUMBA_CACHE_DIR (e.g. NUMBA_CACHE_DIR=.numba-boundscheck): "
            "Numba's cache would otherwise hand back kernels compiled without bounds checks"
        )

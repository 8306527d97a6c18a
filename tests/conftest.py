from __future__ import annotations

from collections.abc import Iterator

import pytest
from kernels import Kernel


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    """A kernel with hetflow loaded, shared by a module's tests (each test uses names of its own)."""
    k = Kernel(tmp_path_factory.mktemp("kernel"))
    yield k
    k.shutdown()


@pytest.fixture
def fresh_kernel(tmp_path) -> Iterator[Kernel]:
    k = Kernel(tmp_path)
    yield k
    k.shutdown()

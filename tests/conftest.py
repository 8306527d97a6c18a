from __future__ import annotations

from collections.abc import Iterator

import pytest

from aws import moto_server
from kernels import Kernel
from servers import JupyterServer


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    """A kernel with hetflow loaded, shared by a module's tests (each test uses names of its own)."""
    k = Kernel.local(tmp_path_factory.mktemp("kernel"))
    yield k
    k.shutdown()


@pytest.fixture
def fresh_kernel(tmp_path) -> Iterator[Kernel]:
    k = Kernel.local(tmp_path)
    yield k
    k.shutdown()


@pytest.fixture(scope="module", params=["/", "/user/alice/"], ids=["root", "base_url"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """A real Jupyter server with hetflow's extension, at the root and under a JupyterHub-like base_url."""
    s = JupyterServer(tmp_path_factory.mktemp("server"), base_url=request.param)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """moto on loopback (S3, Batch, CloudWatch Logs, IAM) for the AWS executors' tests; each test resets it."""
    with moto_server() as moto:
        yield moto.url

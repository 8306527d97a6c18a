"""Short-lived OpenSSH certificates as credentials (what centers issue for a day, e.g. NERSC's sshproxy), against
the real sshd of `scripts/services.sh up`, which trusts the test user CA and has no authorized key for these keys."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import services

from hetflow_server.protocol import AccessError
from hetflow_server.transport import check_certificate
from kernels import Kernel
from servers import JupyterServer, notebook_kernel_fixture


def signed_key(directory: Path, cluster: dict[str, str], validity: str) -> dict[str, str]:
    """A new key (never authorized on its own) and its certificate from the user CA, valid for `validity`."""
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    sign = ["ssh-keygen", "-q", "-s", cluster["HETFLOW_SSH_USER_CA"], "-I", f"hetflow-{directory.name}"]
    subprocess.run([*sign, "-n", cluster["HETFLOW_SSH_USER"], "-V", validity, f"{key}.pub"], check=True)
    return {"private_key": key.read_text(), "certificate": Path(f"{key}-cert.pub").read_text()}


@pytest.fixture(scope="module")
def cluster() -> dict[str, str]:
    return services()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cluster: dict[str, str]) -> Iterator[JupyterServer]:
    root = tmp_path_factory.mktemp("cert-server")
    over_ssh = {
        "kind": "ssh",
        "host": cluster["HETFLOW_SSH_HOST"],
        "port": int(cluster["HETFLOW_SSH_PORT"]),
        "user": cluster["HETFLOW_SSH_USER"],
        "known_hosts": cluster["HETFLOW_SSH_KNOWN_HOSTS"],
        "python": cluster["HETFLOW_REMOTE_PYTHON"],
        "remote_root": "~/.hetflow-cert-tests",
        "poll_interval": 0.1,
    }
    names = ("for-a-day", "expired", "key-alone")
    s = JupyterServer(root, hetflow={"executors": {name: {**over_ssh, "credential": name} for name in names}})
    day = signed_key(root / "day", cluster, "-5m:+1d")
    for name, fields in {
        "for-a-day": day,
        "expired": signed_key(root / "old", cluster, "20200101:20200102"),
        "key-alone": {"private_key": day["private_key"]},
    }.items():
        s.json("PUT", f"hetflow/api/credentials/{name}", {"kind": "ssh-key", "fields": fields})
    yield s
    s.stop()


kernel = notebook_kernel_fixture("certificates.ipynb")


def test_a_key_with_a_certificate_for_a_day_logs_in(kernel: Kernel) -> None:
    kernel.run("%%remote executor=for-a-day cache=false\nimport getpass\nwho = getpass.getuser()\n").check()
    assert kernel.value("who") == "testuser"


def test_the_same_key_without_its_certificate_is_refused(kernel: Kernel) -> None:
    out = kernel.run("%%remote executor=key-alone cache=false\nx = 1\n")
    assert "refused the credential's key" in out.traceback


def test_an_expired_certificate_says_to_renew_it(kernel: Kernel) -> None:
    out = kernel.run("%%remote executor=expired cache=false\nx = 1\n")
    assert "SSH certificate 'hetflow-old' expired at 2020-01-02" in out.traceback
    assert "get a new one from your center" in out.traceback and "replace the credential's certificate" in out.traceback


def test_a_certificate_not_yet_valid_or_not_a_certificate_is_named(tmp_path: Path, cluster: dict[str, str]) -> None:
    later = signed_key(tmp_path / "later", cluster, "+1d:+2d")["certificate"]
    with pytest.raises(AccessError, match=r"is valid only from .* check this machine's clock"):
        check_certificate(later)
    public = (tmp_path / "later" / "id_ed25519.pub").read_text()
    with pytest.raises(AccessError, match="holds a public key, not a certificate"):
        check_certificate(public)

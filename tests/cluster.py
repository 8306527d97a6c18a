"""The real Slurm cluster and sshd that `scripts/services.sh up` starts; tests that need them use `services()`."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from envfile import running

STATE = Path(os.environ.get("HETFLOW_SERVICES", "/tmp/hetflow-services"))


def services() -> dict[str, str]:
    """The services' settings from their env.sh; skip (or, in CI, fail) when they are not running."""
    return running(STATE / "env.sh", "run `bash scripts/services.sh up` (as root) to start Slurm and sshd", _sinfo)


def _sinfo(found: dict[str, str]) -> str | None:
    answer = subprocess.run(
        ["sinfo", "-h", "-o", "%t"],
        env={**os.environ, "SLURM_CONF": found["SLURM_CONF"]},
        capture_output=True,
        text=True,
    )
    if answer.returncode or (
        "idle" not in answer.stdout and "mix" not in answer.stdout and "alloc" not in answer.stdout
    ):
        return f"the Slurm cluster does not answer (sinfo: {answer.stderr.strip() or answer.stdout.strip()})"
    return None


def ssh(cluster: dict[str, str], command: str) -> str:
    """Run a command on the cluster as the test user, with the system's ssh client."""
    return subprocess.run(
        [
            "ssh",
            "-i",
            cluster["HETFLOW_SSH_KEY"],
            "-p",
            cluster["HETFLOW_SSH_PORT"],
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={cluster['HETFLOW_SSH_KNOWN_HOSTS']}",
            f"{cluster['HETFLOW_SSH_USER']}@{cluster['HETFLOW_SSH_HOST']}",
            command,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def link_bytes(cluster: dict[str, str]) -> int:
    """Bytes that crossed the open TCP connections to the cluster's sshd so far, both ways, from the kernel's own
    counters (`ss -ti`: bytes_acked out, bytes_received in): what an engine's SSH link carried, not what hetflow
    thinks it sent. Connections already closed are not counted: measure across one long-lived link."""
    found = subprocess.run(
        ["ss", "-tinH", f"( dport = :{cluster['HETFLOW_SSH_PORT']} )"], capture_output=True, text=True, check=True
    ).stdout
    return sum(int(n) for n in re.findall(r"\bbytes_(?:acked|received):(\d+)", found))

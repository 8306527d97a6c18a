"""An engine embedded in this process, with executors on the cluster of `scripts/services.sh` (over SSH, as its
non-root user), and an IPython shell with hetflow loaded: what the cluster benchmarks drive."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from cluster import link_bytes, services

__all__ = ["embedded", "link_bytes"]


def embedded(executors: dict[str, dict[str, Any]]) -> tuple[Any, Any, dict[str, str]]:
    """(client, shell, cluster): each executor's settings over the cluster's SSH ones (kind slurm unless said)."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    import hetflow.client
    from hetflow.embedded import EmbeddedClient
    from hetflow_server.settings import Hetflow

    cluster = services()
    over_ssh = {
        "kind": "slurm",
        "host": cluster["HETFLOW_SSH_HOST"],
        "port": int(cluster["HETFLOW_SSH_PORT"]),
        "user": cluster["HETFLOW_SSH_USER"],
        "credential": "bench",
        "python": cluster["HETFLOW_REMOTE_PYTHON"],
        "known_hosts": cluster["HETFLOW_SSH_KNOWN_HOSTS"],
        "remote_root": "~/.hetflow-bench",
    }
    config = Config()
    config.Hetflow.store_dir = os.path.join(tempfile.mkdtemp(), "store")
    config.Hetflow.executors = {name: {**over_ssh, **settings} for name, settings in executors.items()}
    client = EmbeddedClient(Hetflow(config=config))
    hetflow.client._client = client
    key = Path(cluster["HETFLOW_SSH_KEY"]).read_text()
    client.on_loop(client.engine.credentials.put, "bench", "ssh-key", {"private_key": key})
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "hetflow")
    return client, shell, cluster

"""Every example notebook runs top to bottom with a real kernel (the cells tagged raises-exception raise, and no
other), with the executors of examples/jupyter_server_config.py. slurm.ipynb runs against the Slurm cluster and sshd
of scripts/services.sh (skipped without them, failed when HETFLOW_REQUIRE_SERVICES=1), configured as a user would:
the cluster's settings in the environment, its key in an SSH agent."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pytest
from cluster import services
from kubeapi import kube_api
from nbclient import NotebookClient

FOLDER = Path(__file__).parent.parent / "examples"
EXAMPLES = sorted(FOLDER.glob("*.ipynb"))
CELL_TIMEOUT = 120  # seconds per cell
# seconds per notebook on the 2-core CI machine (measured there: quickstart 4.5 s, dask 5 s, vqe 4 s, slurm 8.5 s)
TIMEOUTS = {"quickstart": 90, "dask": 120, "vqe": 120, "slurm": 180, "kubernetes": 120}
NEEDS_CLUSTER = {"slurm"}
# notebooks whose cells assert that the values they compute are right (a wrong value fails the notebook's run)
CHECKS_ITS_VALUES = {"quickstart", "dask", "slurm"}
# what examples/jupyter_server_config.py builds the slurm executor from
CLUSTER_SETTINGS = (
    "HETFLOW_SSH_HOST",
    "HETFLOW_SSH_PORT",
    "HETFLOW_SSH_USER",
    "HETFLOW_SSH_KNOWN_HOSTS",
    "HETFLOW_REMOTE_PYTHON",
)


@contextmanager
def ssh_agent(private_key: str) -> Iterator[str]:
    """An ssh-agent of its own holding this key, for as long as the block runs; yields its socket."""
    with tempfile.TemporaryDirectory(prefix="hetflow-agent-") as folder:  # short: a socket path has ~100 characters
        socket = os.path.join(folder, "agent.sock")
        agent = subprocess.Popen(["ssh-agent", "-D", "-a", socket], stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while not os.path.exists(socket):
                if agent.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"ssh-agent did not make its socket {socket}")
                time.sleep(0.05)
            env = {**os.environ, "SSH_AUTH_SOCK": socket}
            subprocess.run(["ssh-add", "-q", "-"], input=private_key, text=True, env=env, check=True, timeout=30)
            yield socket
        finally:
            agent.terminate()
            agent.wait(10)


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=pytest.mark.timeout(TIMEOUTS.get(p.stem, 120))) for p in EXAMPLES],
    ids=[p.stem for p in EXAMPLES],
)
def test_example_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(FOLDER))
    for name in (*CLUSTER_SETTINGS, "SSH_AUTH_SOCK"):  # the developer's own do not leak into the examples
        monkeypatch.delenv(name, raising=False)
    notebook = nbformat.read(path, as_version=4)
    if path.stem in CHECKS_ITS_VALUES:
        assert any("\nassert " in f"\n{c.source}" for c in notebook.cells if c.cell_type == "code"), "no value checked"
    client = NotebookClient(
        notebook, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    if path.stem == "kubernetes":  # against the API-server double (docs/kubernetes.md), the pods this Python
        with kube_api(tmp_path) as (_, config):
            monkeypatch.setenv("HETFLOW_KUBECONFIG", str(config))
            monkeypatch.setenv("HETFLOW_KUBE_PYTHON", sys.executable)
            client.execute()
    elif path.stem in NEEDS_CLUSTER:
        cluster = services()
        for name in CLUSTER_SETTINGS:
            monkeypatch.setenv(name, cluster[name])
        with ssh_agent(Path(cluster["HETFLOW_SSH_KEY"]).read_text()) as socket:
            monkeypatch.setenv("SSH_AUTH_SOCK", socket)
            client.execute()
    else:
        client.execute()
    raised = [c for c in notebook.cells if c.cell_type == "code" and any(o.output_type == "error" for o in c.outputs)]
    expected = [c for c in notebook.cells if "raises-exception" in c.metadata.get("tags", [])]
    assert [c.source for c in raised] == [c.source for c in expected], "the cells tagged raises-exception must raise"
    assert os.path.isdir(tmp_path / "data" / "hetflow")

"""Binder: `binder/postBuild`, run in a clean venv as repo2docker would run it (from the repository's root, the
environment's Python first on PATH), gives a JupyterLab with hetflow's lab and server extensions enabled, and an
engine whose `local` and `dask` executors work with nothing else configured."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")

pytestmark = pytest.mark.timeout(900)

CELLS = """
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "hetflow")
shell.run_cell_magic("remote", "executor=local", "here = sum(range(10))")
shell.run_cell_magic("remote", "executor=dask foreach=k:range(4)", "squares = k * k")
print({"here": shell.user_ns["here"], "squares": shell.user_ns["squares"]})
"""


def run(venv: Path, *argv: str, **env: str) -> str:
    environment = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", **env}
    environment.pop("VIRTUAL_ENV", None)
    done = subprocess.run(argv, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=800)
    assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return ANSI.sub("", done.stdout + done.stderr)


def test_postbuild_in_a_clean_venv_gives_lab_with_hetflow_and_working_local_and_dask_executors(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    isolated = {"JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    run(venv, "bash", "binder/postBuild", **isolated)

    labextensions = run(venv, str(venv / "bin" / "jupyter"), "labextension", "list", **isolated)
    assert re.search(r"hetflow v[\d.]+ enabled\s+OK", labextensions), labextensions
    server_extensions = run(venv, str(venv / "bin" / "jupyter"), "server", "extension", "list", **isolated)
    assert re.search(r"hetflow_server enabled", server_extensions), server_extensions
    assert re.search(r"hetflow_server [\d.]+ OK", server_extensions), server_extensions

    config = json.loads((venv / "etc" / "jupyter" / "jupyter_server_config.json").read_text())
    assert {"local", "dask"} <= set(config["Hetflow"]["executors"])
    assert config["ServerApp"]["default_url"] == "/lab/tree/examples/quickstart.ipynb"
    assert (ROOT / "examples" / "quickstart.ipynb").exists()

    shown = run(venv, str(venv / "bin" / "python"), "-c", CELLS, **isolated)
    # the values as the script printed them (its stdout comes first; a cluster shutting down may log after it)
    assert str({"here": 45, "squares": [0, 1, 4, 9]}) in shown.splitlines(), shown[-3000:]

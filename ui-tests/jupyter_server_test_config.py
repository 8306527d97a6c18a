"""The Jupyter server the UI tests run against (`jupyter lab --config jupyter_server_test_config.py`).

Galata's test settings (no token, no XSRF check: never use them elsewhere), plus a private hetflow: its own store,
runtime directory (connection file) and fast retries, so nothing leaks in or out of the user's own hetflow.
"""

import os
import tempfile

from jupyterlab.galata import configure_jupyter_server

c = get_config()  # noqa: F821 (provided by Jupyter when it loads this file)

configure_jupyter_server(c)
c.ServerApp.ip = "127.0.0.1"
c.ServerApp.allow_root = True  # tests and CI run as root

_tmp = tempfile.mkdtemp(prefix="hetflow-ui-tests-")
# the connection file goes to the runtime dir; kernels started by this server inherit the variable and find it there
os.environ["JUPYTER_RUNTIME_DIR"] = os.path.join(_tmp, "runtime")
c.Hetflow.store_dir = os.path.join(_tmp, "store")
c.Hetflow.retry_backoff = 0.05

# the MFA sshd of scripts/services.sh, when it runs (CI starts it before the UI tests): the login-question dialog
_services = os.path.join(os.environ.get("HETFLOW_SERVICES", "/tmp/hetflow-services"), "env.sh")
if os.path.exists(_services):
    with open(_services) as _fh:
        _env = dict(line.removeprefix("export ").strip().split("=", 1) for line in _fh if line.startswith("export "))
    c.Hetflow.executors = {
        "local": {"kind": "local"},
        "mfa": {
            "kind": "ssh",
            "host": _env["HETFLOW_SSH_HOST"],
            "port": int(_env["HETFLOW_MFA_PORT"]),
            "user": _env["HETFLOW_SSH_USER"],
            "credential": "mfa-key",
            "known_hosts": _env["HETFLOW_SSH_KNOWN_HOSTS"],
            "python": _env["HETFLOW_REMOTE_PYTHON"],
            "remote_root": "~/.hetflow-ui-tests",
            "poll_interval": 0.2,
        },
        # the Slurm cluster, with warm allocations the executor panel lists and cancels
        "cluster": {
            "kind": "slurm",
            "host": _env["HETFLOW_SSH_HOST"],
            "port": int(_env["HETFLOW_SSH_PORT"]),
            "user": _env["HETFLOW_SSH_USER"],
            "credential": "cluster-key",
            "known_hosts": _env["HETFLOW_SSH_KNOWN_HOSTS"],
            "python": _env["HETFLOW_REMOTE_PYTHON"],
            "remote_root": "~/.hetflow-ui-tests",
            "poll_interval": 0.2,
            "keep_alive": 60,
        },
    }

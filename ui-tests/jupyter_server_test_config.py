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

"""The CI JupyterHub that `scripts/hub.sh up` starts on loopback: hetflow's deployment at an HPC center, in small.

Never a production setup: SimpleLocalProcessSpawner runs every user's server as the hub's own (root) user and the
shared-password authenticator lets anyone with the password in. What it does show is the deployment itself:
hetflow installed in the single-user environment (the project's venv), each user with a home of their own (so
Jupyter's data and runtime directories, hence hetflow's store, credentials and connection file, are theirs), and
the center's executors defined once in a site config directory on every server's JUPYTER_CONFIG_PATH.
Ports and directories come from hub.sh through the environment.
"""

import os
from pathlib import Path

import jupyterlab.galata  # the hub runs from the same venv as the single-user servers

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)

STATE = Path(os.environ["HETFLOW_HUB"])  # hub.sh's state directory
HUB = STATE / "hub"  # the hub's own files: database, secrets, pid files, logs
VENV = Path(os.environ["HETFLOW_VENV"])  # the single-user environment, with hetflow installed


def secret(name: str) -> str:
    return (HUB / name).read_text().strip()


# all on loopback, on the ports hub.sh picked
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = int(os.environ["HUB_PORT"])
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(os.environ["HUB_API_PORT"])
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{os.environ['PROXY_API_PORT']}"
c.ConfigurableHTTPProxy.command = [str(STATE / "node_modules" / ".bin" / "configurable-http-proxy")]
c.ConfigurableHTTPProxy.pid_file = str(HUB / "proxy.pid")
c.ConfigurableHTTPProxy.auth_token = secret("proxy_token")
c.JupyterHub.db_url = f"sqlite:///{HUB / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(HUB / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(HUB / "hub.pid")

# two users who log in through the hub's form with one shared password
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = secret("user_password")
c.Authenticator.allowed_users = set(os.environ.get("HUB_USERS", "alice bob").split())

# every user's server from the project's venv, in a home of their own
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = str(STATE / "home" / "{username}")
c.Spawner.cmd = [str(VENV / "bin" / "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = c.Spawner.http_timeout = 120
# a spawn request answers at once (202), so the tests start both users together
c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}
c.Spawner.environment = {
    "PATH": f"{VENV / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    # the site's config directory: the center's executors for everyone (see hub.sh's site_config)
    "JUPYTER_CONFIG_PATH": str(STATE / "etc" / "jupyter"),
    # Galata's page helpers reach Lab through a token in the URL, which JupyterHub 6 refuses unless told
    "JUPYTERHUB_ALLOW_TOKEN_IN_URL": "1",
}
c.Spawner.args = [
    # Galata drives JupyterLab through window.jupyterapp and its own lab extension
    "--LabApp.expose_app_in_browser=True",
    f"--LabServerApp.extra_labextensions_path={Path(jupyterlab.galata.__file__).parent}",
]
if os.geteuid() == 0:  # CI runs as root
    c.Spawner.args.append("--allow-root")

# the tests' way into the REST API: a service whose token may create users' tokens and start their servers
c.JupyterHub.services = [{"name": "hetflow-ci", "api_token": secret("admin_token")}]
c.JupyterHub.load_roles = [
    {
        "name": "hetflow-ci",
        "services": ["hetflow-ci"],
        "scopes": ["admin:users", "admin:servers", "tokens", "access:servers", "read:users", "list:users"],
    }
]

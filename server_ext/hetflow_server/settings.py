"""The engine's settings, read from the Jupyter config files (`c.Hetflow...`) by the server and the embedded engine."""

from __future__ import annotations

from pathlib import Path

from jupyter_core.paths import jupyter_config_path, jupyter_data_dir
from traitlets import Dict, Float, Int, Unicode
from traitlets.config import Config, Configurable
from traitlets.config.loader import ConfigFileNotFound, JSONFileConfigLoader, PyFileConfigLoader

# in each directory the .py file, then the .json one (which wins), as the Jupyter server itself reads them
CONFIG_FILES = (
    (PyFileConfigLoader, "jupyter_server_config.py"),
    (JSONFileConfigLoader, "jupyter_server_config.json"),
)


class Hetflow(Configurable):
    default_executor = Unicode("local", config=True, help="Executor for cells that name none.")
    executors = Dict(
        default_value={"local": {"kind": "local"}},
        config=True,
        help="Executors by name, each a dict with its `kind` (local, ssh, slurm, dask, batch, braket) and that "
        "kind's settings (docs/reference.md lists them), "
        'e.g. {"local": {"kind": "local", "workers": 2}}. They add to `site_executors`; a name in both is this one.',
    )
    site_executors = Dict(
        default_value={},
        config=True,
        help="Executors a site defines once for every user, in a system-wide config file (e.g. the hub "
        "environment's etc/jupyter/jupyter_server_config.py): the same shape as `executors`, which a user's own "
        "config sets without losing these.",
    )
    store_dir = Unicode(
        "",
        config=True,
        help="Where tasks, payloads, results and logs are kept (default: <jupyter data dir>/hetflow). The engine "
        "makes it and its files this user's alone (0700, 0600), also when it was there, and refuses one that "
        "belongs to another user.",
    )
    prompt_timeout = Float(
        120.0,
        config=True,
        help="Seconds a question a remote system asks at login (an MFA one-time code) waits for its answer; sshd "
        "ends a login after its LoginGraceTime (120 s by default) anyway.",
    )
    log_limit = Int(
        10 * 2**20,
        min=0,
        config=True,
        help="Most bytes of a task's output kept in its log: the first nine tenths are streamed to the cell and "
        "the sidebar as they come; past them only the last tenth is kept, shown when the task ends after a note "
        "of how much was left out. 0: no limit.",
    )
    keep_days = Float(
        90.0,
        min=0,
        config=True,
        help="Days an ended task is kept (by when it finished) with its events, log, payload and results; then the "
        "engine forgets it, unless it is pinned (%remote pin) or a task kept waits for it. 0: kept by age.",
    )
    keep_bytes = Int(
        20 * 2**30,
        min=0,
        config=True,
        help="Most bytes the store's blobs and logs may hold: past it the oldest ended tasks are forgotten first "
        "(as keep_days says). 0: no limit.",
    )
    retry_backoff = Float(1.0, config=True, help="Seconds before the first retry of a failed task; doubles each time.")
    retry_backoff_max = Float(60.0, config=True, help="Longest wait between two retries, in seconds.")

    @property
    def all_executors(self) -> dict[str, dict]:
        """The site's executors, then the user's: a user's config replaces a site executor only by its name."""
        return {**self.site_executors, **self.executors}

    @property
    def store_path(self) -> Path:
        return Path(self.store_dir).expanduser() if self.store_dir else Path(jupyter_data_dir()) / "hetflow"


def load_config() -> Config:
    """The merged Jupyter server config files, lowest priority first, as `jupyter server` would read them."""
    config = Config()
    for directory in reversed(jupyter_config_path()):
        for loader, filename in CONFIG_FILES:
            try:
                config.merge(loader(filename, path=directory).load_config())
            except ConfigFileNotFound:
                continue
    return config

# The executors the example notebooks use. `make demo`, scripts/run_notebook.py and the tests put this folder on
# JUPYTER_CONFIG_PATH; to use these executors elsewhere, copy the `c.Hetflow` lines into your own
# ~/.jupyter/jupyter_server_config.py (the engine reads the same files whether it runs in a Jupyter server or
# embedded in a kernel).
import os
import sys

c = get_config()  # noqa: F821 (Jupyter defines it when it loads this file)

# A Slurm cluster reached over SSH. The values come from the environment when HETFLOW_SSH_HOST is set (the tests
# set it to their loopback cluster: `source /tmp/hetflow-services/env.sh` after `scripts/services.sh up`); for your
# own cluster, write its values here instead, e.g.
#     {"kind": "slurm", "host": "perlmutter.example.org", "user": "alice", "credential": "perlmutter-key",
#      "python": "/global/common/software/m1234/venv/bin/python", "setup": ["module load python"],
#      "remote_root": "/scratch/alice/hetflow"}
# The key: your SSH agent when `credential` is empty (`ssh-add ~/.ssh/id_ed25519` before starting Jupyter), or
# `"credential": "NAME"`, an ssh-key credential added in the sidebar's Credentials tab.
# Without HETFLOW_SSH_HOST this is login-node mode (host "localhost"): sbatch and squeue run on this machine, and
# the jobs run this Python, which the compute nodes must see (a shared file system).
if os.environ.get("HETFLOW_SSH_HOST"):
    slurm = {
        "kind": "slurm",
        "host": os.environ["HETFLOW_SSH_HOST"],
        "port": int(os.environ.get("HETFLOW_SSH_PORT", "22")),
        "user": os.environ.get("HETFLOW_SSH_USER", ""),
        "known_hosts": os.environ.get("HETFLOW_SSH_KNOWN_HOSTS", "~/.ssh/known_hosts"),
        "python": os.environ.get("HETFLOW_REMOTE_PYTHON", "python3"),
    }
else:
    slurm = {"kind": "slurm", "host": "localhost", "python": sys.executable}

# A Kubernetes cluster, from a kubeconfig (the tests set HETFLOW_KUBECONFIG to their API-server double's); the image
# must hold Python and cloudpickle of this kernel's versions (the double runs the pods' commands with this Python).
kubernetes = {
    "kind": "kubernetes",
    "kubeconfig": os.environ.get("HETFLOW_KUBECONFIG", "~/.kube/config"),
    "namespace": "research",
    "image": f"python:{sys.version_info[0]}.{sys.version_info[1]}-slim",
    "python": os.environ.get("HETFLOW_KUBE_PYTHON", "python3"),
    "poll_interval": 0.2,
}

c.Hetflow.default_executor = "local"
c.Hetflow.executors = {
    "local": {"kind": "local", "workers": 2},  # warm worker processes on this machine
    "dask": {"kind": "dask", "workers": 2},  # a Dask LocalCluster on 127.0.0.1, started at first use
    "braket": {"kind": "braket", "device": "local", "shots": 1000},  # Braket's LocalSimulator
    "slurm": slurm,
    "k8s": kubernetes,
}

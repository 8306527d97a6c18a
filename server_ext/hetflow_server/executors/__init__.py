"""Executor kinds by name, imported only when an executor of that kind is configured."""

from __future__ import annotations

import importlib

from ..models import SpecError
from .base import Executor, Job, KeptResult, Reporter, Upstream

KINDS = {
    "local": "hetflow_server.executors.local:LocalExecutor",
    "ssh": "hetflow_server.executors.ssh:SSHExecutor",
    "slurm": "hetflow_server.executors.slurm:SlurmExecutor",
    "dask": "hetflow_server.executors.dask:DaskExecutor",
    "batch": "hetflow_server.executors.batch:BatchExecutor",
    "braket": "hetflow_server.executors.braket:BraketExecutor",
    "hybrid": "hetflow_server.executors.hybrid:HybridExecutor",
    "kubernetes": "hetflow_server.executors.kubernetes:KubernetesExecutor",
}


def executor_class(kind: str) -> type[Executor]:
    try:
        module, _, name = KINDS[kind].partition(":")
    except KeyError:
        raise SpecError(f"unknown executor kind {kind!r}; kinds are: {', '.join(sorted(KINDS))}") from None
    return getattr(importlib.import_module(module), name)


__all__ = ["KINDS", "Executor", "Job", "KeptResult", "Reporter", "Upstream", "executor_class"]

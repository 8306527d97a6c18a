"""Executor kinds by name, imported only when an executor of that kind is configured."""

from __future__ import annotations

import importlib

from ..models import SpecError
from .base import Executor, Job, Reporter

KINDS = {
    "local": "hetflow_server.executors.local:LocalExecutor",
    "ssh": "hetflow_server.executors.ssh:SSHExecutor",
    "slurm": "hetflow_server.executors.slurm:SlurmExecutor",
}


def executor_class(kind: str) -> type[Executor]:
    try:
        module, _, name = KINDS[kind].partition(":")
    except KeyError:
        raise SpecError(f"unknown executor kind {kind!r}; kinds are: {', '.join(sorted(KINDS))}") from None
    return getattr(importlib.import_module(module), name)


__all__ = ["KINDS", "Executor", "Job", "Reporter", "executor_class"]

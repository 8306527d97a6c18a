"""`slurm`: each task an sbatch job, over SSH to the login node or with local commands on it.

Options are Slurm's own names; one `squeue` per poll cycle covers all jobs; the final state comes from the task's
done file, else `scontrol show job` (Slurm keeps ended jobs MinJobAge seconds; no slurmdbd is needed).
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from ..models import Option, option_table, parse_bool, parse_count
from ..shipping import LaunchError
from ..transport import Transport, TransportError
from .hosts import HostExecutor, HostJob
from .polled import Saw

_SLURM_TIME = re.compile(r"^(\d+-)?\d+(:\d+){0,2}$|^\d+-\d+$")


def _word(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.:,+\-=/@%]+", text):
        raise ValueError("use letters, digits and _ . : , + - = / @ %")
    return text


def _slurm_time(text: str) -> str:
    if not _SLURM_TIME.match(text):
        raise ValueError("Slurm's time format: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS")
    return text


def _shell_words(text: str) -> str:
    shlex.split(text)  # raises ValueError on unbalanced quotes
    return text


# Slurm's own option names, each passed to sbatch as --NAME=VALUE (with - for _), grouped by how the value is read:
# name -> (what it is, an example). The values are checked here; Slurm checks the rest and its refusal is quoted.
SBATCH: dict[Any, dict[str, tuple[str, str]]] = {
    _word: {
        "partition": ("Slurm partition", "debug"),
        "account": ("account to charge", "m1234"),
        "qos": ("quality of service", "debug"),
        "mem": ("memory per node", "8G"),
        "gpus": ("GPUs (count or type:count)", "1"),
        "gres": ("generic resources", "gpu:1"),
        "constraint": ("node features", "cpu"),
    },
    parse_count: {
        "nodes": ("number of nodes", "1"),
        "ntasks": ("number of tasks (MPI ranks)", "1"),
        "cpus_per_task": ("CPUs per task", "4"),
    },
    _slurm_time: {"time": ("time limit", "00:10:00")},
}


class SlurmExecutor(HostExecutor):
    kind = "slurm"
    options = option_table(
        *(Option(name, parse, *about) for parse, named in SBATCH.items() for name, about in named.items()),
        Option("exclusive", parse_bool, "whole nodes only", "true"),
        Option("sbatch_args", _shell_words, "more sbatch arguments, as on the command line", "'--mail-type=END'"),
    )
    RUNNING_STATES = frozenset({"RUNNING", "COMPLETING"})
    ENDED_STATES = frozenset(
        {
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
            "NODE_FAIL",
            "PREEMPTED",
            "OUT_OF_MEMORY",
            "BOOT_FAIL",
            "DEADLINE",
        }
    )

    def script(self, job: HostJob, options: dict[str, Any]) -> str:
        lines = [
            "#!/bin/bash",
            f"#SBATCH --job-name=hetflow-{job.task_id}",
            f"#SBATCH --output={job.paths.beside('slurm.out')}",
        ]
        flags = [name for named in SBATCH.values() for name in named if name in options]
        lines += [f"#SBATCH --{name.replace('_', '-')}={options[name]}" for name in flags]
        if options.get("exclusive"):
            lines.append("#SBATCH --exclusive")
        lines += [f"cd {shlex.quote(job.directory)}", *self.setup, f"exec {self.runner_command(job)}"]
        return "\n".join(lines) + "\n"

    async def start_job(self, transport: Transport, job: HostJob, options: dict[str, Any]) -> str:
        path = job.paths.beside("job.sbatch")
        await transport.write(path, self.script(job, options).encode())
        extra = " ".join(shlex.quote(word) for word in shlex.split(options.get("sbatch_args", "")))
        try:
            answer = await transport.run(f"sbatch --parsable {extra} {shlex.quote(path)}", retry=False)
        except TransportError:
            # the answer was lost with the connection, but the job may have gone through: look for it by name
            found = await transport.run(f"squeue -h --states=all -n {self.job_name(job)} -o %i")
            if found.out.split():
                return found.out.split()[0]
            raise
        if answer.code:
            raise LaunchError(f"sbatch refused the job: {answer.err.strip() or answer.out.strip()}")
        job_id = answer.out.strip().split(";")[0]
        if not re.fullmatch(r"\d+(_\d+)?", job_id):
            raise LaunchError(f"sbatch answered {answer.out.strip()!r}, not a job id")
        return job_id

    @staticmethod
    def job_name(job: HostJob) -> str:
        """Unique per attempt (the attempt's directory), so a lookup by name finds this attempt's job only."""
        return "hetflow-" + job.directory.rsplit("/", 1)[-1]

    def status_command(self, jobs: list[HostJob]) -> str:
        ids = ",".join(j.job_id for j in jobs if j.job_id)
        # squeue fails on ids Slurm has forgotten: its answer still counts (those jobs are gone); any other failure
        # (the controller is down) prints no ::ok, and nothing is concluded this cycle
        query = f"squeue -h --states=all -j {ids} -o '%i %T' 2>&1"
        return (
            f"out=$({query}); code=$?; printf '%s\\n' \"$out\"; "
            "if [ $code -eq 0 ] || printf '%s' \"$out\" | grep -q 'Invalid job id'; then echo ::ok; fi"
        )

    def parse_status(self, text: str) -> dict[str, str]:
        words = (line.split() for line in text.splitlines())
        return {w[0]: w[1] for w in words if len(w) == 2 and re.fullmatch(r"\d+(_\d+)?", w[0])}

    def cancel_command(self, job: HostJob) -> str:
        return f"scancel {shlex.quote(job.job_id)}"

    async def why_ended(self, job: HostJob, saw: Saw) -> str:
        transport = await self.prepared()
        shown = await transport.run(f"scontrol -o show job {shlex.quote(job.job_id)}")
        fields = dict(re.findall(r"(\w+)=(\S*)", shown.out))
        final = fields.get("JobState", saw.detail or "gone")
        detail = (
            f"reason {fields.get('Reason', '?')}, exit code {fields.get('ExitCode', '?')}"
            if fields
            else ("Slurm no longer knows it")
        )
        hint = " (it reached its time limit: ask for more with time=...)" if final == "TIMEOUT" else ""
        return (
            f"Slurm job {job.job_id} ended as {final} ({detail}) before the task wrote its outcome{hint}"
            + await self.output_tail(job, "slurm.out")
        )

"""`slurm`: each task an sbatch job, over SSH to the login node or with local commands on it.

Options are Slurm's own names; one `squeue` per poll cycle covers all jobs; the final state comes from the task's
done file, else `scontrol show job` (Slurm keeps ended jobs MinJobAge seconds; no slurmdbd is needed).
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from ..models import Option, option_table, parse_bool, parse_count
from ..transport import Transport, TransportError
from .remote import LaunchError, RemoteExecutor, RemoteJob

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


# option name -> sbatch flag; the values are checked here, Slurm checks the rest and its refusal is quoted
SBATCH = {
    "partition": "--partition",
    "account": "--account",
    "qos": "--qos",
    "nodes": "--nodes",
    "ntasks": "--ntasks",
    "cpus_per_task": "--cpus-per-task",
    "mem": "--mem",
    "gpus": "--gpus",
    "gres": "--gres",
    "time": "--time",
    "constraint": "--constraint",
}


class SlurmExecutor(RemoteExecutor):
    kind = "slurm"
    options = option_table(
        Option("partition", _word, "Slurm partition", "debug"),
        Option("account", _word, "account to charge", "m1234"),
        Option("qos", _word, "quality of service", "debug"),
        Option("nodes", parse_count, "number of nodes", "1"),
        Option("ntasks", parse_count, "number of tasks (MPI ranks)", "1"),
        Option("cpus_per_task", parse_count, "CPUs per task", "4"),
        Option("mem", _word, "memory per node", "8G"),
        Option("gpus", _word, "GPUs (count or type:count)", "1"),
        Option("gres", _word, "generic resources", "gpu:1"),
        Option("time", _slurm_time, "time limit", "00:10:00"),
        Option("constraint", _word, "node features", "cpu"),
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

    def script(self, job: RemoteJob, options: dict[str, Any]) -> str:
        lines = [
            "#!/bin/bash",
            f"#SBATCH --job-name=hetflow-{job.task_id}",
            f"#SBATCH --output={job.directory}/slurm.out",
        ]
        lines += [f"#SBATCH {flag}={options[name]}" for name, flag in SBATCH.items() if name in options]
        if options.get("exclusive"):
            lines.append("#SBATCH --exclusive")
        lines += [f"cd {shlex.quote(job.directory)}", *self.setup, f"exec {self.runner_command(job)}"]
        return "\n".join(lines) + "\n"

    async def launch(self, transport: Transport, job: RemoteJob, options: dict[str, Any]) -> str:
        path = f"{job.directory}/job.sbatch"
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
    def job_name(job: RemoteJob) -> str:
        """Unique per attempt (the attempt's directory), so a lookup by name finds this attempt's job only."""
        return "hetflow-" + job.directory.rsplit("/", 1)[-1]

    def status_command(self, jobs: list[RemoteJob]) -> str:
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

    def cancel_command(self, job: RemoteJob) -> str:
        return f"scancel {shlex.quote(job.job_id)}"

    async def ended_without_outcome(self, transport: Transport, job: RemoteJob, state: str | None) -> str:
        shown = await transport.run(f"scontrol -o show job {shlex.quote(job.job_id)}")
        fields = dict(re.findall(r"(\w+)=(\S*)", shown.out))
        final = fields.get("JobState", state or "gone")
        detail = (
            f"reason {fields.get('Reason', '?')}, exit code {fields.get('ExitCode', '?')}"
            if fields
            else ("Slurm no longer knows it")
        )
        hint = " (it reached its time limit: ask for more with time=...)" if final == "TIMEOUT" else ""
        return (
            f"Slurm job {job.job_id} ended as {final} ({detail}) before the task wrote its outcome{hint}"
            + await self.output_tail(transport, job, "slurm.out")
        )

"""`slurm`: tasks packed into sbatch jobs (job arrays), over SSH to the login node or with local commands on it.

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
from .hosts import KEEP_ALIVE, HostExecutor, HostJob
from .polled import TAIL, Saw, ends_with

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


def seconds(text: str) -> int:
    """A Slurm time limit in seconds: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS."""
    days, _, clock = text.rpartition("-")
    parts = [int(part) for part in clock.split(":")]
    if days:  # D-HH[:MM[:SS]]
        parts += [0] * (3 - len(parts))
    elif len(parts) < 3:  # MM or MM:SS
        parts = [0, *parts, *([0] * (2 - len(parts)))]
    hours, minutes, secs = parts
    return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + secs


MAX_ELEMENTS = 64  # array elements of one pack: more tasks share them


class SlurmExecutor(HostExecutor):
    """**Packing.** The tasks made ready together with the same options (a foreach, cells ready in one turn) go out
    as one `sbatch`: a plain job for one task, else a job array of one element per task, at most 64 (`pack=N`:
    elements of at most N tasks each). Each element takes tasks from the pack's queue and runs each in a child
    process, as many at once as Slurm gave it CPUs; the elements still pending once every task has started are
    cancelled. Each task keeps its own log, outcome, retries, timeout and cancel (out of the queue, or its process
    stopped; the job too once none of its tasks is left). A task whose `timeout=` does not fit in what is left of
    the element's `time=` is left to another element, and fails saying so when none can take it; a task still
    running when its job reaches `time=` fails with Slurm's TIMEOUT. `retries=` apply to both.

    **Warm allocations.** With `keep_alive=SECONDS` the job's elements, once idle, wait that long for more tasks
    with the same options (never into the last tenth of `time=`), then exit by themselves; the engine hands those
    tasks over with a few SFTP writes and no sbatch, and its follower pushes their outcomes back. The sidebar's
    executor panel (and `%remote executors`) lists the live allocations (job, nodes, tasks, idle for) and cancels
    one; an allocation cancelled or killed fails or retries only the tasks it was running or holding.

    Measured with `benchmarks/slurm.py` on the CI cluster over SSH: one trivial cell 1.00x raw `sbatch` + `squeue`
    polling; a 32-element trivial foreach 1.44x one trivial cell; sequential `hetflow.run` calls on a warm
    allocation 24.9 ms each (median) against 1001 ms with keep_alive=0.
    """

    kind = "slurm"
    options = option_table(
        *(Option(name, parse, *about) for parse, named in SBATCH.items() for name, about in named.items()),
        Option("exclusive", parse_bool, "whole nodes only", "true"),
        Option("sbatch_args", _shell_words, "more sbatch arguments, as on the command line", "'--mail-type=END'"),
        Option("pack", parse_count, "most tasks one job (array element) runs; default: as many as it can take", "1"),
        KEEP_ALIVE,
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

    def script(self, pack: str, elements: int, options: dict[str, Any]) -> str:
        output = f"{pack}/slurm-%A_%a.out" if elements > 1 else f"{pack}/slurm-%j.out"  # slurm-ELEMENT.out
        lines = ["#!/bin/bash", f"#SBATCH --job-name={self.job_name(pack)}", f"#SBATCH --output={output}"]
        if elements > 1:
            lines.append(f"#SBATCH --array=0-{elements - 1}")
        flags = [name for named in SBATCH.values() for name in named if name in options]
        lines += [f"#SBATCH --{name.replace('_', '-')}={options[name]}" for name in flags]
        if options.get("exclusive"):
            lines.append("#SBATCH --exclusive")
        limit = seconds(options["time"]) if "time" in options else 0
        command = self.runner_command(pack, options, limit, options.get("pack", 0))
        lines += [f"cd {shlex.quote(pack)}", *self.setup, f"exec {command}"]
        return "\n".join(lines) + "\n"

    def pack_files(self, pack: str, jobs: list[HostJob], options: dict[str, Any]) -> dict[str, bytes]:
        """The job script: a job for one task, else a job array whose elements take the pack's tasks (at most
        `pack` each, when set; else one element per task up to MAX_ELEMENTS; those still pending once every task
        has started are cancelled)."""
        most = options.get("pack", 0)
        elements = min(len(jobs), MAX_ELEMENTS) if not most else -(-len(jobs) // most)
        return {"job.sbatch": self.script(pack, elements, options).encode()}

    async def start_pack(
        self, transport: Transport, unpack: str, pack: str, jobs: list[HostJob], options: dict[str, Any]
    ) -> str:
        path = f"{pack}/job.sbatch"
        extra = " ".join(shlex.quote(word) for word in shlex.split(options.get("sbatch_args", "")))
        try:
            answer = await transport.run(f"{unpack} && sbatch --parsable {extra} {shlex.quote(path)}", retry=False)
        except TransportError:
            # the answer was lost with the connection, but the job may have gone through: look for it by name
            found = await transport.run(f"squeue -h --states=all -n {self.job_name(pack)} -o %F")
            if found.out.split():
                return found.out.split()[0]
            raise
        if answer.code:
            raise LaunchError(f"sbatch refused the job: {answer.err.strip() or answer.out.strip()}")
        job_id = answer.out.strip().split(";")[0]
        if not re.fullmatch(r"\d+", job_id):
            raise LaunchError(f"sbatch answered {answer.out.strip()!r}, not a job id")
        return job_id

    @staticmethod
    def job_name(pack: str) -> str:
        """Unique per pack (its directory), so a lookup by name finds this launch only."""
        return "hetflow-" + pack.rsplit("/", 1)[-1]

    def status_command(self, jobs: list[HostJob]) -> str:
        ids = ",".join(sorted({j.job_id for j in jobs if j.job_id}))
        # squeue fails on ids Slurm has forgotten: its answer still counts (those jobs are gone); any other failure
        # (the controller is down) prints no ::ok, and nothing is concluded this cycle
        query = f"squeue -h -r --states=all -j {ids} -o '%i %T' 2>&1"  # -r: an array's elements, one a line
        return (
            f"out=$({query}); code=$?; printf '%s\\n' \"$out\"; "
            "if [ $code -eq 0 ] || printf '%s' \"$out\" | grep -q 'Invalid job id'; then echo ::ok; fi"
        )

    def parse_status(self, text: str) -> dict[str, str]:
        words = (line.split() for line in text.splitlines())
        return {w[0]: w[1] for w in words if len(w) == 2 and re.fullmatch(r"\d+(_\d+)?", w[0])}

    def stop_command(self, job_id: str) -> str:
        return f"scancel {shlex.quote(job_id)}"

    def trim_command(self, job_id: str) -> str:
        return f"scancel --state=PENDING {shlex.quote(job_id)}"

    async def why_ended(self, job: HostJob, saw: Saw) -> str:
        transport = await self.prepared()
        which = job.element or job.job_id
        shown = await transport.run(f"scontrol -o show job {shlex.quote(which)}")
        fields = dict(re.findall(r"(\w+)=(\S*)", shown.out.partition("\n")[0]))
        final = fields.get("JobState", saw.detail or "gone")
        detail = (
            f"reason {fields.get('Reason', '?')}, exit code {fields.get('ExitCode', '?')}"
            if fields
            else ("Slurm no longer knows it")
        )
        hint = " (it reached its time limit: ask for more with time=...)" if final == "TIMEOUT" else ""
        if not job.element:  # what its elements said: a timeout that does not fit, the shell's errors
            said = await transport.run(f"tail -q -c {TAIL} {shlex.quote(job.pack)}/slurm-*.out 2>/dev/null")
            return f"Slurm job {which} ended as {final} ({detail}) before the task started{hint}" + ends_with(said.out)
        return (
            f"Slurm job {which} ended as {final} ({detail}) before the task wrote its outcome{hint}"
            + await self.output_tail(f"{job.pack}/slurm-{which}.out")
        )

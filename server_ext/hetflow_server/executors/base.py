"""The contract every executor kind fulfils, and the job it is handed."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from traitlets import HasTraits, Unicode

from ..models import Option
from ..protocol import AccessError, KeptResult, NotFound, ResultGone, SpecError, TransportError
from ..transport import Asker


@dataclass(frozen=True)
class Upstream:
    """An input that is another task's output: where that task ran and where its result is."""

    task_id: str
    output: str
    result_hash: str
    executor: str
    path: Path | None  # the result's file in the engine's store (a large one)
    data: bytes | None = None  # or its bytes (a small one); neither while it is kept where it was computed

    def held(self) -> bytes | None:
        """Its bytes, when the engine's store holds it; None while it is kept where it was computed."""
        return self.data if self.path is None else self.path.read_bytes()

    def source(self) -> dict[str, Any]:
        """Where the runner reads it from the engine's store (see shipping.Source)."""
        return {"data": self.data} if self.data is not None else {"path": str(self.path)}


@dataclass
class Job:
    """One attempt at one task, as the executor sees it."""

    task_id: str
    payload: bytes
    options: dict[str, Any]
    bound: dict[str, bytes] = field(default_factory=dict)  # input values given per task (a foreach element)
    # inputs that are upstream outputs: one task's, or a list of them (the elements of a foreach, in order)
    refs: dict[str, Upstream | list[Upstream]] = field(default_factory=dict)
    # what the runner's provider hands the code (the braket kind's device and shots); empty for other kinds
    context: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None  # the task's own limit (timeout=): a pack places it where it fits
    bring: bool = False  # the kernel waits for the result: send it back with the outcome (TaskSpec.bring)

    def upstreams(self) -> list[Upstream]:
        """Every upstream result the job reads."""
        return [up for ref in self.refs.values() for up in (ref if isinstance(ref, list) else [ref])]


class Reporter(Protocol):
    """How an executor tells the scheduler what happened; called on the engine's event loop."""

    def submitted(self, task_id: str, handle: dict[str, Any]) -> None:
        """The remote system took the job (its id is in the handle): kept so a restarted engine follows it."""

    def started(self, task_id: str, handle: dict[str, Any]) -> None: ...

    def log(self, task_id: str, stream: str, text: str) -> None: ...

    def finished(self, task_id: str, result: bytes | KeptResult | None, error: dict[str, str] | None) -> None:
        """The task ended: its result pickle (its bytes, or a result the executor keeps) or the error."""

    def lost(self, task_id: str, reason: str) -> None:
        """The task's process is gone without an outcome (it died with a previous engine)."""

    def gone(self, task_id: str, gone: ResultGone) -> None:
        """The task could not go: upstream results it reads, kept where they were computed, are gone."""

    def secrets(self) -> list[str]:
        """The credentials' secret values, for a runner that writes output where the engine cannot mask it first
        (a local worker's spool while no engine listens)."""
        ...

    def batch(self) -> AbstractContextManager[None]:
        """Reports made inside are stored in one commit (report many tasks at once inside one)."""
        ...


def _text(value: Any) -> str:
    """A setting's value as a cell would write it (true, not True), so both are read the same way."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _no_credentials(name: str) -> dict[str, Any]:
    raise SpecError(f"no credential store: cannot look up {name!r}")


class Executor(HasTraits):
    """A configured backend. Submission takes a batch so that kinds which can pack tasks do so.

    Executors push what they learn through the reporter: local workers say it at once, remote kinds poll all
    their jobs in one call per cycle and report the changes.
    """

    kind: ClassVar[str]
    options: ClassVar[dict[str, Option]] = {}
    name = Unicode()

    def __init__(
        self,
        name: str,
        reporter: Reporter,
        spool: Path,
        credentials: Callable[[str], dict[str, Any]] | None = None,
        asker: Callable[[str], Asker] | None = None,
        **settings: Any,
    ):
        traits = set(self.trait_names())
        unknown = sorted(set(settings) - traits - {"kind"} - set(self.options))
        if unknown:
            raise SpecError(
                f"executor {name!r} ({self.kind}): unknown setting {', '.join(map(repr, unknown))}; "
                f"settings are: {', '.join(sorted(traits - {'name'}))}, and defaults for the cell options "
                f"({', '.join(self.options) or 'none'})"
            )
        settings.pop("kind", None)
        # a cell option given in the executor's settings is its default there (a site's account, a partition)
        self.defaults: dict[str, Any] = {}
        for key in [k for k in settings if k in self.options and k not in traits]:
            try:
                self.defaults[key] = self.options[key].read(_text(settings.pop(key)))
            except SpecError as err:
                raise SpecError(f"executor {name!r} ({self.kind}): {err}") from None
        super().__init__(name=name, **settings)
        self.reporter = reporter
        self.credentials = credentials or _no_credentials
        self.asker = asker  # for a host: how its login questions (MFA) reach the user; None: nobody to ask
        self.spool = spool  # this executor's own directory for files in flight
        spool.mkdir(parents=True, exist_ok=True, mode=0o700)

    async def start(self) -> None:
        """Warm up (start workers, open connections) so that the first task does not pay for it."""

    async def submit(self, jobs: list[Job]) -> None:
        """Take these jobs; report `started` when each runs and `finished` when it ends."""
        raise NotImplementedError

    async def reattach(self, task_id: str, handle: dict[str, Any]) -> None:
        """After an engine restart: follow a task that was running, and report as for `submit`."""
        self.reporter.lost(task_id, f"the {self.kind} executor cannot re-attach to running tasks")

    async def cancel(self, task_id: str) -> str | None:
        """Stop the task wherever it is (queued here or running); no report follows. Returns what the user must
        know when its code could not be stopped for sure (None: it was)."""
        raise NotImplementedError

    async def fetch_results(self, kept: dict[str, str]) -> list[bytes]:
        """The bytes of results this executor kept (reported as KeptResults; task id -> hash), in as few round
        trips as it can; ResultGone names those no longer there."""
        raise LookupError(f"the {self.kind} executor keeps no results")

    def holds(self, task_id: str, digest: str) -> bool:
        """Whether this executor may still keep the task's result (with this hash) where it was computed."""
        return False

    async def clean(self) -> dict[str, Any]:
        """Empty the executor's blob store but for what running tasks read: {"removed": count, "bytes": freed}."""
        raise NotFound(f"the {self.kind} executor {self.name!r} keeps no blob store")

    async def cancel_allocation(self, allocation: str) -> None:
        """Stop one of the allocations `describe` lists (a kind that holds allocations of its own: Slurm, SSH)."""
        raise NotFound(f"the {self.kind} executor {self.name!r} holds no allocations")

    def describe(self) -> dict[str, Any]:
        """Kind, settings and health, for `%remote executors` and the API; never a secret."""
        raise NotImplementedError

    async def check(self) -> dict[str, Any]:
        """A health check on demand: `describe`, after a round trip to what the executor reaches."""
        try:
            problem = await self.reach()
        except (AccessError, TransportError, SpecError, ConnectionError) as err:  # they say what is wrong
            problem = str(err)
        except Exception as err:
            problem = f"{type(err).__name__}: {err}"
        return {**self.describe(), "healthy": False, "error": problem} if problem else self.describe()

    async def reach(self) -> str | None:
        """A round trip to the system the executor reaches (connect, list): what is wrong, or None."""
        return None

    async def close(self) -> None:
        """Release workers and connections."""

"""The dependency graph: which pending tasks wait for which, and what a completion, a failure or a re-run reaches.

Kept apart from the scheduler so that the graph's questions (may this task run? what does this failure doom? what
must a re-run run again?) are answered in one place. It decides and the scheduler moves states: nothing here
changes a task's state or writes to the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .models import State, Task, ref_ids
from .store import Store


class Dependencies:
    """Who waits for whom, over the scheduler's unfinished tasks (`live`, read only) and the store."""

    def __init__(self, store: Store, live: Mapping[str, Task]):
        self.store, self.live = store, live
        self._waiting: dict[str, set[str]] = {}  # upstream id -> pending tasks that wait for it
        self._recheck: dict[str, set[str]] = {}  # upstream id -> completed dependents to re-run if its result changes

    def blockers(self, task: Task, known: dict[str, Task | None]) -> tuple[list[str], str | None]:
        """The dependencies still to finish, or why the task can never run (an upstream failed). `known` keeps
        the finished upstream tasks read from the store, for the next task of the same batch."""
        unfinished = []
        for dep in task.deps:
            upstream = self.live.get(dep)
            if upstream is None:
                if dep not in known:
                    known[dep] = self.store.get_task(dep)
                upstream = known[dep]
            if upstream is None:
                return [], f"upstream task {dep} does not exist"
            if upstream.state is State.FAILED or upstream.state is State.CANCELLED:
                verb = "failed" if upstream.state is State.FAILED else "was cancelled"
                return [], f"upstream {upstream.label} {verb}"
            if upstream.state is not State.COMPLETED:
                unfinished.append(dep)
        return unfinished, None

    def wait(self, task_id: str, upstream: Iterable[str]) -> None:
        """The pending task waits for each of these until it completes."""
        for dep in upstream:
            self._waiting.setdefault(dep, set()).add(task_id)

    def released(self, upstream_id: str) -> list[str]:
        """The task completed: the ids of those that waited for it (each may still wait for others)."""
        return sorted(self._waiting.pop(upstream_id, ()))

    def stale(self, upstream: Task) -> list[Task]:
        """The task completed again after a re-run: its completed dependents that used another result of it."""
        stale = []
        for dependent_id in self._recheck.pop(upstream.id, ()):
            dependent = self.store.get_task(dependent_id)
            if dependent is None or dependent.state is not State.COMPLETED:
                continue
            used = [
                dependent.inputs.get(name, "").split(",")
                for name, (source, _) in dependent.refs.items()
                if upstream.id in ref_ids(source)
            ]
            if any(upstream.result_hash not in hashes for hashes in used):
                stale.append(dependent)
        return stale

    def doomed(self, upstream_id: str) -> list[Task]:
        """The task will not complete: the pending tasks that wait for it, directly or not (they can never run)."""
        doomed: list[Task] = []
        frontier = [upstream_id]
        while frontier:
            for waiting_id in sorted(self._waiting.pop(frontier.pop(), ())):
                waiting = self.live.get(waiting_id)
                if waiting is not None and waiting.state is State.PENDING and waiting not in doomed:
                    doomed.append(waiting)
                    frontier.append(waiting_id)
        return doomed

    def rerun(self, roots: list[Task]) -> dict[str, Task]:
        """What a re-run of these finished tasks runs again, by id: the roots, then their dependents that did not
        complete. Pending dependents wait for the re-run too; completed ones are re-checked when it completes."""
        again: dict[str, Task] = {t.id: t for t in roots}
        frontier = list(roots)
        while frontier:
            upstream = frontier.pop()
            for dependent in self.store.dependents(upstream.id):
                live = self.live.get(dependent.id)
                if live is not None and live.state is State.PENDING and upstream.id in live.deps:
                    self.wait(live.id, [upstream.id])
                if dependent.id in again or live is not None:
                    continue
                if dependent.state is State.COMPLETED:
                    self._recheck.setdefault(upstream.id, set()).add(dependent.id)
                else:
                    again[dependent.id] = dependent
                    frontier.append(dependent)
        return again

"""Retention: what the store forgets, so that history, payloads, results and logs do not grow without end.

Ended tasks go once they finished more than c.Hetflow.keep_days ago, and the oldest ended tasks go while the store's
blobs and logs hold more than c.Hetflow.keep_bytes, never a pinned task (`%remote pin`) nor one that a task kept
waits for (a rerun of that task reads it). With a task go its events and log; a blob goes once no task left names
it (payload, input, element, result). `%remote clean` (POST /hetflow/api/clean) runs it at once; the engine runs it at
its start and every RETENTION_EVERY seconds.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from .models import State
from .store import Store

RETENTION_EVERY = 3600.0
SIZE_STEP = 0.1  # of the ended tasks, the oldest tenth goes per round while the store is over keep_bytes
_ENDED = tuple(s.value for s in State if s.final)


@dataclass
class Forgotten:
    tasks: int = 0
    blobs: int = 0
    bytes: int = 0  # of blobs and logs

    def add(self, other: Forgotten) -> None:
        self.tasks, self.blobs, self.bytes = (
            self.tasks + other.tasks,
            self.blobs + other.blobs,
            self.bytes + other.bytes,
        )


def forget(store: Store, keep_days: float | None, keep_bytes: int, now: float | None = None) -> Forgotten:
    """Forget ended tasks that finished more than `keep_days` ago (None: none by age), then the oldest while the
    store holds more than `keep_bytes` (0: no limit)."""
    done = Forgotten()
    if keep_days is not None:
        cutoff = (time.time() if now is None else now) - keep_days * 86400
        done.add(_forget(store, "finished < ?", (cutoff,), None))
    while keep_bytes and store_bytes(store) > keep_bytes:
        ended = store.db.execute(
            f"SELECT COUNT(*) FROM tasks WHERE state IN ({_marks(_ENDED)}) AND NOT pinned", _ENDED
        ).fetchone()[0]
        step = _forget(store, "1", (), max(1, int(ended * SIZE_STEP)))
        if not step.tasks:
            break  # what is left is pinned, unfinished, or waited for
        done.add(step)
    return done


def store_bytes(store: Store) -> int:
    """What blobs and logs take: blob rows, blob files and log files."""
    rows = store.db.execute("SELECT COALESCE(SUM(LENGTH(data)), 0) FROM blobs").fetchone()[0]
    return int(rows) + sum(_size(p) for d in (store.blob_dir, store.log_dir) for p in d.rglob("*") if p.is_file())


def _forget(store: Store, where: str, args: tuple[object, ...], oldest: int | None) -> Forgotten:
    db = store.db
    with store.transaction():
        db.execute("CREATE TEMP TABLE IF NOT EXISTS gone (id TEXT PRIMARY KEY) WITHOUT ROWID")
        db.execute("DELETE FROM gone")
        db.execute(
            f"INSERT INTO gone SELECT id FROM tasks WHERE state IN ({_marks(_ENDED)}) AND NOT pinned AND {where}"
            + ("" if oldest is None else f" ORDER BY finished LIMIT {int(oldest)}"),
            (*_ENDED, *args),
        )
        while db.execute(  # a task that stays keeps what it waits for, and so on upstream
            "DELETE FROM gone WHERE id IN (SELECT dep FROM task_deps WHERE task_id NOT IN gone)"
        ).rowcount:
            pass
        ids = [row[0] for row in db.execute("SELECT id FROM gone")]
        db.execute("DELETE FROM events WHERE task_id IN gone")
        db.execute("DELETE FROM task_deps WHERE task_id IN gone")
        db.execute("DELETE FROM tasks WHERE id IN gone")
        freed = sum(_unlink(store.log_path(task_id)) for task_id in ids)
        blobs, blob_bytes = _unused_blobs(store) if ids else (0, 0)
    return Forgotten(len(ids), blobs, freed + blob_bytes)


def _unused_blobs(store: Store) -> tuple[int, int]:
    """Remove the blobs no task names; how many went, and their bytes."""
    db = store.db
    db.execute("CREATE TEMP TABLE IF NOT EXISTS used (digest TEXT PRIMARY KEY) WITHOUT ROWID")
    db.execute("DELETE FROM used")
    db.execute(
        "INSERT OR IGNORE INTO used SELECT payload_hash FROM tasks WHERE payload_hash IS NOT NULL "
        "UNION SELECT result_hash FROM tasks WHERE result_hash IS NOT NULL "
        "UNION SELECT value FROM tasks, json_each(tasks.inputs) "
        "UNION SELECT value FROM tasks, json_each(tasks.bound)"
    )
    count, size = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM blobs WHERE digest NOT IN used"
    ).fetchone()
    db.execute("DELETE FROM blobs WHERE digest NOT IN used")
    used = {row[0] for row in db.execute("SELECT digest FROM used")}
    for path in store.blob_dir.rglob("*"):
        if path.is_file() and path.name not in used:
            count, size = count + 1, size + _unlink(path)
    return int(count), int(size)


def _marks(values: tuple[str, ...]) -> str:
    return ", ".join("?" for _ in values)


def _size(path: Path) -> int:
    with contextlib.suppress(FileNotFoundError):
        return path.stat().st_size
    return 0


def _unlink(path: Path) -> int:
    """Remove a file; the bytes it held (0 when it was not there)."""
    size = _size(path)
    path.unlink(missing_ok=True)
    return size

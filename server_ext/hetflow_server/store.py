"""Where tasks, their event history, payloads, results and logs live: SQLite (WAL) plus content-addressed blobs.

A blob up to SMALL_BLOB bytes (most payloads and results: a cell's inputs, a circuit's expectation values) is a row
of the database, written in the transaction of the task that brings it: creating a file per payload and per result
costs a tight loop more than the rest of its bookkeeping. Larger blobs are files under blobs/.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any

from .models import State, Task
from .protocol import StoreError, sha256

_COLUMNS = [f.name for f in fields(Task)]

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS tasks (
    {", ".join(c + (" TEXT PRIMARY KEY" if c == "id" else "") for c in _COLUMNS)}
);
CREATE INDEX IF NOT EXISTS tasks_cache ON tasks (cache_key, state);
CREATE INDEX IF NOT EXISTS tasks_name ON tasks (name, created);
CREATE INDEX IF NOT EXISTS tasks_created ON tasks (created, id);
CREATE INDEX IF NOT EXISTS tasks_notebook ON tasks (notebook, created, id);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL,
    time REAL NOT NULL,
    state TEXT NOT NULL,
    message TEXT
);
CREATE INDEX IF NOT EXISTS events_task ON events (task_id, seq);
CREATE TABLE IF NOT EXISTS blobs (digest TEXT PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
"""
# Each commit writes every page it touched to the WAL: a rowid table with a text key is two b-trees (table and key)
# and AUTOINCREMENT a third page (sqlite_sequence); the blobs and events tables avoid both, so that a task's
# bookkeeping costs a tight loop fewer pages per commit. Stores made before keep their tables, which work the same.
DEPENDENTS = (
    "SELECT tasks.* FROM task_deps JOIN tasks ON tasks.id = task_deps.task_id WHERE task_deps.dep = ? "
    "ORDER BY tasks.created"
)
SMALL_BLOB = 64 * 1024
LOG_LIMIT = 10 * 2**20  # c.Hetflow.log_limit's default


def _sql_default(field: Field[Any]) -> str:
    if field.default_factory is not MISSING:
        return "'" + json.dumps(field.default_factory()).replace("'", "''") + "'"
    value = None if field.default is MISSING else field.default
    if value is None:
        return "NULL"
    return repr(value) if isinstance(value, (int, float)) else "'" + str(value).replace("'", "''") + "'"


class StoreLocked(StoreError):
    """Another engine owns the store."""


class StoreUnsafe(StoreError):
    """The store's directory or files belong to another user, who could change what this engine reads and runs."""


def _private(path: Path, is_dir: bool) -> None:
    """Make `path` this user's alone (0700, 0600), whether it is new or was there: an existing store_dir (scratch,
    a project directory) kept the mode it had, often 0755, and new files took the umask. Made when missing."""
    if is_dir:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    else:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    info = path.stat()
    if info.st_uid != os.geteuid():
        raise StoreUnsafe(
            f"the hetflow store's {path} belongs to uid {info.st_uid}, not to this user (uid {os.geteuid()}): "
            "they could change what this engine reads and runs. Give it a directory of its own: c.Hetflow.store_dir"
        )
    mode = 0o700 if is_dir else 0o600
    if stat.S_IMODE(info.st_mode) != mode:
        path.chmod(mode)


class Store:
    """One engine's persistent state. Only the engine's own thread touches the database."""

    def __init__(self, root: str | os.PathLike[str], log_limit: int = LOG_LIMIT):
        self.root = Path(root)
        self.log_limit = log_limit  # most bytes kept of a task's log (tasklogs.py); 0: no limit
        self.blob_dir = self.root / "blobs"
        self.log_dir = self.root / "logs"
        self.spool_dir = self.root / "spool"  # each executor's files in flight, in spool/NAME
        for directory in (self.root, self.blob_dir, self.log_dir, self.spool_dir):
            _private(directory, is_dir=True)
        self._lock_file: Any = None
        self._shards: set[str] = set()  # blob subdirectories known to exist
        database = self.root / "hetflow.db"
        for path in (database, *self.root.glob("hetflow.db-*")):  # SQLite gives its -wal and -shm the database's mode
            _private(path, is_dir=False)
        self.db = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self._add_missing_columns()
        self.db.execute("CREATE INDEX IF NOT EXISTS tasks_group ON tasks (group_id, element)")
        self._index_dependencies()

    def _index_dependencies(self) -> None:
        """Who waits for whom as rows with an index (a rerun looks up each task's dependents: a LIKE scan of every
        task's deps each time blocked the server 8.3 s for a 2,000-element foreach); an older store's are indexed
        once, from its tasks' deps."""
        if self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'task_deps'").fetchone():
            return
        with self.transaction():
            self.db.execute("CREATE TABLE task_deps (dep TEXT, task_id TEXT, PRIMARY KEY (dep, task_id)) WITHOUT ROWID")
            self.db.execute(
                "INSERT OR IGNORE INTO task_deps SELECT deps.value, tasks.id FROM tasks, json_each(tasks.deps) AS deps"
            )

    def _add_missing_columns(self) -> None:
        """A store written by an older hetflow gains the newer task fields, with their defaults."""
        present = {row[1] for row in self.db.execute("PRAGMA table_info(tasks)")}
        for field in fields(Task):
            if field.name not in present:
                self.db.execute(f"ALTER TABLE tasks ADD COLUMN {field.name} DEFAULT {_sql_default(field)}")

    # ------------------------------------------------------------------------------------ ownership

    def acquire(self) -> None:
        """Take the store for this engine; a second live engine on the same store is refused."""
        path = self.root / "engine.lock"
        _private(path, is_dir=False)
        lock = open(path, "a+")  # noqa: SIM115 - held for the engine's life
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            owner = lock.read().strip() or "another process"
            lock.close()
            raise StoreLocked(
                f"the hetflow store {self.root} is in use by {owner}; "
                "stop that engine, or give this one its own store with c.Hetflow.store_dir"
            ) from None
        lock.truncate(0)
        lock.write(f"pid {os.getpid()}")
        lock.flush()
        self._lock_file = lock

    def close(self) -> None:
        self.db.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # ------------------------------------------------------------------------------------ blobs

    def blob_path(self, digest: str) -> Path:
        """Where a large blob's file is."""
        return self.blob_dir / digest[:2] / digest

    def blob_file(self, digest: str) -> Path | None:
        """The blob's file, for a reader that takes a path (a small blob has none)."""
        path = self.blob_path(digest)
        return path if path.exists() else None

    def put_blob(self, data: bytes) -> str:
        digest = sha256(data)
        if len(data) <= SMALL_BLOB:
            self.db.execute("INSERT OR IGNORE INTO blobs (digest, data) VALUES (?, ?)", (digest, data))
            return digest
        path = self.blob_path(digest)
        if not path.exists():
            self._shard(path)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        return digest

    def _shard(self, path: Path) -> None:
        if path.parent.name not in self._shards:
            path.parent.mkdir(exist_ok=True, mode=0o700)
            self._shards.add(path.parent.name)

    def get_blob(self, digest: str) -> bytes:
        """The blob's bytes, only if they still hash to the digest the engine recorded."""
        row = self.db.execute("SELECT data FROM blobs WHERE digest = ?", (digest,)).fetchone()
        if row is not None:
            data = bytes(row[0])
        else:
            try:
                data = self.blob_path(digest).read_bytes()
            except FileNotFoundError:
                raise StoreError(f"blob {digest[:12]} is missing from {self.root}") from None
        if sha256(data) != digest:
            raise StoreError(f"blob {digest[:12]} does not match its hash; refusing to use it")
        return data

    def has_blob(self, digest: str) -> bool:
        found = self.db.execute("SELECT 1 FROM blobs WHERE digest = ?", (digest,)).fetchone()
        return found is not None or self.blob_path(digest).exists()

    def log_path(self, task_id: str) -> Path:
        return self.log_dir / f"{task_id}.log"

    # ------------------------------------------------------------------------------------ tasks

    def insert_tasks(self, tasks: list[tuple[Task, list[State], str | None]], blobs: Iterable[bytes] = ()) -> None:
        """New tasks, each with its first state events (the last one with a message), and the blobs they bring
        (payload, elements), in one transaction."""
        marks = ", ".join("?" for _ in _COLUMNS)
        now = time.time()
        with self.transaction():
            for data in blobs:
                self.put_blob(data)
            self.db.executemany(
                f"INSERT INTO tasks ({', '.join(_COLUMNS)}) VALUES ({marks})",
                [[row[c] for c in _COLUMNS] for row in (task.to_row() for task, _, _ in tasks)],
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO task_deps (dep, task_id) VALUES (?, ?)",
                [(dep, task.id) for task, _, _ in tasks for dep in task.deps],
            )
            self.db.executemany(
                "INSERT INTO events (task_id, time, state, message) VALUES (?, ?, ?, ?)",
                [
                    (task.id, now, state.value, message if n == len(states) - 1 else None)
                    for task, states, message in tasks
                    for n, state in enumerate(states)
                ],
            )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One commit for everything inside (a transaction already open takes it in)."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def update_task(self, task: Task, *names: str) -> None:
        sets = ", ".join(f"{n} = ?" for n in names)
        self.db.execute(f"UPDATE tasks SET {sets} WHERE id = ?", [task.column(n) for n in names] + [task.id])

    def transition_many(self, tasks: list[Task], state: State, message: str | None = None, *also: str) -> None:
        """Persist the same state change of many tasks (and any fields changed with it) with their events, in one
        transaction."""
        names = ("state", *also)
        sets = ", ".join(f"{n} = ?" for n in names)
        now = time.time()
        with self.transaction():
            rows = []
            for task in tasks:
                task.state = state
                rows.append([task.column(n) for n in names] + [task.id])
            self.db.executemany(f"UPDATE tasks SET {sets} WHERE id = ?", rows)
            self.db.executemany(
                "INSERT INTO events (task_id, time, state, message) VALUES (?, ?, ?, ?)",
                [(task.id, now, state.value, message) for task in tasks],
            )

    def get_task(self, task_id: str) -> Task | None:
        row = self.db.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return None if row is None else Task.from_row(dict(row))

    def find_tasks(self, **where: Any) -> list[Task]:
        """task_rows' tasks."""
        return [Task.from_row(r) for r in self.task_rows(**where)]

    def task_rows(
        self,
        *,
        name: str | None = None,
        notebook: str | None = None,
        states: list[State] | None = None,
        limit: int | None = None,
        before: str | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first; `before` (a task id) starts after that task, as the next page of a list that ended there.
        The rows as the store holds them: the API reads a page at once and decodes it a part at a time."""
        where, args = [], []
        for column, value in (("name", name), ("notebook", notebook)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if states:
            where.append(f"state IN ({', '.join('?' for _ in states)})")
            args.extend(s.value for s in states)
        if before is not None:
            where.append("(created, id) < (SELECT created, id FROM tasks WHERE id = ?)")
            args.append(before)
        sql = "SELECT * FROM tasks" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created DESC, id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [dict(r) for r in self.db.execute(sql, args)]

    def dependents(self, task_id: str) -> list[Task]:
        """Tasks that wait for this one (its data or after=)."""
        rows = self.db.execute(DEPENDENTS, (task_id,))
        return [Task.from_row(dict(r)) for r in rows]

    def group(self, group_id: str) -> list[Task]:
        """The elements of one foreach, in element order."""
        rows = self.db.execute("SELECT * FROM tasks WHERE group_id = ? ORDER BY element", (group_id,))
        return [Task.from_row(dict(r)) for r in rows]

    def find_cached(self, cache_key: str) -> Task | None:
        row = self.db.execute(
            "SELECT * FROM tasks WHERE cache_key = ? AND state = ? ORDER BY finished DESC LIMIT 1",
            (cache_key, State.COMPLETED.value),
        ).fetchone()
        if row is None:
            return None
        task = Task.from_row(dict(row))
        return task if task.result_hash and self.has_blob(task.result_hash) else None

    def events(self, task_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM events WHERE task_id = ? ORDER BY seq", (task_id,))
        return [dict(r) for r in rows]

    def add_event(self, task: Task, message: str) -> None:
        """A note in a task's history that is not a state change (a cache hit, a retry plan)."""
        self.db.execute(
            "INSERT INTO events (task_id, time, state, message) VALUES (?, ?, ?, ?)",
            (task.id, time.time(), task.state.value, message),
        )

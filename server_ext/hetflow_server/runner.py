"""The program that runs a task wherever it goes. Stdlib + cloudpickle only: it is shipped as one file.

A payload is a pickled dict: the cell's code and source, the input values (each a cloudpickle), the names to bring
back. A job is a payload with the inputs given per task: a foreach element, and upstream tasks' outputs (by the
hash of the upstream result, read from a path or handed over as bytes). The runner executes the code in a fresh
`__main__` namespace with stdout/stderr teed to a log, and answers with a result pickle (outputs, trailing value,
deleted names) or an error description that needs no unpickling.

    python -m hetflow_server.runner serve CMD_FD EVENT_FD SPOOL [PROVIDER]  # a warm worker fed tasks over a pipe
    python runner.py pack PACK LIMIT MOST KEEP_ALIVE              # tasks from PACK/queue, each DIR/task.job (remote)
    python runner.py follow INLINE                                # watch task directories for the engine (remote)
    python runner.py blobs DIR LIMIT AGE [+HASH:SIZE|=HASH ...]   # blobs wanted, in use; evict old ones (remote)
    python runner.py s3 MANIFEST_URI                              # one task from and to S3 (a container)
    python runner.py pod DIR                                      # DIR/job-INDEX, outcome in the log (a pod)
    python runner.py versions                                     # "PY_MAJOR.PY_MINOR CLOUDPICKLE_VERSION"

A PROVIDER is a module with `warm()` and `provide(context) -> {name: value}`: a worker imports it once and hands
the code what the job's context asks for (a quantum device, kept warm between tasks).
"""

from __future__ import annotations

import ast
import base64
import builtins
import contextlib
import ctypes
import hashlib
import io
import json
import linecache
import os
import pickle
import select
import signal
import struct
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from types import CodeType
from typing import Any

try:
    import cloudpickle
except ImportError:  # pragma: no cover - reported to the engine as the task's error
    cloudpickle = None

HEADER = struct.Struct(">Q")  # the length of the pickle that follows, on a pipe
MASK = "********"  # what a secret value is shown as
FLUSH_INTERVAL = 0.05


def cloudpickle_version() -> str:
    return cloudpickle.__version__ if cloudpickle else "missing"


def _type_name(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


class TaskFailure(Exception):
    """A failure to describe to the user, carrying the pieces the kernel shows."""

    def __init__(self, kind: str, message: str, traceback_text: str = ""):
        super().__init__(message)
        self.info = {"type": kind, "message": message, "traceback": traceback_text}


def _describe(exc: BaseException, filename: str) -> dict[str, str]:
    """The exception as text, its traceback starting at the cell's own frame."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))
    return {"type": _type_name(exc), "message": str(exc), "traceback": text}


def _check_versions(spec: dict[str, Any]) -> None:
    if cloudpickle is None:
        raise TaskFailure(
            "EnvironmentError", f"cloudpickle is not installed for {sys.executable}; pip install cloudpickle"
        )
    wanted = str(spec.get("cloudpickle", ""))
    if wanted.split(".")[0] != cloudpickle.__version__.split(".")[0]:
        raise TaskFailure(
            "EnvironmentError",
            f"the task was pickled with cloudpickle {wanted}, but {sys.executable} here has cloudpickle "
            f"{cloudpickle.__version__}: the major versions must match; install cloudpickle=="
            f"{wanted.split('.')[0]}.* where tasks run",
        )


def _pack_result(spec: dict[str, Any], namespace: dict[str, Any], value: Any, stderr: io.TextIOBase) -> bytes:
    """Pickle what goes back. An automatic output that cannot travel (an open file, a lock) is left behind with
    a warning rather than failing a long task at its very end; an output named in outputs= must come back."""
    explicit = bool(spec.get("outputs_explicit"))
    unbound = [name for name in spec["outputs"] if name not in namespace]
    if explicit and unbound:
        raise TaskFailure(
            "OutputMissing", f"outputs={','.join(spec['outputs'])}: the cell never bound {', '.join(unbound)}"
        )
    outputs = {name: namespace[name] for name in spec["outputs"] if name in namespace}
    deleted = [name for name in spec.get("deleted", ()) if name not in namespace]

    def leave(name: str, obj: Any, problem: str) -> None:
        nonlocal value
        if name not in outputs:  # the cell's value: it is shown, not used, so it is not worth failing the task
            print(f"hetflow: the cell's value ({_type_name(obj)}) {problem}; it is not shown", file=stderr)
            value = None
            return
        problem = f"output {name!r} ({_type_name(obj)}) {problem}"
        if explicit:
            raise TaskFailure("PicklingError", f"{problem}; choose other outputs=...") from None
        print(f"hetflow: {problem}; it stays behind (name it in outputs=... to make this an error)", file=stderr)
        del outputs[name]

    # an open file is the machine's own: cloudpickle would send one opened for reading as a StringIO of its
    # contents, a copy that claims to be the file
    for name, obj in [*outputs.items(), ("", value)]:
        if isinstance(obj, io.IOBase) and not isinstance(obj, (io.StringIO, io.BytesIO)):
            leave(name, obj, "is an open file there")
    with contextlib.suppress(Exception):  # the common case: one pickling of everything
        return cloudpickle.dumps({"outputs": outputs, "value": value, "deleted": deleted}, protocol=5)
    for name, obj in [*outputs.items(), ("", value)]:
        try:
            cloudpickle.dumps(obj, protocol=5)
        except Exception as err:
            leave(name, obj, f"cannot be pickled: {err}")
    return cloudpickle.dumps({"outputs": outputs, "value": value, "deleted": deleted}, protocol=5)


def _resolve_inputs(job: dict[str, Any], namespace: dict[str, Any], results: dict[str, Any], python: str) -> None:
    """The inputs a job brings besides its payload: per-task values, and outputs of upstream tasks (each upstream
    result read once per pack, and only if it hashes to what the engine recorded)."""
    for name, blob in job.get("bound", {}).items():
        namespace[name] = _unpickle_input(name, blob if isinstance(blob, bytes) else _blob(name, blob), python)
    for name, ref in job.get("refs", {}).items():
        if "each" in ref:  # a foreach's elements, in order: a list
            namespace[name] = [_upstream_value(name, each, results) for each in ref["each"]]
        else:
            namespace[name] = _upstream_value(name, ref, results)


def _blob(name: str, ref: dict[str, Any]) -> bytes:
    """A value sent apart from the job (a content-addressed blob in the executor's blob store), checked against
    its hash; a blob that does not match is removed, so that the next run of the task sends it again."""
    path = ref["path"]
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise TaskFailure(
            "BlobMissing",
            f"{name!r}: the blob {path} was removed before the task ran (a scratch purge?); run the task again "
            "and the engine sends it again",
        ) from None
    if hashlib.sha256(data).hexdigest() != ref["hash"]:
        with contextlib.suppress(OSError):
            os.remove(path)
        raise TaskFailure(
            "IntegrityError",
            f"{name!r}: the blob {path} does not match its hash (tampered with or corrupt): it was refused and "
            "removed; run the task again and the engine sends it again",
        )
    return data


def _upstream_value(name: str, ref: dict[str, Any], results: dict[str, Any]) -> Any:
    digest = ref["hash"]
    if digest not in results:
        if ref.get("blob"):  # in the executor's blob store
            source = _blob(f"the upstream result for {name}", ref)
        elif "path" in ref:
            with open(ref["path"], "rb") as fh:
                source = fh.read()
        else:
            source = ref["data"]
        if hashlib.sha256(source).hexdigest() != digest:
            raise TaskFailure("IntegrityError", f"the upstream result for {name!r} does not match its hash")
        results[digest] = source  # checked bytes, read once per pack; unpickled per job (no shared objects)
    outputs = cloudpickle.loads(results[digest])["outputs"]
    if ref["output"] not in outputs:
        raise TaskFailure("MissingInput", f"the upstream task did not produce {ref['output']!r} for {name!r}")
    return outputs[ref["output"]]


def _unpickle_input(name: str, blob: bytes, python: str) -> Any:
    try:
        return cloudpickle.loads(blob)
    except Exception as err:
        here = f"{sys.version_info[0]}.{sys.version_info[1]}"
        why = (
            f"the kernel runs Python {python}, {sys.executable} here is {here}: functions travel as bytecode, so "
            f"tasks must run on Python {python}"
            if python and python != here
            else "is the module that defines it installed where the task runs?"
        )
        raise TaskFailure(
            "UnpicklingError", f"input {name!r} could not be unpickled here: {type(err).__name__}: {err} ({why})"
        ) from None


Provide = Callable[[dict[str, Any]], dict[str, Any]]


_COMPILED: dict[tuple[str, str, int, bool], tuple[CodeType, CodeType | None]] = {}


def _compiled(code: str, filename: str, line_offset: int, display: bool) -> tuple[CodeType, CodeType | None]:
    """The code's body and its trailing expression (when the cell shows it), compiled once per worker: a loop's
    thousand calls of one function run the same few lines. (A dict, not functools.lru_cache: this module travels
    by value to Dask workers, and a cache object would be pickled by reference to a hetflow they lack.)"""
    key = (code, filename, line_offset, display)
    if key not in _COMPILED:
        if len(_COMPILED) >= 64:
            _COMPILED.clear()
        _COMPILED[key] = _compile(*key)
    return _COMPILED[key]


def _compile(code: str, filename: str, line_offset: int, display: bool) -> tuple[CodeType, CodeType | None]:
    tree = ast.parse(code, filename)
    ast.increment_lineno(tree, line_offset)
    last = tree.body[-1] if display and tree.body else None
    if not isinstance(last, ast.Expr):
        return compile(tree, filename, "exec"), None
    tree.body.pop()
    value = compile(ast.Expression(last.value), filename, "eval")
    return compile(tree, filename, "exec"), value


def execute(
    job: dict[str, Any],
    stdout: io.TextIOBase,
    stderr: io.TextIOBase,
    results: dict[str, Any] | None = None,
    provide: Provide | None = None,
) -> tuple[bytes | None, dict | None]:
    """Run one job (a payload and its per-task inputs); return (result pickle, None) or (None, error). Names the
    provider hands over for the job's context (the executor's device) win over inputs of the same name."""
    spec: dict[str, Any] = {}
    try:
        payload = job["payload"]
        spec = pickle.loads(payload if isinstance(payload, bytes) else _blob("the payload", payload))
        _check_versions(spec)
        namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
        python = str(spec.get("python", ""))  # the kernel's major.minor
        for name, blob in spec["inputs"].items():
            namespace[name] = _unpickle_input(name, blob, python)
        for name, ref in job.get("inputs", {}).items():  # the payload's large inputs, sent apart as blobs
            namespace[name] = _unpickle_input(name, _blob(name, ref), python)
        _resolve_inputs(job, namespace, {} if results is None else results, python)
        if job.get("context"):
            if provide is None:
                raise TaskFailure("EnvironmentError", f"nothing here provides {sorted(job['context'])}")
            namespace.update(provide(job["context"]))
        filename = spec["filename"]
        source = spec["source"]
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        body, last = _compiled(spec["code"], filename, spec.get("line_offset", 0), bool(spec.get("display")))
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = stdout, stderr
        try:
            exec(body, namespace)
            value = eval(last, namespace) if last else None
        finally:
            sys.stdout, sys.stderr = saved
        return _pack_result(spec, namespace, value, stderr), None
    except TaskFailure as failure:
        return None, failure.info
    except BaseException as exc:  # the user's code may raise anything, SystemExit included
        return None, _describe(exc, spec.get("filename", "<cell>"))


# ------------------------------------------------------------------------------------------- framing


def write_frame(fd: int, message: Any) -> None:
    _write_all(fd, frame(message))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_frame(fd: int) -> Any:
    size = HEADER.unpack(_read_exactly(fd, HEADER.size))[0]
    return pickle.loads(_read_exactly(fd, size))


def _read_exactly(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def mask(text: str, secrets: list[str]) -> str:
    """`text` with each of these values (longest first) shown as MASK."""
    for value in secrets:
        if value in text:
            text = text.replace(value, MASK)
    return text


class StreamMasker:
    """Masks a stream that arrives in pieces: a secret split across two pieces is still caught, by holding back
    the end of a piece that could begin a secret until the next piece (or the end) shows what follows."""

    def __init__(self, secrets: Callable[[], list[str]]):
        self.secrets = secrets  # read at each piece: a credential added meanwhile is masked from then on
        self._held = ""

    def feed(self, text: str) -> str:
        values = self.secrets()
        text = mask(self._held + text, values)
        hold = 0
        for value in values:
            for size in range(min(len(value) - 1, len(text)), hold, -1):
                if text.endswith(value[:size]):
                    hold = size
                    break
        self._held = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]

    def close(self) -> str:
        held, self._held = self._held, ""
        return held


class Channel:
    """The worker's line to the engine. Once the engine is gone (its pipe closed), sends fail quietly and the
    task goes on: what it prints is kept in the spool for the next engine, which re-attaches."""

    def __init__(self, fd: int):
        self.fd, self.open, self._lock = fd, True, threading.Lock()

    def send(self, message: dict[str, Any]) -> bool:
        return self.send_frame(frame(message))

    def send_frame(self, data: bytes) -> bool:
        with self._lock:
            if self.open:
                try:
                    _write_all(self.fd, data)
                except OSError:
                    self.open = False
            return self.open


class Tee(io.TextIOBase):
    """Collects what the task prints on one stream and hands it on in batches (by the pump, and at the end)."""

    def __init__(self, name: str, emit: Callable[[str, str], None], pump: Pump):
        self.name, self._emit, self._pump = name, emit, pump
        self._pending: list[str] = []

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._pump.lock:
            self._pending.append(text)
            self._pump.wake()
        return len(text)

    def flush(self) -> None:
        with self._pump.lock:
            text, self._pending = "".join(self._pending), []
        if text:
            self._emit(self.name, text)


class Pump:
    """Flushes a task's tees every FLUSH_INTERVAL, from a thread started at the task's first write: a task that
    prints nothing (a circuit evaluation in a tight loop) pays for no thread."""

    def __init__(self, emit: Callable[[str, str], None]):
        self.lock = threading.Lock()
        self.tees = [Tee("stdout", emit, self), Tee("stderr", emit, self)]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        """Called with the lock held."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL):
            for tee in self.tees:
                tee.flush()

    def finish(self) -> None:
        self._stop.set()
        with self.lock:
            thread = self._thread
        if thread is not None:
            thread.join()
        for tee in self.tees:
            tee.flush()


def _write_atomically(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def run_teed(
    job: dict[str, Any],
    emit: Callable[[str, str], None],
    results: dict[str, Any] | None = None,
    provide: Provide | None = None,
) -> tuple[bytes | None, dict | None]:
    """Run one job, what it prints handed to `emit` in batches (every FLUSH_INTERVAL, and at the end)."""
    pump = Pump(emit)
    try:
        return execute(job, pump.tees[0], pump.tees[1], results, provide)
    finally:
        pump.finish()


def done_record(result: bytes | None, error: dict | None, kept: bool = False) -> bytes:
    """The done file's JSON: the error, or the hash the result must have (the engine checks it), and, when the
    result stays in the executor's blob store, its size (`kept`)."""
    said = _done(result, error)
    return json.dumps({**said, "kept": len(result or b"")} if kept else said).encode()


def _done(result: bytes | None, error: dict | None) -> dict[str, Any]:
    return {"error": error, "sha256": hashlib.sha256(result).hexdigest() if result is not None else None}


def _keep(job: dict[str, Any], path: str, result: bytes) -> bool:
    """A result the job says to keep (`keep`: {"dir", "least"}), linked into the blob store under its hash."""
    keep = job.get("keep")
    if not keep or len(result) < keep["least"]:
        return False
    os.makedirs(keep["dir"], mode=0o700, exist_ok=True)
    target = os.path.join(keep["dir"], hashlib.sha256(result).hexdigest())
    try:
        os.link(path, target)
    except FileExistsError:  # the same result, computed before
        pass
    except OSError:  # no hard links there: a copy, whole or not at all
        _write_atomically(target, result)
    return True


def run_to_files(
    job: dict[str, Any],
    base: str,
    emit: Callable[[str, str], None],
    results: dict[str, Any] | None = None,
    provide: Provide | None = None,
) -> dict | None:
    """Run one task; leave the outcome as `BASE.result` (the result pickle) and `BASE.done` (JSON {"error": ...,
    "sha256": ...}: the engine never unpickles what a remote side says), written atomically, the done file last."""
    result, error = run_teed(job, emit, results, provide)
    kept = False
    if result is not None:  # complete once the done file exists
        with open(base + ".result", "wb") as fh:
            fh.write(result)
        kept = _keep(job, base + ".result", result)
    _write_atomically(base + ".done", done_record(result, error, kept))
    return error


def append_to(path: str) -> Callable[[str, str], None]:
    def emit(stream: str, text: str) -> None:
        with open(path, "a", encoding="utf-8", errors="replace") as log:
            log.write(text)

    return emit


SPOOL_INLINE = 1 << 20  # a warm worker's result up to this size travels in its done message; larger ones in a file


def frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=5)
    return HEADER.pack(len(data)) + data


def frames(data: bytes) -> list[Any]:
    """The whole frames in `data` (a journal a killed worker may have left mid-frame: the torn tail is not one)."""
    found, at = [], 0
    while at + HEADER.size <= len(data):
        end = at + HEADER.size + HEADER.unpack_from(data, at)[0]
        if end > len(data):
            break
        found.append(pickle.loads(data[at + HEADER.size : end]))
        at = end
    return found


class Journal:
    """A warm worker's outcomes, appended before each is sent (one write, no file per task): an engine that dies
    before it stores one finds it here on restart. The engine empties it once it has stored them all."""

    def __init__(self, spool: str):
        self.path = journal_path(spool, os.getpid())
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)

    def write(self, data: bytes) -> None:
        _write_all(self.fd, data)


def journal_path(spool: str, pid: int) -> str:
    return os.path.join(spool, f"worker-{pid}.journal")


def run_in_spool(
    channel: Channel,
    journal: Journal,
    job: dict[str, Any],
    spool: str,
    results: dict[str, Any],
    provide: Provide | None,
    secrets: list[str],
) -> None:
    """A warm worker's task: output goes to the engine, or to `TASK.log` once no engine listens; the outcome (the
    done record with the result, or with `TASK.result` written first when it is large) is journaled before it is
    sent, so that an engine that died meanwhile finds it on restart. What lands in the spool (that log, the
    journal's error) is masked here with the engine's `secrets`: no engine is there to mask it first."""
    task_id = job["task"]
    base = os.path.join(spool, task_id)
    to_file = append_to(base + ".log")
    masker = StreamMasker(lambda: secrets)

    def emit(stream: str, text: str) -> None:
        if not channel.send({"op": "log", "task": task_id, "stream": stream, "text": text}):
            to_file(stream, masker.feed(text))

    result, error = run_teed(job, emit, results, provide)
    if rest := masker.close():
        to_file("stdout", rest)
    if error is not None:
        error = {key: mask(value, secrets) if isinstance(value, str) else value for key, value in error.items()}
    inline = result is None or len(result) <= SPOOL_INLINE
    if not inline:
        with open(base + ".result", "wb") as fh:
            fh.write(result or b"")
    done = frame({"op": "done", "task": task_id, **_done(result, error), "result": result if inline else None})
    journal.write(done)
    channel.send_frame(done)


def run_directory(directory: str) -> None:
    """A task shipped to another machine: `DIR/task.job` (the runner's job, pickled) in; `DIR/task.log`,
    `.result`, `.done` out."""
    base = os.path.join(directory, "task")
    with open(base + ".job", "rb") as fh:
        job = pickle.load(fh)
    run_to_files(job, base, append_to(base + ".log"))


# ------------------------------------------------------------------------------------------- a pack on a host

PACK_TICK = 0.02  # seconds between two looks at the queue, the running tasks and their cancel files


def _element() -> str:
    """What the engine calls the process running a pack: the Slurm array element, the Slurm job, or the pid."""
    array, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and index:
        return f"{array}_{index}"
    return os.environ.get("SLURM_JOB_ID") or str(os.getpid())


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _claim(pack: str, deadline: float, passed: set[str]) -> dict[str, Any] | None:
    """The next task of the pack's queue (or, once it is closed, of what it held), taken by an atomic rename (other
    elements take from the same queue); an entry still being written (`.part`) is not ready, and a task whose
    timeout does not fit before this element's deadline is left to another (and noted in `passed`)."""
    queue = os.path.join(pack, "queue")
    if not os.path.isdir(queue):
        queue += ".closed"
    for name in sorted(set(os.listdir(queue)) - passed):
        if name.endswith(".part"):
            continue
        claimed = os.path.join(pack, "claimed", name)
        try:
            os.rename(os.path.join(queue, name), claimed)
        except FileNotFoundError:  # another element took it, or the engine cancelled it
            continue
        with open(claimed) as fh:
            entry = json.load(fh)
        left = deadline - time.monotonic()
        if entry.get("timeout") and entry["timeout"] > left:
            os.rename(claimed, os.path.join(queue, name))
            passed.add(name)
            print(
                f"hetflow: the task in {entry['dir']} was not started here: its timeout={entry['timeout']:g} s does "
                f"not fit in the {max(left, 0):.0f} s left of this allocation's time limit",
                flush=True,
            )
            continue
        return entry
    return None


def _start(directory: str, element: str) -> int:
    """The task in a child process of its own (its own process group, so that a cancel stops what it started);
    `task.started` says where: `ELEMENT@NODE`."""
    with open(os.path.join(directory, "task.started"), "w") as fh:
        fh.write(f"{element}@{os.environ.get('SLURMD_NODENAME') or os.uname().nodename}")  # Slurm's name for it
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.setpgid(0, 0)
            run_directory(directory)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    return pid


def _children() -> dict[int, list[int]]:
    """Every process's children, by parent pid, from /proc (Linux); empty where there is no /proc."""
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if name.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    with open(f"/proc/{name}/stat", "rb") as fh:
                        ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])  # the name, in parentheses, may hold ")"
                    children.setdefault(ppid, []).append(int(name))
    return children


def kill_tree(pid: int) -> None:
    """SIGKILL `pid`, its process group and every process under it, whatever session or group each made for itself
    (a `setsid` or start_new_session child escapes a signal to the group). Each round stops what it finds first,
    so nothing forks out of reach meanwhile, and the whole tree goes at once: killed one by one, the children of a
    dead parent would already belong to init. What left the tree on purpose (a daemon's double fork) is not found."""
    stopped: list[int] = []
    found = [pid]
    while found:
        for each in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(each, signal.SIGSTOP)
        stopped += found
        known, children, found = set(stopped), _children(), []
        for parent in stopped:
            found += [child for child in children.get(parent, []) if child not in known and child not in found]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    for each in stopped:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(each, signal.SIGKILL)


def _ended(directory: str, status: int) -> None:
    """A child that exited without leaving its outcome (killed, out of memory): its done file says how."""
    base = os.path.join(directory, "task")
    if not os.path.isdir(directory) or os.path.exists(base + ".done") or os.path.exists(base + ".cancel"):
        return  # its outcome is there (or already collected and removed), or it was stopped
    how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit code {os.WEXITSTATUS(status)}"
    error = {"type": "WorkerDied", "message": f"the task's process on {os.uname().nodename} ended with {how}"}
    with contextlib.suppress(FileNotFoundError):  # its outcome was collected and its directory removed meanwhile
        _write_atomically(base + ".done", done_record(None, error))


def run_queue(pack: str, limit: float = 0.0, most: int = 0, keep_alive: float = 0.0) -> None:
    """A pack: run tasks from `PACK/queue` (each entry names a task directory) until it is empty, or `most` ran
    (0: no limit), in parallel up to the CPUs this process may use, each in a child process, stopping one whose
    `DIR/task.cancel` appears. `limit` is the allocation's time limit in seconds (0: none): a task that declares a
    longer timeout than what is left is left to another element.

    A warm allocation (`keep_alive` seconds): once idle, wait that long for more tasks in the queue (never into the
    last tenth of the time limit). Then close the queue (rename it to `queue.closed`: the engine's next tasks fail
    to arrive there and go to a new launch), run what arrived meanwhile, and exit."""
    element = _element()
    parallel = int(os.environ.get("SLURM_CPUS_ON_NODE") or _cpus())  # what Slurm gave this element, else this host's
    left = most or float("inf")
    started = time.monotonic()
    deadline = started + limit if limit else float("inf")
    idle_until = deadline - limit / 10 if limit else float("inf")
    running: dict[int, str] = {}  # pid -> task directory
    exits: dict[int, int] = {}  # pid -> a descriptor readable once it exited (Linux pidfd), to wake at once
    passed: set[str] = set()  # queue entries whose timeouts do not fit here
    idle_since = started
    signal.signal(signal.SIGTERM, lambda signum, _: _stop_pack(running, signum))
    while True:
        for pid, directory in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                del running[pid]
                with contextlib.suppress(KeyError, OSError):
                    os.close(exits.pop(pid))
                _ended(directory, status)
            elif os.path.exists(os.path.join(directory, "task.cancel")):
                kill_tree(pid)
        entry = _claim(pack, deadline, passed) if len(running) < min(parallel, left) else None
        if entry is not None:
            if not os.path.exists(os.path.join(entry["dir"], "task.cancel")):
                pid = _start(entry["dir"], element)
                running[pid] = entry["dir"]
                with contextlib.suppress(AttributeError, OSError):  # no pidfd here: the tick alone wakes it
                    exits[pid] = os.pidfd_open(pid)
                left -= 1
            continue
        now = time.monotonic()
        if running:
            idle_since = now
        elif left <= 0 or not os.path.isdir(os.path.join(pack, "queue")):
            return
        elif now - idle_since >= keep_alive or now >= idle_until:
            with contextlib.suppress(FileNotFoundError):  # another element closed it first
                os.rename(os.path.join(pack, "queue"), os.path.join(pack, "queue.closed"))
            continue  # what arrived before the close still runs
        _wait(list(exits.values()), PACK_TICK)


def _stop_pack(running: dict[int, str], signum: int) -> None:
    """SIGTERM (the SSH executor's stop, scancel): the tasks and what they started first, which a signal to the
    pack's group does not reach, then the pack."""
    for pid in list(running):
        kill_tree(pid)
    raise SystemExit(128 + signum)


def _wait(exits: list[int], tick: float) -> None:
    """Up to `tick` seconds, less once one of these children exits: a short task's end starts the next at once."""
    if exits:
        select.select(exits, [], [], tick)
    else:
        time.sleep(tick)


FOLLOW_TICK = 0.01  # seconds between two looks at few followed tasks (more tasks: longer, up to 0.5 s)


def _read(path: str, offset: int = 0) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read()
    except FileNotFoundError:
        return None


def follow_tasks(inline: int) -> None:
    """Beside the batch system, for the engine over one long-lived channel: watch the task directories named on
    stdin (`watch TASK BASE LOG_OFFSET`, `forget TASK`) and print what changes, as JSON lines: a task's start (its
    element), new log bytes (base64, with their offset) and its outcome (the done file, and a result up to `inline`
    bytes). Ends when stdin closes (the engine went away)."""
    watched: dict[str, dict[str, Any]] = {}
    buffered = b""

    def emit(**event: Any) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    while True:
        tick = min(0.5, FOLLOW_TICK * max(1, len(watched) // 20))
        if select.select([0], [], [], tick)[0]:
            data = os.read(0, 1 << 16)
            if not data:
                return
            *lines, buffered = (buffered + data).split(b"\n")
            for words in (line.decode().split() for line in lines):
                if len(words) == 4 and words[0] == "watch":
                    watched[words[1]] = {"base": words[2], "offset": int(words[3]), "started": False}
                elif len(words) == 2 and words[0] == "forget":
                    watched.pop(words[1], None)
        for task, seen in list(watched.items()):
            base = seen["base"]
            done = _read(base + ".done")  # first: the log it follows is then complete
            element = None if seen["started"] else _read(base + ".started")
            if element:
                seen["started"] = True
                emit(task=task, started=element.decode())
            log = _read(base + ".log", seen["offset"])
            if log:
                emit(task=task, log=base64.b64encode(log).decode(), offset=seen["offset"])
                seen["offset"] += len(log)
            if done is not None:
                size = os.path.getsize(base + ".result") if os.path.exists(base + ".result") else -1
                result = _read(base + ".result") if 0 <= size <= inline else None
                emit(task=task, done=done.decode(), result=base64.b64encode(result).decode() if result else None)
                del watched[task]


def _provider(name: str) -> Provide:
    """The provider module's `provide`, warmed; one that cannot start fails each task with the reason, rather than
    the worker dying and being restarted for ever."""
    import importlib

    try:
        module = importlib.import_module(name)
        module.warm()
        return module.provide
    except Exception as err:
        problem = f"{name} could not start here ({sys.executable}): {type(err).__name__}: {err}"
        if isinstance(err, ImportError):
            problem += " (install what it needs into the engine's environment, e.g. pip install 'hetflow[braket]')"

        def broken(context: dict[str, Any]) -> dict[str, Any]:
            raise TaskFailure("EnvironmentError", problem)

        return broken


def serve(cmd_fd: int, event_fd: int, spool: str, provider: str = "") -> None:
    """Warm worker loop: a pack of jobs at a time, run one after the other, fed over a pipe; exits when the engine
    closes it. A provider is imported and warmed before the worker says it is ready.

    Between two jobs the worker looks (without waiting) for a request to give jobs back, {"take": [ids]}, which the
    engine sends when another worker is idle: the ones not begun go back, and the worker says which ({"op":
    "given"}), so that no job both runs here and is handed on."""
    channel = Channel(event_fd)
    provide = _provider(provider) if provider else None
    journal = Journal(spool)
    channel.send({"op": "ready", "pid": os.getpid(), "cloudpickle": cloudpickle_version()})
    while True:
        try:
            pack = read_frame(cmd_fd)
        except EOFError:
            return
        if "take" in pack:  # it came after the pack it asked about had ended
            channel.send({"op": "given", "tasks": []})
            continue
        results: dict[str, Any] = {}  # upstream results read once per pack
        jobs, begun = list(pack["jobs"]), False
        while jobs:
            if begun and select.select([cmd_fd], [], [], 0)[0]:  # the first job is never given: it begins now
                try:
                    asked = set(read_frame(cmd_fd)["take"])
                except EOFError:
                    return
                channel.send({"op": "given", "tasks": [job["task"] for job in jobs if job["task"] in asked]})
                jobs = [job for job in jobs if job["task"] not in asked]
                continue
            job, begun = jobs.pop(0), True
            if not channel.send({"op": "started", "task": job["task"]}):
                break  # the engine is gone: the pack's other jobs are still queued in its store
            run_in_spool(channel, journal, job, spool, results, provide, pack["secrets"])


# ------------------------------------------------------------------------------------------- the blob store


def blob_store(
    directory: str, limit: int, age: float, wanted: dict[str, int], in_use: list[str]
) -> tuple[list[str], int, int]:
    """The executor's blob store (`DIR/SHA256`, written as `SHA256.part` and renamed): which of the wanted blobs
    (hash -> size) are there, each marked used now; then, to make room for the others, the least recently used
    evicted beyond `limit` bytes (-1: no limit), and those unused for `age` seconds (-1: kept), never a wanted or
    in-use one. Returns (present, evicted, bytes freed)."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    present = []
    for digest in wanted:
        with contextlib.suppress(FileNotFoundError):
            os.utime(os.path.join(directory, digest))
            present.append(digest)
    coming = sum(size for digest, size in wanted.items() if digest not in present)
    keep, now = set(wanted) | set(in_use), time.time()
    found = []
    for name in os.listdir(directory):
        with contextlib.suppress(FileNotFoundError):
            info = os.stat(os.path.join(directory, name))
            found.append((info.st_mtime, info.st_size, name))
    total = coming + sum(size for _, size, _ in found)
    evicted = freed = 0
    for used, size, name in sorted(found):  # the least recently used first
        stale = age >= 0 and now - used > age
        if name.split(".")[0] in keep or not (stale or 0 <= limit < total):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(directory, name))
            evicted, freed = evicted + 1, freed + size
        total -= size
    return present, evicted, freed


# ------------------------------------------------------------------------------------------- in a container


def _blob_refs(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Every value of the job sent apart as a blob: the payload, inputs, foreach elements, upstream results."""
    refs = [job["payload"], *job.get("inputs", {}).values(), *job.get("bound", {}).values()]
    for ref in job.get("refs", {}).values():
        refs += ref.get("each", [ref])
    return [ref for ref in refs if isinstance(ref, dict) and ref.get("blob")]


def _s3_reader(s3: Any) -> Callable[..., bytes]:
    def get(bucket: str, key: str, digest: str | None = None) -> bytes:
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        if digest is not None and hashlib.sha256(data).hexdigest() != digest:
            raise TaskFailure("IntegrityError", f"s3://{bucket}/{key} does not match its hash")
        return data

    return get


def _blobs_to_files(job: dict[str, Any], get: Callable[[str, str], bytes], here: str) -> None:
    """The blobs a job names by object key, fetched (each checked against its hash) into files in `here`."""
    for ref in _blob_refs(job):
        local = os.path.join(here, ref["hash"])
        if not os.path.exists(local):
            _write_atomically(local, get(ref["path"], ref["hash"]))
        ref["path"] = local


class _Stdio:
    """What the task prints, to this process's real stdout/stderr (the task's are swapped while it runs), which the
    container's log driver ships; `ended` is the last character written, so that a mark starts a line."""

    def __init__(self) -> None:
        self.streams = {"stdout": sys.stdout, "stderr": sys.stderr}
        self.ended = "\n"

    def emit(self, stream: str, text: str) -> None:
        self.streams[stream].write(text)
        self.streams[stream].flush()
        self.ended = text[-1:] or self.ended

    def mark(self, line: str) -> None:
        sys.stderr.flush()
        self.emit("stdout", ("" if self.ended == "\n" else "\n") + line + "\n")


def _run_s3_job(
    s3: Any, bucket: str, sse: dict[str, str], job: tuple[str, str], base: str, out: _Stdio, provide: Any
) -> bool:
    """One job from S3 (checked against its hash), its blobs fetched next to it; the result and, last, the done
    object written to `BASE.result` and `BASE.done` with the manifest's encryption; `job` is (its key, its hash).
    True if the task failed."""
    get = _s3_reader(s3)
    result: bytes | None = None
    try:
        envelope = pickle.loads(get(bucket, *job))
        with tempfile.TemporaryDirectory() as here:
            _blobs_to_files(envelope, lambda key, digest: get(bucket, key, digest), here)
            result, error = run_teed(envelope, out.emit, None, provide)
    except TaskFailure as failure:
        error = failure.info
    if result is not None:
        s3.put_object(Bucket=bucket, Key=base + ".result", Body=result, **sse)
    s3.put_object(Bucket=bucket, Key=base + ".done", Body=done_record(result, error), **sse)
    return error is not None


def _manifest(s3: Any, uri: str) -> dict[str, Any]:
    return json.loads(_s3_reader(s3)(*uri.removeprefix("s3://").split("/", 1)))


def run_s3(manifest_uri: str, provide: Provide | None = None) -> int:
    """A task in a container (an AWS Batch job or array child) that reads and writes S3 with its own role: no URL
    that could carry the engine's credentials is handed over. The manifest names, per array index
    (`AWS_BATCH_JOB_ARRAY_INDEX`, 0 for a plain job), the job, its hash, and where the result and the done object
    go. Exit status 1 if the task failed. boto3 is imported here only: every other mode needs nothing but
    cloudpickle."""
    import boto3

    s3 = boto3.client("s3")
    manifest = _manifest(s3, manifest_uri)
    entry = manifest["each"][int(os.environ.get("AWS_BATCH_JOB_ARRAY_INDEX", "0"))]
    base = entry["done"].removesuffix(".done")
    job = (entry["job"], entry["sha256"])
    failed = _run_s3_job(s3, manifest["bucket"], manifest.get("sse", {}), job, base, _Stdio(), provide)
    return 1 if failed else 0


TASK_MARK = "::hetflow-task "  # in a warm job's log: what follows, up to TASK_END_MARK, is that task's output
TASK_END_MARK = "::hetflow-task-end "
QUEUE_TICKS = (0.02, 0.5)  # seconds between two looks at a warm job's queue: within QUEUE_HOT of a task, at most
QUEUE_HOT = 1.0  # a loop's next iteration comes soon after the last one's outcome: no backing off before this


def claim_s3(s3: Any, bucket: str, key: str, sse: dict[str, str], who: str) -> bool:
    """Create `key` unless it exists (S3's conditional write): of a worker and the engine withdrawing the task,
    exactly one wins and says what becomes of it."""
    from botocore.exceptions import ClientError

    try:
        s3.put_object(Bucket=bucket, Key=key, Body=who.encode(), IfNoneMatch="*", **sse)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        raise
    return True


def run_s3_queue(manifest_uri: str, provide: Provide | None = None) -> None:
    """A warm job (a Braket Hybrid Job): run the tasks that arrive in `FOLDER/queue/` one after another, in the
    order of their keys (`SEQ-TASK-SHA256`, each the task's job), until idle for the manifest's `keep_alive`
    seconds. Each task is claimed first (`FOLDER/TASK.claim`, a conditional write the engine also makes to take a
    task back), then run, its output between TASK_MARK lines, its outcome in `FOLDER/TASK.result|done`. Once idle
    it writes `FOLDER/closed` and runs what arrived before that: the engine looks for `closed` after each task
    it queues, and takes back a task no worker claimed. The device the provider builds stays warm throughout."""
    import boto3

    s3 = boto3.client("s3")
    manifest = _manifest(s3, manifest_uri)
    bucket, sse, folder = manifest["bucket"], manifest.get("sse", {}), manifest["folder"]
    keep_alive, closed, out = float(manifest.get("keep_alive", 0)), False, _Stdio()
    idle_since, tick = time.monotonic(), QUEUE_TICKS[0]
    while True:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{folder}/queue/").get("Contents", [])
        for key in sorted(o["Key"] for o in listed):
            task, digest = key.rsplit("/", 1)[1].split("-", 1)[1].rsplit("-", 1)
            if claim_s3(s3, bucket, f"{folder}/{task}.claim", sse, "worker"):
                out.mark(TASK_MARK + task)
                _run_s3_job(s3, bucket, sse, (key, digest), f"{folder}/{task}", out, provide)
                out.mark(TASK_END_MARK + task)
            s3.delete_object(Bucket=bucket, Key=key)
        now = time.monotonic()
        if listed:
            idle_since, tick = now, QUEUE_TICKS[0]
        elif closed:
            return
        elif now - idle_since >= keep_alive:
            s3.put_object(Bucket=bucket, Key=f"{folder}/closed", Body=b"", **sse)
            closed = True
            continue  # what arrived before the close still runs
        elif now - idle_since >= QUEUE_HOT:
            tick = min(tick * 2, QUEUE_TICKS[1])
        time.sleep(tick)


# ------------------------------------------------------------------------------------------- in a pod

OUTCOME_MARK = "::hetflow-outcome "  # the last line of a pod's log: base64 of {"done": DONE_JSON, "result": B64}


def run_pod(directory: str) -> int:
    """A task in a Kubernetes pod: its job is `DIR/job-INDEX` (a mounted Secret; INDEX the pod's
    JOB_COMPLETION_INDEX, 0 for a plain Job). What it prints goes to the pod's log; its outcome is the log's last
    line (so the engine needs no storage of the cluster's: it reads the log it streams anyway). Exit 1 if it
    failed."""
    index = os.environ.get("JOB_COMPLETION_INDEX", "0")
    streams = {"stdout": sys.stdout, "stderr": sys.stderr}
    ended = ["\n"]  # the log's last character: the outcome line starts a line of its own

    def emit(stream: str, text: str) -> None:
        streams[stream].write(text)
        streams[stream].flush()
        ended[0] = text[-1:] or ended[0]

    try:
        with open(os.path.join(directory, f"job-{index}"), "rb") as fh:
            job = pickle.load(fh)
        with tempfile.TemporaryDirectory() as here:
            if job.get("blob_bucket"):  # large values in object storage, read with the pod's own role
                import boto3

                bucket, get = job["blob_bucket"], _s3_reader(boto3.client("s3"))
                _blobs_to_files(job, lambda key, digest: get(bucket, key, digest), here)
            result, error = run_teed(job, emit)
    except (OSError, pickle.UnpicklingError) as err:
        result, error = None, {"type": "JobMissing", "message": f"job-{index} in {directory}: {err}"}
    except TaskFailure as failure:
        result, error = None, failure.info
    data = base64.b64encode(result).decode() if result else None
    said = {"done": done_record(result, error).decode(), "result": data}
    sys.stderr.flush()
    gap = "" if ended[0] == "\n" else "\n"
    sys.stdout.write(f"{gap}{OUTCOME_MARK}{base64.b64encode(json.dumps(said).encode()).decode()}\n")
    sys.stdout.flush()
    return 0 if error is None else 1


# ------------------------------------------------------------------------------------------- on Dask


class TaskStopped(BaseException):
    """Raised in the Dask worker thread of a task that was cancelled or ran out of time: a BaseException, so that
    the cell's own `except Exception` does not swallow it."""


def _stops(worker: Any) -> dict[str, Any]:
    """What runs in which thread of this worker, and which (pack, task) pairs were stopped: kept on the worker
    object, since this module travels by value and its own globals are not shared by the packs and stop_task."""
    stops: dict[str, Any] = worker.__dict__.setdefault(
        "hetflow_stops", {"lock": threading.Lock(), "running": {}, "stopped": set(), "exception": TaskStopped}
    )
    return stops


def stop_task(key: str, task: str, dask_worker: Any = None) -> bool:
    """On a Dask worker (Client.run): stop the task in the thread that runs it, or before it starts. Python code
    stops at once; code inside a call that does not return to Python (a sleep, a C loop) stops when it returns.
    Returns whether the task was running here."""
    stops = _stops(dask_worker)
    with stops["lock"]:
        stops["stopped"].add((key, task))
        thread = stops["running"].get((key, task))
        if thread is not None:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), ctypes.py_object(stops["exception"]))
    return thread is not None


def _checkpoint() -> None:
    """A call: a stop sent until now is raised here, inside the task's own handling, not in the next task's."""


@contextlib.contextmanager
def _stoppable(stops: dict[str, Any], key: str, task: str) -> Any:
    with stops["lock"]:
        if (key, task) in stops["stopped"]:
            raise stops["exception"]()  # stopped before its turn in the pack
        stops["running"][(key, task)] = threading.get_ident()
    try:
        yield
    finally:
        with stops["lock"]:
            del stops["running"][(key, task)]
        _checkpoint()


def run_pack(jobs: list[dict[str, Any]], upstream: list[list[dict[str, Any]]], topic: str) -> list[dict]:
    """A pack of jobs as one Dask task, on a worker (this module travels by value: workers need only cloudpickle).
    An input kept on the cluster comes as the outcomes of its upstream pack (`upstream`, by the position a ref
    names), moved here by Dask. Each outcome keeps its result on the cluster; the engine gets only hashes
    (`without_results`)."""
    from distributed import get_worker  # only here, on a Dask worker

    worker = get_worker()
    key = str(worker.get_current_task())  # on every event: a late one from an earlier attempt's pack is told apart
    results: dict[str, Any] = {}  # upstream results read once per pack
    outcomes = []
    stops = _stops(worker)
    for n, job in enumerate(jobs):
        for ref in (each for refs in job["refs"].values() for each in refs.get("each", [refs])):
            if "pack" in ref:
                kept = next(o for o in upstream[ref["pack"]] if o["task"] == ref["task"])
                ref["data"] = kept["result"]
        task = job["task"]
        where = {"worker": worker.address, "pack": f"{n + 1} of {len(jobs)}"}
        worker.log_event(topic, {"op": "started", "task": task, "key": key, **where})

        def emit(stream: str, text: str, task: str = task) -> None:
            worker.log_event(topic, {"op": "log", "task": task, "key": key, "stream": stream, "text": text})

        try:
            with _stoppable(stops, key, task):
                result, error = run_teed(job, emit, results)
        except stops["exception"]:
            result, error = None, {"type": "TaskStopped", "message": "stopped on its Dask worker"}
        if (key, task) in stops["stopped"]:  # the engine waits for this word before it says the task stopped
            stops["stopped"].discard((key, task))
            result, error = None, {"type": "TaskStopped", "message": "stopped on its Dask worker"}
            worker.log_event(topic, {"op": "stopped", "task": task, "key": key})
        digest = hashlib.sha256(result).hexdigest() if result is not None else None
        size = len(result or b"")
        outcomes.append({"task": task, "error": error, "result": result, "hash": digest, "size": size, **where})
    return outcomes


def without_results(outcomes: list[dict[str, Any]], bring: list[str]) -> list[dict[str, Any]]:
    """The outcomes the engine hears of: hashes, and the results of the tasks whose values it waits for."""
    return [{k: v for k, v in o.items() if k != "result" or o["task"] in bring} for o in outcomes]


def pick_results(outcomes: list[dict[str, Any]], tasks: list[str]) -> list[bytes]:
    found = {outcome["task"]: outcome["result"] for outcome in outcomes}
    return [found[task] for task in tasks]


def main(argv: list[str]) -> int:
    if len(argv) in (4, 5) and argv[0] == "serve":
        serve(int(argv[1]), int(argv[2]), argv[3], *argv[4:])
        return 0
    if len(argv) == 5 and argv[0] == "pack":
        run_queue(argv[1], float(argv[2]), int(argv[3]), float(argv[4]))
        return 0
    if len(argv) == 2 and argv[0] == "follow":
        follow_tasks(int(argv[1]))
        return 0
    if len(argv) >= 4 and argv[0] == "blobs":
        wanted = dict(mark[1:].split(":") for mark in argv[4:] if mark[:1] == "+")
        in_use = [mark[1:] for mark in argv[4:] if mark[:1] == "="]
        sizes = {digest: int(size) for digest, size in wanted.items()}
        present, evicted, freed = blob_store(argv[1], int(argv[2]), float(argv[3]), sizes, in_use)
        print("\n".join([*present, f"::evicted {evicted} {freed}"]))
        return 0
    if len(argv) == 2 and argv[0] == "s3":
        return run_s3(argv[1])
    if len(argv) == 2 and argv[0] == "pod":
        return run_pod(argv[1])
    if argv == ["versions"]:
        print(f"{sys.version_info[0]}.{sys.version_info[1]} {cloudpickle_version()}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

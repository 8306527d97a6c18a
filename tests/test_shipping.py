"""The one shipping format: a job built by `envelope` runs in the runner, and the outcome it leaves is read back only
when the result hashes to what the runner wrote beside it (the same reader serves a spool, a remote directory and
S3)."""

from __future__ import annotations

import asyncio
import json
import pickle
from pathlib import Path

import cloudpickle
import pytest

from engines import outputs, payload
from hetflow_server import runner
from hetflow_server.executors import Job, Upstream
from hetflow_server.protocol import sha256
from hetflow_server.shipping import JobPaths, Outcome, envelope, inlined, read_outcome, spooled_outcome


async def _read(path: str) -> bytes | None:
    found = Path(path)
    return found.read_bytes() if found.exists() else None


def read_local_outcome(paths: JobPaths) -> Outcome | None:
    return asyncio.run(read_outcome(_read, paths, ""))


def _run(tmp_path: Path, job: Job) -> JobPaths:
    paths = JobPaths(str(tmp_path / job.task_id))
    runner.run_to_files(envelope(job), paths.base, runner.append_to(paths.log))
    return paths


def test_a_job_s_upstream_result_from_a_file_reaches_the_code_and_its_outcome_is_read_back(tmp_path: Path) -> None:
    upstream = cloudpickle.dumps({"outputs": {"x": 20}, "value": None, "deleted": []})
    stored = tmp_path / "upstream.result"
    stored.write_bytes(upstream)
    ref = Upstream("up", "x", sha256(upstream), "local", stored)
    paths = _run(tmp_path, Job("t1", payload("y = x + 1\nprint(y)\n", ["y"]), {}, refs={"x": ref}))
    outcome = read_local_outcome(paths)
    assert outcome is not None and outcome.error is None and outputs(outcome.result or b"") == {"y": 21}
    assert json.loads(Path(paths.done).read_text())["sha256"] == sha256(outcome.result or b"")
    assert Path(paths.log).read_text() == "21\n"
    assert inlined(Job("t2", b"", {}, refs={"x": ref})) == {"up": {"data": upstream}}


def test_a_result_that_does_not_match_the_hash_its_task_wrote_is_refused(tmp_path: Path) -> None:
    paths = _run(tmp_path, Job("t1", payload("y = 1\n", ["y"]), {}))
    Path(paths.result).write_bytes(pickle.dumps({"outputs": {"y": "tampered"}}))
    outcome = read_local_outcome(paths)
    assert outcome is not None and outcome.result is None and outcome.error
    assert outcome.error["type"] == "IntegrityError" and "does not match the hash" in outcome.error["message"]


def test_a_missing_result_and_a_done_file_no_runner_wrote_are_errors_not_results(tmp_path: Path) -> None:
    paths = _run(tmp_path, Job("t1", payload("y = 1\n", ["y"]), {}))
    Path(paths.result).unlink()
    missing = read_local_outcome(paths)
    assert missing is not None and missing.error and missing.error["type"] == "ResultMissing"
    Path(paths.done).write_text("not json")
    forged = read_local_outcome(paths)
    assert forged is not None and forged.error and forged.error["type"] == "IntegrityError"


def test_the_remote_reader_checks_the_hash_too_and_names_where_the_result_was(tmp_path: Path) -> None:
    paths = _run(tmp_path, Job("t1", payload("y = 2\n", ["y"]), {}))
    Path(paths.result).write_bytes(b"tampered")
    outcome = asyncio.run(read_outcome(_read, paths, "cluster:"))
    assert outcome is not None and outcome.error and outcome.error["type"] == "IntegrityError"
    assert f"cluster:{paths.result}" in outcome.error["message"]
    assert asyncio.run(read_outcome(_read, JobPaths(str(tmp_path / "never-ran")), "cluster:")) is None


def test_a_pack_runner_outlives_a_task_directory_removed_while_it_reaps_the_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine removes a completed task's directory as soon as it has the outcome; the element reaping that
    task's process just after must not die of it (it would take the rest of its pack with it)."""
    gone = tmp_path / "collected"
    monkeypatch.setattr(runner.os.path, "isdir", lambda path: True)  # it was there when looked at
    runner._ended(str(gone), 9)  # a status saying the process was killed: a done file would be written
    assert not gone.exists()


def test_a_warm_worker_journals_each_outcome_in_one_file_and_a_torn_last_record_is_not_an_outcome(
    tmp_path: Path,
) -> None:
    """What an engine that died finds on restart: every outcome the worker sent, each result checked against the
    hash beside it; a record the worker was killed while writing is not one; a large result is in its own file."""
    journal = runner.Journal(str(tmp_path))
    sent = []

    class Pipe:
        def send(self, message: dict) -> bool:
            return True

        def send_frame(self, data: bytes) -> bool:
            sent.append(data)
            return True

    small = envelope(Job("t1", payload("y = 6 * 7\n", ["y"]), {}))
    large = envelope(Job("t2", payload(f"y = b'x' * {runner.SPOOL_INLINE + 1}\n", ["y"]), {}))
    for job in (small, large):
        runner.run_in_spool(Pipe(), journal, job, str(tmp_path), {}, None, [])  # type: ignore[arg-type]
    data = Path(runner.journal_path(str(tmp_path), runner.os.getpid())).read_bytes()
    assert data == b"".join(sent)  # what was sent is what was journaled, byte for byte
    records = runner.frames(data + sent[0][:-3])  # a third record, torn
    assert [r["task"] for r in records] == ["t1", "t2"]
    first, second = (spooled_outcome(r, JobPaths(str(tmp_path / r["task"]))) for r in records)
    assert outputs(first.result or b"") == {"y": 42}
    assert records[1]["result"] is None and len(outputs(second.result or b"")["y"]) == runner.SPOOL_INLINE + 1
    tampered = spooled_outcome({**records[0], "result": cloudpickle.dumps({"outputs": {"y": 0}})}, JobPaths("t1"))
    assert tampered.result is None and tampered.error and tampered.error["type"] == "IntegrityError"

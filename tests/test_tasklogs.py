"""Task logs: a large write reaches listeners in events a WebSocket carries, with offsets that add up."""

from __future__ import annotations

import json
from typing import Any

from hetflow_server.credentials import Credentials
from hetflow_server.store import Store
from hetflow_server.tasklogs import EVENT_TEXT, TaskLogs


def test_a_large_write_is_published_in_events_under_the_socket_limit_with_offsets_that_resume_exactly(
    tmp_path,
) -> None:
    events: list[dict[str, Any]] = []
    store = Store(tmp_path / "store", log_limit=0)
    logs = TaskLogs(store, Credentials(tmp_path / "credentials.json"), events.append)
    text = "é\x01" * (EVENT_TEXT + 10) + "end\n"  # 2 MiB of characters, 3 bytes each, 6 bytes as JSON escapes
    logs.write("t1", "stdout", "first line\n")
    logs.write("t1", "stdout", text)
    logs.close("t1")
    sizes = [len(json.dumps(e)) for e in events]
    assert len(events) == 4 and max(sizes) < 10 * 2**20, sizes  # tornado's max_message_size
    stored = store.log_path("t1").read_bytes()
    for event in events:  # each event's offset is where its text is in the stored log
        data = event["text"].encode("utf-8")
        assert stored[event["offset"] : event["offset"] + len(data)] == data
    assert "".join(e["text"] for e in events) == "first line\n" + text


def _log(tmp_path, limit: int, pieces: list[str]) -> tuple[str, str]:
    """The stored log and what the events carried, for these writes."""
    events: list[dict[str, Any]] = []
    store = Store(tmp_path / "store", log_limit=limit)
    logs = TaskLogs(store, Credentials(tmp_path / "credentials.json"), events.append)
    for piece in pieces:
        logs.write("t1", "stdout", piece)
    logs.close("t1")
    return store.log_path("t1").read_text(), "".join(e["text"] for e in events)


def test_a_log_over_its_limit_keeps_its_beginning_and_its_end_with_a_note_of_what_was_left_out(tmp_path) -> None:
    lines = [f"line {n:03d} {'é' * 20}\n" for n in range(200)]  # 50 bytes each, 10,000 in all
    stored, shown = _log(tmp_path, 1000, lines)
    assert stored == shown, "the cell and the sidebar were shown something else than the log keeps"
    head, cut, tail = stored.partition("\n[hetflow: log cut after")
    assert cut, "no note of what was left out"
    assert "".join(lines).startswith(head) and len(head.encode()) <= 900
    assert tail.endswith("line 198 " + "é" * 20 + "\nline 199 " + "é" * 20 + "\n"), "the output's end is not kept"
    left_out = int(tail.split(" bytes of output left out")[0].split(": ")[-1].replace(",", ""))
    kept_tail = tail.split("follow]\n", 1)[1]
    assert len(head.encode()) + left_out + len(kept_tail.encode()) == 10_000  # every byte kept or counted
    assert len(stored.encode()) <= 1000 + 200


def test_a_log_just_past_its_head_is_kept_whole_without_a_note(tmp_path) -> None:
    lines = [f"{n:04d}\n" for n in range(190)]  # 950 bytes: past the head (900), within the limit
    stored, shown = _log(tmp_path, 1000, lines)
    assert stored == shown == "".join(lines)

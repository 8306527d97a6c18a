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

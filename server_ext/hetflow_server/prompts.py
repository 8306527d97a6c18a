"""Questions a remote system asks at login (an MFA one-time code), relayed to the user and answered once.

An open prompt is announced as an event (to JupyterLab, which shows a dialog, and to the cells waiting on that
executor's tasks) and listed by the API. The answer goes from the API request straight to the waiting connection:
it is never stored, logged or published.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .events import Events
from .protocol import NotFound, SpecError


class NotAnswered(RuntimeError):
    """Nobody answered in time, or the user dismissed the question."""


@dataclass
class Prompt:
    id: str
    executor: str
    host: str
    title: str
    instructions: str
    fields: list[tuple[str, bool]]  # (question, whether the answer may be shown as it is typed)
    asked: float = field(default_factory=time.time)
    answer: asyncio.Future[list[str]] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "executor": self.executor,
            "host": self.host,
            "title": self.title,
            "instructions": self.instructions,
            "fields": [{"text": text, "echo": echo} for text, echo in self.fields],
            "asked": self.asked,
        }


class Prompts:
    def __init__(self, events: Events, waiting: Callable[[str], list[str]], timeout: float):
        self.events = events
        self.waiting = waiting  # an executor's tasks that wait for its connection: their cells are told too
        self.timeout = timeout
        # JupyterLab pages following the events (each shows the question as a dialog); with none, a waiting cell asks
        self.browsers = 0
        self._open: dict[str, Prompt] = {}

    def pending(self) -> list[dict[str, Any]]:
        return [p.to_json() for p in self._open.values()]

    def asker(self, executor: str, host: str) -> Callable[[str, str, list[tuple[str, bool]]], list[str]]:
        """What a connection calls, from its own thread, when the server asks: it blocks until the user answers."""
        loop = asyncio.get_running_loop()

        def ask(title: str, instructions: str, fields: list[tuple[str, bool]]) -> list[str]:
            prompt = Prompt(uuid.uuid4().hex[:12], executor, host, title, instructions, fields)
            # bounded here too: a stopped loop must not hold the connection's thread (and the process) forever
            return asyncio.run_coroutine_threadsafe(self._ask(prompt), loop).result(self.timeout + 5)

        return ask

    async def _ask(self, prompt: Prompt) -> list[str]:
        prompt.answer = asyncio.get_running_loop().create_future()
        self._open[prompt.id] = prompt
        self._announce(prompt, "open")
        try:
            return await asyncio.wait_for(prompt.answer, self.timeout)
        except TimeoutError:
            raise NotAnswered(f"nobody answered within {self.timeout:g} s") from None
        finally:
            del self._open[prompt.id]
            self._announce(prompt, "closed")

    def _announce(self, prompt: Prompt, state: str) -> None:
        self.events.publish(
            {
                "type": "prompt",
                "task": None,
                "tasks": self.waiting(prompt.executor),
                "state": state,
                "browsers": self.browsers,
                "prompt": prompt.to_json(),
            }
        )

    def close(self) -> None:
        """The engine stops: whoever waits for an answer stops waiting."""
        for prompt in list(self._open.values()):
            if prompt.answer is not None and not prompt.answer.done():
                prompt.answer.set_exception(NotAnswered("the engine stopped"))

    def _find(self, prompt_id: str) -> Prompt:
        prompt = self._open.get(prompt_id)
        if prompt is None or prompt.answer is None or prompt.answer.done():
            raise NotFound(f"no open prompt {prompt_id!r} (answered already, dismissed or timed out)")
        return prompt

    def answer(self, prompt_id: str, answers: Any) -> None:
        prompt = self._find(prompt_id)
        if (
            not isinstance(answers, list)
            or len(answers) != len(prompt.fields)
            or not all(isinstance(a, str) for a in answers)
        ):
            raise SpecError(f"answers must be a list of {len(prompt.fields)} string(s), one per question")
        assert prompt.answer is not None
        prompt.answer.set_result(answers)

    def dismiss(self, prompt_id: str) -> None:
        prompt = self._find(prompt_id)
        assert prompt.answer is not None
        prompt.answer.set_exception(NotAnswered("the question was dismissed"))

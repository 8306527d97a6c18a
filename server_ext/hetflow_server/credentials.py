"""Named secrets (SSH keys, passwords, AWS keys, tokens) held by the engine: one file of mode 0600, never sent back.

Executors look secrets up by name; the API lists names, kinds and field names only. Any secret value that shows up
in a task's output is masked before it reaches a log or an event.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from .protocol import NotFound, SpecError
from .runner import mask

MIN_MASKED = 4  # shorter values would mask ordinary text

# kind -> (required fields, optional fields, fields that are not secret)
KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "ssh-key": (("private_key",), ("passphrase", "certificate", "username"), ("certificate", "username")),
    "password": (("password",), ("username",), ("username",)),
    "aws": (("access_key_id", "secret_access_key"), ("session_token", "region"), ("access_key_id", "region")),
    "token": (("token",), (), ()),
    "kubeconfig": (("kubeconfig",), (), ()),
}
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class Credentials:
    def __init__(self, path: Path):
        self.path = path
        self._secrets: dict[str, dict[str, Any]] = {}
        if path.exists():
            os.chmod(path, 0o600)
            self._secrets = json.loads(path.read_text())

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self._secrets, fh)
        os.replace(tmp, self.path)

    def describe(self) -> list[dict[str, Any]]:
        """What may be shown: names, kinds, field names, public fields; never a secret value."""
        shown = []
        for name, entry in sorted(self._secrets.items()):
            public = KINDS[entry["kind"]][2]
            shown.append(
                {
                    "name": name,
                    "kind": entry["kind"],
                    "fields": sorted(entry["fields"]),
                    "public": {k: v for k, v in entry["fields"].items() if k in public},
                    "updated": entry["updated"],
                }
            )
        return shown

    def put(self, name: str, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Create or replace a secret; bad input is refused before anything is written."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise SpecError("a credential name uses letters, digits, '_', '-', '.' (at most 64)")
        if kind not in KINDS:
            raise SpecError(f"unknown credential kind {kind!r}; kinds are: {', '.join(KINDS)}")
        required, optional, _ = KINDS[kind]
        if not isinstance(fields, dict):
            raise SpecError("fields must be an object of strings")
        missing = [f for f in required if not fields.get(f)]
        unknown = sorted(set(fields) - set(required) - set(optional))
        if missing or unknown:
            raise SpecError(
                f"a {kind} credential needs {', '.join(required)}"
                + (f" and may have {', '.join(optional)}" if optional else "")
                + (f"; missing: {', '.join(missing)}" if missing else "")
                + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            )
        if not all(isinstance(v, str) for v in fields.values()):
            raise SpecError("every credential field is a string")
        self._secrets[name] = {"kind": kind, "fields": dict(fields), "updated": time.time()}
        self._save()
        return next(c for c in self.describe() if c["name"] == name)

    def delete(self, name: str) -> None:
        if self._secrets.pop(name, None) is None:
            raise NotFound(f"no credential is named {name!r}")
        self._save()

    def get(self, name: str) -> dict[str, Any]:
        """The secret itself, for an executor that connects with it."""
        try:
            return dict(self._secrets[name])
        except KeyError:
            raise NotFound(f"no credential is named {name!r}; add it in the sidebar or the API") from None

    def secret_values(self) -> list[str]:
        values = []
        for entry in self._secrets.values():
            public = KINDS[entry["kind"]][2]
            values += [v for k, v in entry["fields"].items() if k not in public and len(v) >= MIN_MASKED]
        return sorted(values, key=len, reverse=True)

    def mask(self, text: str) -> str:
        return mask(text, self.secret_values())

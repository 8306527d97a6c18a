"""moto on loopback for the AWS executors' tests: S3, Batch (without Docker: moto marks jobs SUCCEEDED without
running anything, so the tests play the container themselves), CloudWatch Logs and IAM, served by a
ThreadedMotoServer in this process. Nothing leaves the machine."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's account
# what the container's job role would have: distinct from the engine's keys, so that a test shows which was used
ROLE_KEYS = {"AWS_ACCESS_KEY_ID": "AKIAJOBROLEFAKE", "AWS_SECRET_ACCESS_KEY": "job-role-secret-not-real"}


@dataclass(frozen=True)
class Moto:
    url: str

    def client(self, service: str) -> Any:
        """A client of the test itself (not the engine's)."""
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="AKIATESTFAKE",
            aws_secret_access_key="test-secret-not-real",
        )

    def _post(self, path: str, body: dict[str, Any] | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        with urllib.request.urlopen(urllib.request.Request(self.url + path, data=data, method="POST"), timeout=10):
            pass

    def reset(self) -> None:
        """Forget every bucket, job and log; Batch runs without Docker."""
        self._post("/moto-api/reset")
        self._post("/moto-api/config", {"batch": {"use_docker": False}})

    def container_env(self, environment: dict[str, str]) -> dict[str, str]:
        """The environment of a process playing a container: what the job was submitted with, the job role's keys,
        and moto as every AWS endpoint (boto3 reads AWS_ENDPOINT_URL)."""
        return {
            "PATH": os.environ["PATH"],
            **environment,
            **ROLE_KEYS,
            "AWS_ENDPOINT_URL": self.url,
            "AWS_DEFAULT_REGION": environment.get("AWS_DEFAULT_REGION", REGION),
        }

    def versioned_bucket(self, name: str) -> None:
        """A bucket that keeps every version of every object: what was written, and how, stays visible after the
        executor deleted it."""
        s3 = self.client("s3")
        s3.create_bucket(Bucket=name)
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})

    def written(self, bucket: str, prefix: str) -> dict[str, list[dict[str, Any]]]:
        """Every version written under the prefix, by key: its encryption headers, and whether it is deleted now."""
        s3 = self.client("s3")
        answer = s3.list_object_versions(Bucket=bucket, Prefix=prefix)
        deleted = {m["Key"] for m in answer.get("DeleteMarkers", []) if m["IsLatest"]}
        found: dict[str, list[dict[str, Any]]] = {}
        for version in answer.get("Versions", []):
            head = s3.head_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
            found.setdefault(version["Key"], []).append(
                {
                    "sse": head.get("ServerSideEncryption"),
                    "kms": head.get("SSEKMSKeyId"),
                    "deleted": version["Key"] in deleted,
                }
            )
        return found


@contextlib.contextmanager
def moto_server() -> Iterator[Moto]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    moto = Moto(f"http://{host}:{port}")
    moto.reset()
    try:
        yield moto
    finally:
        server.stop()

"""What the AWS kinds (batch, braket) share: a boto3 session from a named profile or an `aws` credential of the
engine's store — never the server's own environment by accident —, clients per service called off the event loop
(boto3 blocks), a task's objects under `s3_prefix` with server-side encryption on everything written, the manifest
the runner reads in a container (`runner.run_s3`), and the tail of a CloudWatch Logs stream.

Objects under `s3_prefix`: `blobs/SHA256` (payloads and large values, content-addressed: each uploaded once while
it is there), and per submission `FOLDER/manifest.json` and per task `FOLDER/TASK.job` (the runner's job, its large
values referring to blobs), `TASK.result` and `TASK.done` (JSON, written last by the container: the task's own word
on its outcome).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from traitlets import Float, Int, Unicode

from ..protocol import AccessError, SpecError, sha256
from ..shipping import RUNNER_NAME, RUNNER_SOURCE, JobPaths, Outcome, pickled, read_outcome
from .base import Job
from .blobs import slimmed
from .polled import Followed, PolledExecutor

_S3_URI = re.compile(r"s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(/.*)?")
SSE_KINDS = ("AES256", "aws:kms")
# credentials botocore falls back to from the machine when a profile has none: never the executor's by accident
MACHINE_CREDENTIALS = ("env", "iam-role", "container-role")


@dataclass
class CloudJob(Followed):
    """A job whose files are objects under the prefix: FOLDER/TASK.job, .result, .done."""

    folder: str = ""
    log_token: str | None = None  # where its CloudWatch log was read up to

    @property
    def paths(self) -> JobPaths:
        return JobPaths(f"{self.folder}/{self.task_id}")


J = TypeVar("J", bound=CloudJob)


class AWSExecutor(PolledExecutor[J], Generic[J]):
    profile = Unicode("", help="A named AWS profile (~/.aws/config) to authenticate with.")
    credential = Unicode("", help="Name of an `aws` credential in the engine's store (used when no profile is set).")
    region = Unicode("", help="AWS region (default: the credential's or the profile's region).")
    s3_prefix = Unicode("", help="s3://bucket/prefix where payloads, the runner and results go.")
    sse = Unicode("AES256", help="Server-side encryption of every object written: AES256 or aws:kms.")
    kms_key_id = Unicode("", help="KMS key for sse=aws:kms (default: the account's aws/s3 key).")
    endpoint_url = Unicode("", help="An S3/Batch/Logs-compatible endpoint (tests use moto); empty: AWS itself.")
    poll_interval = Float(5.0, help="Seconds between two polls of all running jobs.")  # AWS throttles
    blob_min = Int(
        64 * 1024,
        help="Inputs, foreach elements and upstream results of at least this many bytes go to s3_prefix/blobs/ as "
        "content-addressed objects, each uploaded once while it stays there (expire them with a lifecycle rule); "
        "0: they travel inside each task's job (the payload is always shared).",
    )

    def __init__(self, name: str, reporter: Any, spool: Any, **settings: Any):
        super().__init__(name, reporter, spool, **settings)
        if self.s3_prefix and not _S3_URI.fullmatch(self.s3_prefix):
            raise SpecError(f"executor {name!r} ({self.kind}): s3_prefix={self.s3_prefix!r} is not s3://bucket/prefix")
        if self.sse not in SSE_KINDS:
            raise SpecError(f"executor {name!r} ({self.kind}): sse={self.sse!r}; use {' or '.join(SSE_KINDS)}")
        self._session: Any = None
        self._clients: dict[str, Any] = {}
        self._built_from: Any = None  # the credential's `updated` stamp the session was built from
        self._lock = threading.Lock()  # sessions are not thread-safe; clients are

    # --------------------------------------------------------------------------- session and calls

    def problem(self) -> str | None:
        """What keeps this executor from reaching AWS, found without a request; None when nothing does."""
        if not self.profile and not self.credential:
            return (
                f"executor {self.name!r} ({self.kind}) has no AWS credentials: set `profile` (a named AWS profile) "
                "or `credential` (an aws credential in the engine's store); the server's own environment (AWS_* "
                "variables, an instance role) is never used"
            )
        if not self.profile:
            try:
                secret = self.credentials(self.credential)
            except SpecError as err:
                return str(err)
            if secret["kind"] != "aws":
                return f"credential {self.credential!r} is a {secret['kind']}, not an aws credential"
            if not self.region and not secret["fields"].get("region"):
                return f"executor {self.name!r} ({self.kind}) has no region: set `region` (or the credential's region)"
        if not self.s3_prefix:
            return f"executor {self.name!r} ({self.kind}) has no s3_prefix: set it to s3://bucket/prefix"
        return None

    def _new_session(self) -> Any:
        import boto3

        problem = self.problem()
        if problem:
            raise AccessError(problem)
        if self.profile:
            session = boto3.Session(profile_name=self.profile, region_name=self.region or None)
            found = session.get_credentials()
            method = getattr(found, "method", None)
            if found is None or method in MACHINE_CREDENTIALS:
                raise AccessError(
                    f"profile {self.profile!r} has no credentials of its own"
                    + (f" (botocore found the machine's: {method})" if method else "")
                    + ": give it keys, sso or a role to assume, or use an aws credential of the engine's store"
                )
            return session
        return credential_session(self.credentials(self.credential)["fields"], self.region)

    def _stamp(self) -> Any:
        """When the credential the session is built from was last replaced (None for a profile)."""
        if self.profile or not self.credential:
            return None
        with contextlib.suppress(SpecError):
            return self.credentials(self.credential).get("updated")
        return None

    def _client(self, service: str) -> Any:
        """A cached client (in a worker thread: building one reads botocore's data files), built again once the
        credential was replaced in the store."""
        stamp = self._stamp()
        with self._lock:
            if stamp != self._built_from:
                self._session, self._clients, self._built_from = None, {}, stamp
            if service not in self._clients:
                if self._session is None:
                    self._session = self._new_session()
                if self._session.region_name is None:  # a profile without one
                    raise AccessError(f"executor {self.name!r} ({self.kind}) has no region: set `region`")
                from botocore.config import Config

                # AWS_ENDPOINT_URL* of the server's environment must not redirect the engine's signed requests
                config = None if self.endpoint_url else Config(ignore_configured_endpoint_urls=True)
                self._clients[service] = self._session.client(
                    service, endpoint_url=self.endpoint_url or None, config=config
                )
            return self._clients[service]

    def forget_session(self) -> None:
        """Build the session again at the next call: a replaced credential or a refreshed profile is picked up."""
        with self._lock:
            self._session, self._clients = None, {}

    async def call(self, service: str, method: str, **kwargs: Any) -> dict[str, Any]:
        """One AWS API call, off the event loop."""

        def blocking() -> dict[str, Any]:
            return getattr(self._client(service), method)(**kwargs)

        return await asyncio.to_thread(blocking)

    @property
    def region_name(self) -> str:
        """The region the session resolved (after a first call)."""
        session = self._session  # read once: a worker thread may drop it meanwhile
        return session.region_name if session is not None else self.region

    # --------------------------------------------------------------------------- S3 under the prefix

    @property
    def bucket(self) -> str:
        return self.s3_prefix[5:].split("/", 1)[0]

    def s3_key(self, key: str) -> str:
        root = self.s3_prefix[5:].partition("/")[2].strip("/")
        return f"{root}/{key}" if root else key

    def s3_uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.s3_key(key)}"

    @property
    def sse_args(self) -> dict[str, str]:
        """The put_object arguments that encrypt an object (the container uses them too, from the manifest)."""
        args = {"ServerSideEncryption": self.sse}
        if self.sse == "aws:kms" and self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args

    async def s3_put(self, key: str, data: bytes) -> None:
        await self.call("s3", "put_object", Bucket=self.bucket, Key=self.s3_key(key), Body=data, **self.sse_args)

    async def s3_get(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is none (yet)."""
        from botocore.exceptions import ClientError

        def blocking() -> bytes | None:
            try:
                answer = self._client("s3").get_object(Bucket=self.bucket, Key=self.s3_key(key))
            except ClientError as err:
                if error_code(err) in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise
            return answer["Body"].read()

        return await asyncio.to_thread(blocking)

    async def s3_delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            chunk = [{"Key": self.s3_key(key)} for key in keys[start : start + 1000]]
            await self.call("s3", "delete_objects", Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})

    async def s3_delete_folder(self, folder: str) -> None:
        def blocking() -> list[str]:
            pages = self._client("s3").get_paginator("list_objects_v2")
            prefix = self.s3_key(folder) + "/"
            found = pages.paginate(Bucket=self.bucket, Prefix=prefix)
            return [f"{folder}/{o['Key'][len(prefix) :]}" for page in found for o in page.get("Contents", [])]

        await self.s3_delete(await asyncio.to_thread(blocking))

    async def s3_has(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            await self.call("s3", "head_object", Bucket=self.bucket, Key=self.s3_key(key))
        except ClientError as err:
            if error_code(err) not in ("NoSuchKey", "404", "NotFound"):
                raise
            return False
        return True

    async def s3_ensure(self, key: str, data: bytes) -> None:
        """Put an object the jobs share (the runner, a source bundle) unless it is there: looked for at every
        submission, since a lifecycle rule on the prefix may have expired it."""
        if not await self.s3_has(key):
            await self.s3_put(key, data)

    async def upload_runner(self) -> str:
        """The runner as `runner-HASH.py` under the prefix; returns its key."""
        await self.s3_ensure(RUNNER_NAME, RUNNER_SOURCE)
        return self.s3_key(RUNNER_NAME)

    # --------------------------------------------------------------------------- a task's objects

    async def envelopes(self, jobs: list[Job]) -> list[bytes]:
        """The jobs as the runner reads them in a container, pickled. The payload and every value of at least
        `blob_min` bytes (inputs, foreach elements, upstream results, which the container cannot read from the
        engine's store) are uploaded as blobs under `blobs/SHA256`: those already there (asked with one HEAD each,
        at once) are not sent again."""
        least = self.blob_min or 1 << 62  # 0: only the payload apart
        slim = [slimmed(job, self.s3_key("blobs"), least, self.name, payload_apart=True) for job in jobs]
        blobs = {digest: data for one in slim for digest, data in one.blobs.items()}
        there = await asyncio.gather(*(self.s3_has(f"blobs/{digest}") for digest in blobs))
        uploads = [(f"blobs/{d}", data) for (d, data), found in zip(blobs.items(), there, strict=True) if not found]
        await asyncio.gather(*(self.s3_put(key, data) for key, data in uploads))
        return [pickled(one.envelope) for one in slim]

    async def ship(self, folder: str, jobs: list[Job]) -> str:
        """Upload the jobs (entry N of the manifest is jobs[N], an array job's child N) and their manifest; returns
        the manifest's URI, what `runner.run_s3` takes."""
        envelopes = await self.envelopes(jobs)
        each = []
        for job, data in zip(jobs, envelopes, strict=True):
            paths = JobPaths(f"{folder}/{job.task_id}")
            each.append(
                {
                    "job": self.s3_key(paths.job),
                    "sha256": sha256(data),
                    "result": self.s3_key(paths.result),
                    "done": self.s3_key(paths.done),
                }
            )
        uploads = [(f"{folder}/{job.task_id}.job", data) for job, data in zip(jobs, envelopes, strict=True)]
        await asyncio.gather(*(self.s3_put(key, data) for key, data in uploads))
        manifest = {"bucket": self.bucket, "sse": self.sse_args, "each": each}
        await self.s3_put(f"{folder}/manifest.json", json.dumps(manifest).encode())
        return self.s3_uri(f"{folder}/manifest.json")

    async def read_outcome(self, job: J) -> Outcome | None:
        """The task's outcome from its done object; the result is checked against the hash it names."""
        return await read_outcome(self.s3_get, job.paths, self.s3_uri(""))

    # --------------------------------------------------------------------------- logs

    async def tail_log(self, group: str, stream: str, token: str | None) -> tuple[str, str | None]:
        """What the stream got since `token` (one line per event), and the token to go on from. A stream that does
        not exist yet (the container has not started) is empty."""
        from botocore.exceptions import ClientError

        def blocking() -> tuple[str, str | None]:
            logs, lines, at = self._client("logs"), [], token
            while True:
                args = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
                try:
                    answer = logs.get_log_events(**args, **({"nextToken": at} if at else {}))
                except ClientError as err:
                    if error_code(err) == "ResourceNotFoundException":
                        return "", token
                    raise
                lines += [event["message"] + "\n" for event in answer.get("events", [])]
                if not answer.get("events") or answer.get("nextForwardToken") in (None, at):
                    return "".join(lines), answer.get("nextForwardToken", at)
                at = answer["nextForwardToken"]

        return await asyncio.to_thread(blocking)

    def poll_failed(self, err: Exception) -> float:
        """Throttled, the network, expired keys: build the session again before the next poll."""
        self.forget_session()
        return super().poll_failed(err)

    # --------------------------------------------------------------------------- health

    def describe(self) -> dict[str, Any]:
        problem = self.problem() or self.last_error
        shown = {
            **super().describe(),
            "auth": f"profile {self.profile}" if self.profile else f"credential {self.credential or '(none)'}",
            "region": self.region_name or "(from the credential or profile)",
            "s3_prefix": self.s3_prefix,
            "sse": self.sse,
            "healthy": not problem,
        }
        if self.endpoint_url:
            shown["endpoint_url"] = self.endpoint_url
        return {**shown, "error": problem} if problem else shown

    async def reach(self) -> str | None:
        """List the prefix (the engine needs s3:ListBucket on it to clean up)."""
        await self.call("s3", "list_objects_v2", Bucket=self.bucket, Prefix=self.s3_key(""), MaxKeys=1)
        return None


def credential_session(fields: dict[str, Any], region: str = "") -> Any:
    """A boto3 session from an `aws` credential's fields (never the machine's own credentials)."""
    import boto3

    return boto3.Session(
        aws_access_key_id=fields["access_key_id"],
        aws_secret_access_key=fields["secret_access_key"],
        aws_session_token=fields.get("session_token") or None,
        region_name=region or fields.get("region") or None,
    )


def error_code(err: BaseException) -> str:
    """The AWS error code of a botocore ClientError ("" for any other exception)."""
    return str(getattr(err, "response", {}).get("Error", {}).get("Code", ""))

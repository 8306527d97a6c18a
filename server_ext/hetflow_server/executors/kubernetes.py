"""`kubernetes`: tasks as `batch/v1` Jobs, through the official `kubernetes` client (blocking: called off the loop).

A launch (the ready tasks with the same options) is one Job: a plain one for one task, else an Indexed Job with a
completion per task (`JOB_COMPLETION_INDEX` picks the task). The jobs and the runner travel in a Secret mounted into
the pod, owned by the Job so that it goes with it; no credential of the engine's is in either. What a task prints is
its pod's log, followed live (`follow=true`); its outcome is the log's last line (runner.run_pod): the engine needs
no storage of the cluster's, and reads only the log it streams anyway. One watch on the namespace's hetflow pods
brings their changes at once (one list of pods and Jobs per poll is the fallback); a pod that ends without an
outcome says why in one line (OOMKilled, ImagePullBackOff, Evicted, DeadlineExceeded). Cancel deletes the Job
(propagation Background: its pods and Secret go too), or, for one task of a pack, its pod. A restarted engine finds
its pods again by the handle's Job name and index.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from traitlets import Dict, Float, Int, Unicode

from .. import runner
from ..models import Option, option_table, parse_count, parse_seconds
from ..protocol import AccessError
from ..shipping import RUNNER_SOURCE, LaunchError, Outcome, checked, envelope, inlined, parse_done, pickled
from .aws import credential_session
from .base import Job
from .blobs import slimmed
from .polled import Followed, Life, PolledExecutor, Saw, by_options, ends_with

MOUNT = "/var/run/hetflow"  # where the pod finds its Secret
SECRET_LIMIT = 1 << 20  # bytes a Secret may hold (etcd's limit)
MANAGED = {"app.kubernetes.io/managed-by": "hetflow"}
WAITING_FAILURES = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError"}


def _pairs(text: str) -> str:
    """key=value,key=value (node labels)."""
    for pair in text.split(","):
        key, equals, value = pair.partition("=")
        if not equals or not re.fullmatch(r"[A-Za-z0-9./_-]+", key) or not re.fullmatch(r"[A-Za-z0-9._-]*", value):
            raise ValueError("key=value,key=value")
    return text


def _tolerations(text: str) -> str:
    found = json.loads(text)
    if not isinstance(found, list) or not all(isinstance(t, dict) for t in found):
        raise ValueError("a JSON list of tolerations")
    return text


def _policy(text: str) -> str:
    if text not in ("Always", "IfNotPresent", "Never"):
        raise ValueError("Always, IfNotPresent or Never")
    return text


def _quantity(text: str) -> str:
    if not re.fullmatch(r"\d+(\.\d+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?", text):
        raise ValueError("a Kubernetes quantity: 500m, 2, 512Mi, 4Gi")
    return text


@dataclass
class PodJob(Followed):
    """job_id is the Job's name; index the task's completion index in it (0 for a plain Job)."""

    index: int = 0
    pod: str = ""
    said: str = ""  # the outcome line, once the log brought it
    failure: str = ""  # why the pod ended, in one line, when it ended without one
    follower: threading.Thread | None = field(default=None, repr=False)

    @property
    def handle(self) -> dict[str, Any]:
        shown = {"job_id": self.job_id, "index": self.index}
        return {**shown, "pod": self.pod} if self.pod else shown


class KubernetesExecutor(PolledExecutor[PodJob]):
    """Each launch is a Kubernetes Job in `namespace`, running `image` (Python and cloudpickle of the engine's
    major). `timeout=` becomes the Job's `activeDeadlineSeconds` for a task alone (and the engine's own timer in a
    pack); `retries=` are hetflow's (the Job's `backoffLimit` is 0)."""

    kind = "kubernetes"
    options = option_table(
        Option("cpu", _quantity, "CPU request and limit", "2"),
        Option("memory", _quantity, "memory request and limit", "4Gi"),
        Option("gpus", parse_count, "nvidia.com/gpu limit", "1"),
        Option("node_selector", _pairs, "node labels the pod needs", "pool=gpu"),
        Option(
            "tolerations", _tolerations, "the pod's tolerations, as JSON", """'[{"key":"gpu","operator":"Exists"}]'"""
        ),
        Option("image_pull_policy", _policy, "when the image is pulled", "IfNotPresent"),
        Option("ttl_seconds_after_finished", parse_seconds, "seconds a finished Job stays", "600"),
    )
    namespace = Unicode("default", help="Namespace the Jobs, pods and Secrets go to.")
    image = Unicode("", help="Image the tasks run in: Python of the engine's minor and cloudpickle of its major.")
    python = Unicode("python3", help="Python in the image.")
    service_account = Unicode("", help="Service account of the pods (empty: the namespace's default).")
    kubeconfig = Unicode("", help="Path of a kubeconfig file; empty: the credential's, else in-cluster config.")
    credential = Unicode("", help="Name of a `kubeconfig` credential holding a kubeconfig (instead of a file).")
    context = Unicode("", help="Context of the kubeconfig to use (empty: its current context).")
    env = Dict(
        value_trait=Unicode(), help="Environment of the pods (e.g. AWS_REGION); never secrets: the manifest shows it."
    )
    s3_prefix = Unicode(
        "",
        help="s3://bucket/prefix for blobs: the payload and values of blob_min bytes or more go there, each once, and "
        "the pods read them with their own role (IRSA, boto3's chain); empty: everything in the Job's Secret (1 MiB).",
    )
    s3_credential = Unicode("", help="Name of an `aws` credential the engine writes the blobs with.")
    s3_endpoint_url = Unicode("", help="An S3-compatible endpoint for the engine's writes (tests use moto).")
    blob_min = Int(64 * 1024, help="Bytes from which a value goes to s3_prefix as a blob.")

    poll_interval = Float(5.0, help="Seconds between two lists of the pods (the watch brings changes at once).")

    def __init__(self, name: str, reporter: Any, spool: Any, **settings: Any):
        super().__init__(name, reporter, spool, **settings)
        self._api: Any = None
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._closed = threading.Event()

    # --------------------------------------------------------------------------- the API

    def _client(self) -> Any:
        from kubernetes import client, config

        with self._lock:
            if self._api is None:
                configuration = client.Configuration()
                context = self.context or None
                if self.credential:
                    import yaml

                    secret = self.credentials(self.credential)
                    if secret["kind"] != "kubeconfig":
                        raise AccessError(f"credential {self.credential!r} is a {secret['kind']}, not a kubeconfig")
                    text = secret["fields"]["kubeconfig"]
                    config.load_kube_config_from_dict(yaml.safe_load(text), context, client_configuration=configuration)
                elif self.kubeconfig:
                    config.load_kube_config(self.kubeconfig, context, client_configuration=configuration)
                else:
                    config.load_incluster_config(client_configuration=configuration)
                self._api = client.ApiClient(configuration)
            return self._api

    def _blocking(self, api: str, method: str, **kwargs: Any) -> Any:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        apis = {"core": client.CoreV1Api, "batch": client.BatchV1Api}
        try:
            return getattr(apis[api](self._client()), method)(**kwargs)
        except ApiException as err:
            if err.status in (401, 403):
                raise AccessError(f"the Kubernetes API refused {method}: {_said(err)}") from None
            raise LaunchError(f"Kubernetes answered {method} with {err.status}: {_said(err)}") from None

    async def call(self, api: str, method: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self._blocking, api, method, namespace=self.namespace, **kwargs)

    # --------------------------------------------------------------------------- the polled-job hooks

    def groups(self, jobs: list[Job]) -> list[list[Job]]:
        return by_options(jobs)

    async def launch(self, jobs: list[Job]) -> list[PodJob | Exception]:
        """The Job, then its Secret (owned by it: deleting the Job deletes the Secret); its pods start once the
        Secret is there."""
        if not self.image:
            raise AccessError(f"executor {self.name!r}: set image= (Python {_python()} with cloudpickle)")
        name = f"hetflow-{uuid.uuid4().hex[:12]}"
        shipped = await self._blobbed(jobs) if self.s3_prefix else [envelope(job, inlined(job)) for job in jobs]
        files = {f"job-{n}": pickled(one) for n, one in enumerate(shipped)}
        files["runner.py"] = RUNNER_SOURCE
        size = sum(map(len, files.values()))
        if size > SECRET_LIMIT * 3 // 4:  # base64 in the Secret
            raise LaunchError(
                f"the tasks' inputs are {size} bytes: a Kubernetes Secret holds at most 1 MiB; set s3_prefix= (the "
                "blobs go there, read by the pods with their own role) or pass large data by a path the pods read"
            )
        made = await self.call("batch", "create_namespaced_job", body=self.job_manifest(name, jobs))
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": made.metadata.uid}
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": MANAGED, "ownerReferences": [{**owner, "blockOwnerDeletion": True}]},
            "type": "Opaque",
            "data": {key: base64.b64encode(data).decode() for key, data in files.items()},
        }
        await self.call("core", "create_namespaced_secret", body=secret)
        return [PodJob(job.task_id, name, index=n) for n, job in enumerate(jobs)]

    async def _blobbed(self, jobs: list[Job]) -> list[dict[str, Any]]:
        """The jobs' envelopes with the payload and large values as blobs under s3_prefix/blobs/SHA256, those not
        there yet put (one HEAD each, at once)."""
        bucket, _, prefix = self.s3_prefix.removeprefix("s3://").partition("/")
        folder = f"{prefix.strip('/')}/blobs" if prefix.strip("/") else "blobs"
        slim = [slimmed(job, folder, self.blob_min or 1 << 62, self.name, payload_apart=True) for job in jobs]
        blobs = {digest: data for one in slim for digest, data in one.blobs.items()}
        s3 = await asyncio.to_thread(self._s3)

        def put_missing(digest: str, data: bytes) -> None:
            from botocore.exceptions import ClientError

            try:
                s3.head_object(Bucket=bucket, Key=f"{folder}/{digest}")
            except ClientError:
                s3.put_object(Bucket=bucket, Key=f"{folder}/{digest}", Body=data, ServerSideEncryption="AES256")

        await asyncio.gather(*(asyncio.to_thread(put_missing, d, data) for d, data in blobs.items()))
        return [{**one.envelope, "blob_bucket": bucket} for one in slim]

    def _s3(self) -> Any:
        if not self.s3_credential:
            raise AccessError(f"executor {self.name!r}: s3_prefix needs s3_credential= (an aws credential)")
        session = credential_session(self.credentials(self.s3_credential)["fields"])
        return session.client("s3", endpoint_url=self.s3_endpoint_url or None)

    def job_manifest(self, name: str, jobs: list[Job]) -> dict[str, Any]:
        options = jobs[0].options
        limits: dict[str, str] = {key: str(options[key]) for key in ("cpu", "memory") if key in options}
        if "gpus" in options:
            limits["nvidia.com/gpu"] = str(options["gpus"])
        container: dict[str, Any] = {
            "name": "task",
            "image": self.image,
            "command": [self.python, f"{MOUNT}/runner.py", "pod", MOUNT],
            "volumeMounts": [{"name": "hetflow", "mountPath": MOUNT, "readOnly": True}],
        }
        if self.env:
            container["env"] = [{"name": key, "value": value} for key, value in self.env.items()]
        if limits:
            container["resources"] = {"limits": limits, "requests": dict(limits)}
        if "image_pull_policy" in options:
            container["imagePullPolicy"] = options["image_pull_policy"]
        pod: dict[str, Any] = {
            "restartPolicy": "Never",
            "containers": [container],
            "volumes": [{"name": "hetflow", "secret": {"secretName": name, "defaultMode": 0o400}}],
        }
        if self.service_account:
            pod["serviceAccountName"] = self.service_account
        if "node_selector" in options:
            pod["nodeSelector"] = dict(pair.split("=", 1) for pair in options["node_selector"].split(","))
        if "tolerations" in options:
            pod["tolerations"] = json.loads(options["tolerations"])
        labels = {**MANAGED, "hetflow/job": name}
        spec: dict[str, Any] = {
            "template": {"metadata": {"labels": labels}, "spec": pod},
            "ttlSecondsAfterFinished": int(options.get("ttl_seconds_after_finished", 3600)),
        }
        if len(jobs) > 1:  # each index fails alone: one failing element leaves the others running
            spec.update(completions=len(jobs), parallelism=len(jobs), completionMode="Indexed", backoffLimitPerIndex=0)
        else:
            spec["backoffLimit"] = 0
            if jobs[0].timeout:
                spec["activeDeadlineSeconds"] = max(1, round(jobs[0].timeout))
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": labels}, "spec": spec}

    async def poll(self, followed: list[PodJob]) -> dict[str, Saw]:
        """Two lists for every task: the pods of their Jobs, and the Jobs (a deadline, a Job deleted)."""
        names = ",".join(sorted({job.job_id for job in followed}))
        selector = f"app.kubernetes.io/managed-by=hetflow,hetflow/job in ({names})"
        pods = (await self.call("core", "list_namespaced_pod", label_selector=selector)).items
        listed = (await self.call("batch", "list_namespaced_job", label_selector=selector)).items
        jobs = {job.metadata.name: job for job in listed}
        by_place = {(p.metadata.labels.get("hetflow/job"), _index(p)): p for p in pods}
        said = {}
        for job in followed:
            said[job.task_id] = self._saw(job, by_place.get((job.job_id, job.index)), jobs.get(job.job_id))
            self._follow(job, said[job.task_id], asyncio.get_running_loop())
        return said

    # --------------------------------------------------------------------------- the watch

    def followed(self, job: PodJob) -> None:
        """One watch on the namespace's hetflow pods, for every task, from the first one followed."""
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, args=(asyncio.get_running_loop(),), daemon=True)
            self._watcher.start()

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Pod changes as they happen (a Watch resumes from the last resourceVersion; the list per poll stays the
        fallback, and the only word on a pod the watch missed). Runs until the executor closes: the next task is
        watched at once."""
        from kubernetes import client, watch

        stream = watch.Watch()
        while not self._closed.is_set():
            try:
                pods = client.CoreV1Api(self._client()).list_namespaced_pod
                selector = "app.kubernetes.io/managed-by=hetflow"
                for event in stream.stream(pods, namespace=self.namespace, label_selector=selector, timeout_seconds=30):
                    pod = event["object"]
                    place = (pod.metadata.labels.get("hetflow/job"), _index(pod))
                    for job in [j for j in self.jobs.copy().values() if (j.job_id, j.index) == place]:
                        gone = event["type"] == "DELETED"
                        saw = self._saw(job, None if gone else pod, None)
                        self._follow(job, saw, loop)
                        if not (gone and saw.life is Life.ENDED):  # a deleted pod: the poll asks its Job
                            asyncio.run_coroutine_threadsafe(self.look(job, saw), loop)
                    if self._closed.is_set():
                        stream.stop()
            except Exception:  # the poll goes on; the watch starts again
                self._closed.wait(self.poll_interval)

    def _saw(self, job: PodJob, pod: Any, owner: Any) -> Saw:
        if pod is None:
            if owner is None:
                job.failure = f"the Job {job.job_id} is gone (deleted outside hetflow?)"
                return Saw(Life.ENDED, log=False)
            failed = [c for c in owner.status.conditions or [] if c.type == "Failed" and c.status == "True"]
            if failed:
                job.failure = f"the Job ended {failed[0].reason}: {failed[0].message}"
                return Saw(Life.ENDED, log=False)
            return Saw(Life.WAITING, log=False)
        job.pod = pod.metadata.name
        state = (pod.status.container_statuses or [None])[0]
        waiting = state.state.waiting if state is not None and state.state is not None else None
        if waiting is not None and waiting.reason in WAITING_FAILURES:
            job.failure = f"{waiting.reason}: {waiting.message or self.image}"
            return Saw(Life.ENDED, log=False)
        if pod.status.phase in ("Succeeded", "Failed"):
            ended = state.state.terminated if state is not None and state.state is not None else None
            reason = pod.status.reason or (ended.reason if ended is not None else None) or pod.status.phase
            code = f", exit code {ended.exit_code}" if ended is not None else ""
            message = f": {pod.status.message}" if pod.status.message else ""
            job.failure = f"the pod {job.pod} ended {reason}{code}{message}"
            return Saw(Life.ENDED, started=True, log=False, outcome=bool(job.said) or None)
        if pod.status.phase == "Running":
            return Saw(Life.RUNNING, started=True, log=False, outcome=bool(job.said))
        return Saw(Life.WAITING, log=False)

    # --------------------------------------------------------------------------- the log

    def _follow(self, job: PodJob, saw: Saw, loop: asyncio.AbstractEventLoop) -> None:
        """The pod's log, followed in a thread of its own once it runs; each chunk reported on the loop."""
        if job.follower is not None or not saw.started:
            return
        job.follower = threading.Thread(target=self._read_log, args=(job, loop), daemon=True)
        job.follower.start()

    def _read_log(self, job: PodJob, loop: asyncio.AbstractEventLoop) -> None:
        try:
            stream = self._blocking(
                "core",
                "read_namespaced_pod_log",
                namespace=self.namespace,
                name=job.pod,
                follow=True,
                _preload_content=False,
            )
            pending = b""
            for chunk in stream.stream(1 << 16):
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                self._lines(job, lines, loop)
            self._lines(job, [pending] if pending else [], loop)
        except Exception:  # the poll reads the whole log once the pod ended
            return

    def _lines(self, job: PodJob, lines: list[bytes], loop: asyncio.AbstractEventLoop) -> None:
        text = []
        for line in lines:
            decoded = line.decode(errors="replace")
            if decoded.startswith(runner.OUTCOME_MARK):
                job.said = decoded
                break
            text.append(decoded + "\n")
        if text:
            loop.call_soon_threadsafe(self.report_log, job, "".join(text))
        if job.said:
            saw = Saw(Life.RUNNING, started=True, log=False, outcome=True)
            asyncio.run_coroutine_threadsafe(self.look(job, saw), loop)

    async def read_outcome(self, job: PodJob) -> Outcome | None:
        if not job.said and job.pod:  # ended before the follower read to the end: the whole log, once
            log = (await self.call("core", "read_namespaced_pod_log", name=job.pod, _preload_content=False)).data
            lines = log.decode(errors="replace").splitlines()
            job.said = next((line for line in lines if line.startswith(runner.OUTCOME_MARK)), "")
        if not job.said:
            return None
        said = json.loads(base64.b64decode(job.said[len(runner.OUTCOME_MARK) :]))
        where = f"the log of pod {job.pod}"
        decided = parse_done(said["done"].encode(), where)
        if isinstance(decided, Outcome):
            return decided
        result = base64.b64decode(said["result"]) if said.get("result") else None
        return checked(result, decided, where)

    async def why_ended(self, job: PodJob, saw: Saw) -> str:
        return (job.failure or f"the pod of {job.job_id} ended without an outcome") + ends_with(job.tail)

    # --------------------------------------------------------------------------- control

    async def cancel_job(self, job: PodJob) -> None:
        """Its pod, if others of its Job still run; else the Job, with its pods and Secret."""
        others = [j for j in self.jobs.values() if j.job_id == job.job_id and j is not job]
        if others and job.pod:
            await self._gone_ok("delete_namespaced_pod", name=job.pod, api="core")
        elif not others:
            await self._gone_ok("delete_namespaced_job", name=job.job_id, propagation_policy="Background")

    async def _gone_ok(self, method: str, api: str = "batch", **kwargs: Any) -> None:
        try:
            await self.call(api, method, **kwargs)
        except LaunchError as err:
            if "with 404" not in str(err):
                raise

    async def cleanup(self, job: PodJob, ok: bool) -> None:
        """A Job whose tasks all completed goes at once; one with a failure stays for its ttl, for a look."""
        if ok and not any(j.job_id == job.job_id for j in self.jobs.values()):
            await self._gone_ok("delete_namespaced_job", name=job.job_id, propagation_policy="Background")

    def restore(self, task_id: str, handle: dict[str, Any]) -> PodJob | None:
        if not handle.get("job_id"):
            return None
        return PodJob(task_id, str(handle["job_id"]), index=int(handle.get("index", 0)), pod=str(handle.get("pod", "")))

    async def reach(self) -> str | None:
        await self.call("core", "list_namespaced_pod", limit=1)
        return None

    async def close(self) -> None:
        self._closed.set()
        await super().close()

    def describe(self) -> dict[str, Any]:
        where = self.kubeconfig or (f"credential {self.credential}" if self.credential else "in-cluster")
        shown = {"namespace": self.namespace, "context": self.context or "(current)", "config": where}
        return {**super().describe(), **shown, "image": self.image}


def _index(pod: Any) -> int:
    found = (pod.metadata.annotations or {}).get("batch.kubernetes.io/job-completion-index")
    return int(found or 0)


def _said(err: Any) -> str:
    try:
        return str(json.loads(err.body)["message"])
    except (ValueError, TypeError, KeyError):
        return str(err.reason)


def _python() -> str:
    import sys

    return f"{sys.version_info[0]}.{sys.version_info[1]}"

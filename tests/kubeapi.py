"""A Kubernetes API server double for the kubernetes executor's tests, on 127.0.0.1: no real kube-apiserver can be
installed here (none on PyPI, Debian or npm; no container runtime).

It speaks the REST paths and JSON the official client sends (`/apis/batch/v1/namespaces/NS/jobs`,
`/api/v1/namespaces/NS/pods`, `.../pods/NAME/log?follow=true`, `/api/v1/namespaces/NS/secrets`), refuses a wrong
bearer token (401), validates every manifest it receives against Kubernetes' published OpenAPI schema for that type
(kubernetes-validate, strict: unknown fields refused) and answers 422 as the real server does, and plays the job
controller and the kubelet: each pod of a Job (one per completion index) really runs its command as a local process,
with the pod's environment and its Secret volume written to a directory that stands for the mount, its output as the
pod's log. It enforces `activeDeadlineSeconds` (DeadlineExceeded), a memory limit (a process over it is killed:
OOMKilled, exit 137), garbage-collects a deleted Job's pods and the Secrets it owns, and treats an image whose tag is
`missing` as one that cannot be pulled (ImagePullBackOff).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import tornado.web

TOKEN = "hetflow-test-token"
VERSION = "1.36"
UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "k": 10**3, "M": 10**6, "G": 10**9}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _bytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"([\d.]+)([A-Za-z]*)", quantity).groups()  # type: ignore[union-attr]
    return int(float(number) * UNITS.get(unit, 1))


def _matches(labels: dict[str, str], selector: str) -> bool:
    """`a=b`, `a in (x,y)`, comma-separated (what the executor sends)."""
    for term in re.findall(r"[^,(]+(?:\([^)]*\))?", selector or ""):
        term = term.strip()
        found = re.fullmatch(r"(\S+)\s+in\s+\(([^)]*)\)", term)
        if found:
            if labels.get(found.group(1)) not in [v.strip() for v in found.group(2).split(",")]:
                return False
        elif term:
            key, _, value = term.partition("=")
            if labels.get(key) != value:
                return False
    return True


class Pod:
    """A pod of a Job and the process that plays its container."""

    def __init__(self, cluster: KubeAPI, job: dict[str, Any], index: int | None):
        self.cluster, self.job, self.index = cluster, job, index
        name = job["metadata"]["name"]
        self.name = f"{name}-{index or 0}-{uuid.uuid4().hex[:5]}"
        template = job["spec"]["template"]
        labels = {**template["metadata"].get("labels", {}), "job-name": name}
        notes = {}
        if index is not None:
            labels["batch.kubernetes.io/job-completion-index"] = notes["batch.kubernetes.io/job-completion-index"] = (
                str(index)
            )
        self.spec = template["spec"]
        self.meta = {
            "name": self.name,
            "namespace": job["metadata"]["namespace"],
            "labels": labels,
            "annotations": notes,
        }
        self.phase, self.reason, self.message = "Pending", None, None
        self.version = 0
        self.state: dict[str, Any] = {"waiting": {"reason": "ContainerCreating"}}
        self.process: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkstemp(prefix="pod-log-")[1])
        self.deleted = False
        cluster.changed(self, "ADDED")
        threading.Thread(target=self._run, daemon=True).start()

    def to_json(self) -> dict[str, Any]:
        self.meta["resourceVersion"] = str(self.version)
        container = self.spec["containers"][0]
        status = {
            "name": container["name"],
            "image": container["image"],
            "imageID": "",
            "ready": self.phase == "Running",
        }
        status.update(restartCount=0, state=self.state)
        shown = {"phase": self.phase, "containerStatuses": [status]}
        shown.update({k: v for k, v in (("reason", self.reason), ("message", self.message)) if v})
        return {"apiVersion": "v1", "kind": "Pod", "metadata": self.meta, "spec": self.spec, "status": shown}

    def _run(self) -> None:
        container = self.spec["containers"][0]
        if container["image"].endswith(":missing"):
            message = f'Back-off pulling image "{container["image"]}"'
            self.state = {"waiting": {"reason": "ImagePullBackOff", "message": message}}
            self.cluster.changed(self)
            return
        mount = Path(tempfile.mkdtemp(prefix="pod-mount-"))
        deadline = time.monotonic() + 10
        secret = None
        while secret is None and time.monotonic() < deadline and not self.deleted:  # the volume waits for it
            secret = self.cluster.secret(self.meta["namespace"], self.spec["volumes"][0]["secret"]["secretName"])
            time.sleep(0.02)
        if secret is None:
            return
        for key, value in secret["data"].items():
            (mount / key).write_bytes(base64.b64decode(value))
            (mount / key).chmod(0o400)
        mounted = container["volumeMounts"][0]["mountPath"]
        argv = [word.replace(mounted, str(mount)) for word in container["command"]]
        env = {**os.environ, **{e["name"]: e["value"] for e in container.get("env", [])}}
        if self.index is not None:
            env["JOB_COMPLETION_INDEX"] = str(self.index)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.phase, self.state = "Running", {"running": {"startedAt": _now()}}
        self.cluster.changed(self)
        limit = container.get("resources", {}).get("limits", {}).get("memory")
        killed = None
        while self.process.poll() is None:
            if limit and _rss(self.process.pid) > _bytes(limit):
                self.process.kill()
                killed = "OOMKilled"
            time.sleep(0.02)
        code = self.process.returncode
        code = 128 - code if code < 0 else code  # as a container runtime reports a signal
        reason = killed or ("Completed" if code == 0 else "Error")
        self.state = {"terminated": {"exitCode": code, "reason": reason, "startedAt": _now(), "finishedAt": _now()}}
        if not self.deleted:
            self.phase = "Succeeded" if code == 0 else "Failed"
            self.cluster.pod_ended(self)
        self.cluster.changed(self, "DELETED" if self.deleted else "MODIFIED")

    def stop(self, reason: str | None = None, message: str | None = None) -> None:
        self.reason, self.message = reason, message
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)


def _rss(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(found.group(1)) * 1024 if found else 0


class KubeAPI:
    """The API server's state: Jobs, pods and Secrets by namespace and name, and the requests it refused."""

    def __init__(self) -> None:
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], Pod] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.refused: list[str] = []  # manifests that failed schema validation, with why
        self.received: list[dict[str, Any]] = []  # every manifest created, as sent
        self.lock = threading.RLock()
        self.url = ""
        self.version = 1  # resourceVersion: one counter for every change
        self.events: list[tuple[int, str, dict[str, Any]]] = []  # pod watch events (version, type, pod)
        self.watches = 0  # watch requests served
        threading.Thread(target=self._deadlines, daemon=True).start()

    # the job controller

    def create_job(self, namespace: str, job: dict[str, Any]) -> dict[str, Any]:
        job["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=_now())
        job["metadata"]["resourceVersion"] = str(int(time.time() * 1000))
        spec = job["spec"]
        job["status"] = {"active": 0, "startTime": _now(), "_started": time.monotonic()}
        indexed = spec.get("completionMode") == "Indexed"
        with self.lock:
            self.jobs[(namespace, job["metadata"]["name"])] = job
            for index in range(spec.get("completions", 1)):
                pod = Pod(self, job, index if indexed else None)
                self.pods[(namespace, pod.name)] = pod
        return self.job_json(job)

    def job_json(self, job: dict[str, Any]) -> dict[str, Any]:
        status = {k: v for k, v in job["status"].items() if not k.startswith("_")}
        with self.lock:
            mine = [p for p in self.pods.values() if p.job is job]
        status["active"] = sum(p.phase in ("Pending", "Running") for p in mine)
        status["succeeded"] = sum(p.phase == "Succeeded" for p in mine)
        status["failed"] = sum(p.phase == "Failed" for p in mine)
        if status["succeeded"] == job["spec"].get("completions", 1) and "conditions" not in status:
            status["conditions"] = [{"type": "Complete", "status": "True", "lastTransitionTime": _now()}]
        return {**job, "status": status}

    def pod_ended(self, pod: Pod) -> None:
        job = pod.job
        if pod.phase == "Failed" and job["spec"].get("backoffLimit") == 0 and pod.index is None:
            condition = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}
            job["status"]["conditions"] = [{**condition, "message": "Job has reached the specified backoff limit"}]

    def _deadlines(self) -> None:
        while True:
            time.sleep(0.05)
            with self.lock:
                for job in self.jobs.values():
                    deadline = job["spec"].get("activeDeadlineSeconds")
                    if not deadline or "conditions" in job["status"]:
                        continue
                    if time.monotonic() - job["status"]["_started"] > deadline:
                        message = "Job was active longer than specified deadline"
                        job["status"]["conditions"] = [
                            {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": message}
                        ]
                        for pod in self.pods.values():
                            if pod.job is job and pod.phase in ("Pending", "Running"):
                                pod.phase = "Failed"
                                pod.stop("DeadlineExceeded", message)

    def delete_job(self, namespace: str, name: str) -> bool:
        with self.lock:
            job = self.jobs.pop((namespace, name), None)
            if job is None:
                return False
            for key, pod in list(self.pods.items()):
                if pod.job is job:
                    pod.deleted = True
                    pod.stop()
                    del self.pods[key]
            uid = job["metadata"]["uid"]
            for key, secret in list(self.secrets.items()):  # the garbage collector: what the Job owned
                if any(o["uid"] == uid for o in secret["metadata"].get("ownerReferences", [])):
                    del self.secrets[key]
        return True

    def delete_pod(self, namespace: str, name: str) -> bool:
        with self.lock:
            pod = self.pods.pop((namespace, name), None)
        if pod is None:
            return False
        pod.deleted = True
        pod.stop()
        return True

    def changed(self, pod: Pod, kind: str = "MODIFIED") -> None:
        with self.lock:
            self.version += 1
            pod.version = self.version
            self.events.append((self.version, kind, pod.to_json()))

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            return self.secrets.get((namespace, name))

    def live_processes(self) -> list[int]:
        with self.lock:
            return [p.process.pid for p in self.pods.values() if p.process is not None and p.process.poll() is None]


class _Handler(tornado.web.RequestHandler):
    def initialize(self, api: KubeAPI) -> None:
        self.api = api

    def prepare(self) -> None:
        if self.request.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.answer(401, _status(401, "Unauthorized", "Unauthorized"))
            self.finish()

    def answer(self, code: int, body: dict[str, Any]) -> None:
        self.set_status(code)
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(body))

    def manifest(self, kind: str) -> dict[str, Any] | None:
        body = json.loads(self.request.body)
        try:
            kubernetes_validate.validate(body, VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            self.api.refused.append(f"{kind}: {err.message}")
            self.answer(422, _status(422, "Invalid", f"{kind} is invalid: {err.message}"))
            return None
        self.api.received.append(body)
        return body


class Jobs(_Handler):
    def post(self, namespace: str) -> None:
        job = self.manifest("Job")
        if job is not None:
            self.answer(201, self.api.create_job(namespace, job))

    def get(self, namespace: str) -> None:
        selector = self.get_query_argument("labelSelector", "")
        with self.api.lock:
            found = [
                j
                for (ns, _), j in self.api.jobs.items()
                if ns == namespace and _matches(j["metadata"]["labels"], selector)
            ]
        items = [self.api.job_json(job) for job in found]
        self.answer(200, {"apiVersion": "batch/v1", "kind": "JobList", "metadata": {}, "items": items})


class OneJob(_Handler):
    def delete(self, namespace: str, name: str) -> None:
        if self.api.delete_job(namespace, name):
            self.answer(200, _status(200, "Success", f"job {name} deleted"))
        else:
            self.answer(404, _status(404, "NotFound", f'jobs.batch "{name}" not found'))


class Pods(_Handler):
    async def get(self, namespace: str) -> None:
        selector = self.get_query_argument("labelSelector", "")
        if self.get_query_argument("watch", "false").lower() == "true":
            await self.watch(namespace, selector)
            return
        with self.api.lock:
            found = [
                p for (ns, _), p in self.api.pods.items() if ns == namespace and _matches(p.meta["labels"], selector)
            ]
        listed = {"resourceVersion": str(self.api.version)}
        self.answer(
            200, {"apiVersion": "v1", "kind": "PodList", "metadata": listed, "items": [p.to_json() for p in found]}
        )

    async def watch(self, namespace: str, selector: str) -> None:
        """Events after `resourceVersion`, one JSON line each, until `timeoutSeconds`."""
        self.api.watches += 1
        since = int(self.get_query_argument("resourceVersion", "0") or 0) or self.api.version
        ends = time.monotonic() + float(self.get_query_argument("timeoutSeconds", "60"))
        self.set_header("Content-Type", "application/json")
        while time.monotonic() < ends:
            with self.api.lock:
                fresh = [e for e in self.api.events if e[0] > since]
            for version, kind, pod in fresh:
                since = version
                if pod["metadata"]["namespace"] == namespace and _matches(pod["metadata"]["labels"], selector):
                    self.write(json.dumps({"type": kind, "object": pod}) + "\n")
            if fresh:
                await self.flush()
            await asyncio.sleep(0.01)


class OnePod(_Handler):
    def delete(self, namespace: str, name: str) -> None:
        if self.api.delete_pod(namespace, name):
            self.answer(200, _status(200, "Success", f"pod {name} deleted"))
        else:
            self.answer(404, _status(404, "NotFound", f'pods "{name}" not found'))


class PodLog(_Handler):
    async def get(self, namespace: str, name: str) -> None:
        with self.api.lock:
            pod = self.api.pods.get((namespace, name))
        if pod is None:
            self.answer(404, _status(404, "NotFound", f'pods "{name}" not found'))
            return
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        follow = self.get_query_argument("follow", "false").lower() == "true"
        offset = 0
        while True:
            data = pod.log.read_bytes()[offset:]
            offset += len(data)
            ended = pod.process is not None and pod.process.poll() is not None
            if data:
                self.write(data)
                await self.flush()
            if not follow or (ended and not data) or pod.deleted:
                return
            await asyncio.sleep(0.02)


class Secrets(_Handler):
    def post(self, namespace: str) -> None:
        secret = self.manifest("Secret")
        if secret is not None:
            secret["metadata"]["namespace"] = namespace
            with self.api.lock:
                self.api.secrets[(namespace, secret["metadata"]["name"])] = secret
            self.answer(201, secret)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure" if code >= 400 else "Success",
        "code": code,
        "reason": reason,
        "message": message,
    }


@contextlib.contextmanager
def kube_api(root: Path) -> Iterator[tuple[KubeAPI, Path]]:
    """The double on a free loopback port, and a kubeconfig (0600) that reaches it with the right token."""
    api = KubeAPI()
    ns = r"/namespaces/([a-z0-9-]+)"
    app = tornado.web.Application(
        [
            (rf"/apis/batch/v1{ns}/jobs", Jobs, {"api": api}),
            (rf"/apis/batch/v1{ns}/jobs/([a-z0-9.-]+)", OneJob, {"api": api}),
            (rf"/api/v1{ns}/pods", Pods, {"api": api}),
            (rf"/api/v1{ns}/pods/([a-z0-9.-]+)", OnePod, {"api": api}),
            (rf"/api/v1{ns}/pods/([a-z0-9.-]+)/log", PodLog, {"api": api}),
            (rf"/api/v1{ns}/secrets", Secrets, {"api": api}),
        ]
    )
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    servers: list[Any] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        servers.append(app.listen(0, address="127.0.0.1"))
        ready.set()
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    ready.wait(10)
    port = next(iter(servers[0]._sockets.values())).getsockname()[1]
    api.url = f"http://127.0.0.1:{port}"
    config = root / "kubeconfig"
    config.write_text(kubeconfig(api.url, TOKEN))
    config.chmod(0o600)
    try:
        yield api, config
    finally:
        for pid in api.live_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        loop.call_soon_threadsafe(loop.stop)


def kubeconfig(url: str, token: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "double", "cluster": {"server": url}}],
            "users": [{"name": "tester", "user": {"token": token}}],
            "contexts": [{"name": "double", "context": {"cluster": "double", "user": "tester"}}],
            "current-context": "double",
        }
    )

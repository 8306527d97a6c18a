"""How the engine reaches a machine: local commands and files, or one pooled SSH connection per host.

SSH: one authenticated paramiko connection serves every task on a host (MFA and sshd's MaxStartups make a
connection per task wrong); concurrent channels stay under sshd's MaxSessions; a dropped connection is opened again
with backoff, transparently for idempotent operations. Host keys are verified against known_hosts: an unknown or
changed key is an error unless accepting new keys was configured explicitly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from .protocol import AccessError, AnswerRefused, TransportError

T = TypeVar("T")

RECONNECT_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)


class NoSuchPath(LookupError):
    """A file or directory to write or rename is not there (any more): final for that path, not a dropped link."""


@dataclass
class Completed:
    code: int
    out: str
    err: str


class Stream:
    """A long-lived command: lines sent to its stdin, lines read from its stdout (None once it ended)."""

    def __init__(self, send: Callable[[bytes], Any], stop: Callable[[], Any]):
        self.lines: asyncio.Queue[str | None] = asyncio.Queue()
        self.reader: asyncio.Task[None] | None = None  # what fills `lines`, where it is a task of the loop
        self._send, self._stop = send, stop

    def send(self, line: str) -> None:
        self._send((line + "\n").encode())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stop()


class Transport(Protocol):
    description: str

    async def run(self, command: str, retry: bool = True) -> Completed: ...
    async def write(self, path: str, data: bytes) -> None: ...
    async def rename(self, source: str, target: str) -> None: ...
    async def mkdir(self, path: str) -> None: ...
    async def read(self, path: str, offset: int = 0) -> bytes | None: ...
    async def stream(self, command: str) -> Stream: ...
    async def close(self) -> None: ...


class LocalTransport:
    """The engine runs where the jobs are (a JupyterHub on the login node): plain commands, plain files."""

    description = "local commands"

    async def run(self, command: str, retry: bool = True) -> Completed:
        proc = await asyncio.create_subprocess_shell(
            command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
        )
        try:
            out, err = await proc.communicate()
        except asyncio.CancelledError:  # the engine closes: the command ends with it, reaped on the loop
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
            raise
        return Completed(proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))

    async def write(self, path: str, data: bytes) -> None:
        def write() -> None:
            with _missing(path):
                fd = os.open(os.path.expanduser(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)

        await asyncio.to_thread(write)

    async def rename(self, source: str, target: str) -> None:
        def rename() -> None:
            with _missing(source):
                os.rename(os.path.expanduser(source), os.path.expanduser(target))

        await asyncio.to_thread(rename)

    async def mkdir(self, path: str) -> None:
        await asyncio.to_thread(os.makedirs, os.path.expanduser(path), 0o700, True)

    async def stream(self, command: str) -> Stream:
        proc = await asyncio.create_subprocess_shell(
            command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        assert proc.stdin is not None and proc.stdout is not None
        stream, stdout = Stream(proc.stdin.write, proc.stdin.close), proc.stdout  # its stdin closed: it ends

        async def pump() -> None:
            while line := await stdout.readline():
                stream.lines.put_nowait(line.decode(errors="replace").rstrip("\n"))
            await proc.wait()  # reaped here, on the loop
            stream.lines.put_nowait(None)

        stream.reader = asyncio.get_running_loop().create_task(pump())
        return stream

    async def read(self, path: str, offset: int = 0) -> bytes | None:
        def read() -> bytes | None:
            try:
                with open(os.path.expanduser(path), "rb") as fh:
                    fh.seek(offset)
                    return fh.read()
            except FileNotFoundError:
                return None

        return await asyncio.to_thread(read)

    async def close(self) -> None:
        pass


def load_private_key(text: str, passphrase: str | None, certificate: str = "") -> Any:
    """The credential's key, carrying its OpenSSH certificate when it has one (checked for its validity first)."""
    import paramiko

    errors = []
    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            key = kind.from_private_key(io.StringIO(text), password=passphrase or None)
            break
        except paramiko.PasswordRequiredException:
            raise AccessError("the SSH key needs a passphrase; add it to the credential") from None
        except (paramiko.SSHException, ValueError) as err:
            errors.append(str(err))
    else:
        raise AccessError(f"the credential holds no private key paramiko can read ({'; '.join(errors)})")
    if certificate.strip():
        check_certificate(certificate)
        try:
            key.load_certificate(certificate.strip())
        except (ValueError, paramiko.SSHException) as err:
            raise AccessError(f"the credential's certificate does not go with its key: {err}") from None
    return key


def check_certificate(text: str, now: float | None = None) -> None:
    """An expired certificate is refused by sshd with no reason given: say it here, with what to do."""
    from cryptography.hazmat.primitives.serialization import SSHCertificate, load_ssh_public_identity

    try:
        found = load_ssh_public_identity(text.strip().encode())
    except (ValueError, TypeError) as err:
        raise AccessError(f"the credential's certificate is not an OpenSSH certificate (*-cert.pub): {err}") from None
    if not isinstance(found, SSHCertificate):
        raise AccessError("the credential's certificate field holds a public key, not a certificate (*-cert.pub)")
    now = time.time() if now is None else now
    name = f"the SSH certificate {found.key_id.decode(errors='replace')!r}"

    def when(stamp: int) -> str:
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(stamp))

    if now >= found.valid_before:
        raise AccessError(
            f"{name} expired at {when(found.valid_before)}; get a new one from your center (e.g. sshproxy) and "
            "replace the credential's certificate"
        )
    if now < found.valid_after:
        raise AccessError(f"{name} is valid only from {when(found.valid_after)}; check this machine's clock")


# a question the server asks during login: (title, instructions, [(prompt, echo)]) -> answers
Asker = Callable[[str, str, list[tuple[str, bool]]], list[str]]


@contextlib.contextmanager
def _missing(path: str) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        raise NoSuchPath(path) from None


@contextlib.contextmanager
def _file_errors(host: str, path: str) -> Iterator[None]:
    """SFTP answers with IOError for the file itself (permission, full disk): final, unlike a dropped link."""
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as err:
        if type(err) is OSError or isinstance(err, PermissionError):  # an SFTP status, not a socket error
            raise AccessError(f"cannot use {path} on {host}: {err.strerror or err}") from None
        raise


class SSHTransport:
    def __init__(
        self,
        host: str,
        port: int = 22,
        user: str = "",
        key: dict[str, str] | None = None,
        known_hosts: str = "",
        accept_new_host_keys: bool = False,
        proxy_jump: str = "",
        max_channels: int = 8,
        keepalive: int = 30,
        connect_timeout: float = 15,
        ask: Asker | None = None,
    ):
        self.host, self.port, self.user = host, port, user or os.environ.get("USER", "")
        self.key, self.known_hosts, self.accept_new = key, os.path.expanduser(known_hosts), accept_new_host_keys
        self.proxy_jump, self.keepalive, self.connect_timeout = proxy_jump, keepalive, connect_timeout
        self.ask = ask
        self.description = f"ssh {self.user}@{host}:{port}" + (f" via {proxy_jump}" if proxy_jump else "")
        self._pool = concurrent.futures.ThreadPoolExecutor(max_channels + 1, thread_name_prefix=f"ssh-{host}")
        self._max_channels = max_channels
        self._slots: asyncio.Semaphore | None = None
        self._lock = threading.Lock()
        self._links: list[Any] = []  # paramiko Transports while connected: [target, jump host]
        self._sftp: Any = None
        self._sftp_lock = threading.Lock()
        self._refused: tuple[float, AnswerRefused] | None = None

    # ------------------------------------------------------------------ connection (in pool threads)

    def _verify_host_key(self, link: Any, host: str, port: int) -> None:
        import paramiko

        name = host if port == 22 else f"[{host}]:{port}"  # as known_hosts writes it

        known = paramiko.HostKeys()
        path = self.known_hosts or os.path.expanduser("~/.ssh/known_hosts")
        if os.path.exists(path):
            known.load(path)
        offered = link.get_remote_server_key()
        recorded = known.lookup(name) or {}
        if offered.get_name() in recorded:
            if recorded[offered.get_name()] != offered:
                raise AccessError(
                    f"the host key of {host}:{port} has CHANGED since it was recorded in {path}; refusing to "
                    "connect. If the change is expected, remove the old key from that file"
                )
            return
        if not self.accept_new or recorded:  # a known host offering another key type is not a new host
            raise AccessError(
                f"the host key of {host}:{port} is unknown (not in {path}); add it "
                f"(ssh-keyscan -p {port} {host} >> {path}) or set accept_new_host_keys=True"
            )
        known.add(name, offered.get_name(), offered)
        known.save(path)

    def _keys(self) -> list[Any]:
        """The credential's key, else the agent's keys."""
        import paramiko

        if self.key:
            fields = self.key
            return [load_private_key(fields["private_key"], fields.get("passphrase"), fields.get("certificate", ""))]
        return list(paramiko.Agent().get_keys())

    def _authenticate(self, link: Any, user: str, label: str) -> None:
        """Key first; then, if the server wants more (MFA), its questions relayed to the user."""
        import paramiko

        remaining: list[str] = []
        keys = self._keys()
        for key in keys:
            try:
                remaining = link.auth_publickey(user, key)
            except paramiko.BadAuthenticationType as err:
                remaining = list(err.allowed_types)
                break
            except paramiko.AuthenticationException:
                continue
            break
        else:
            which = "the credential's key" if self.key else f"the SSH agent's {len(keys)} key(s)"
            raise AccessError(f"{label} refused {which}; check the executor's credential")
        if link.is_authenticated():
            return
        if "keyboard-interactive" not in remaining:
            raise AccessError(
                f"{label} wants {', '.join(remaining)} after the key; hetflow answers only keys and "
                "keyboard-interactive questions (one-time codes)"
            )
        if self.ask is None:
            raise AccessError(f"{label} asks questions at login (MFA) and nobody here can answer them")
        failure: list[BaseException] = []

        def relay(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
            if not prompts:  # the server's last round says nothing and wants nothing
                return []
            try:
                return self.ask(title, instructions, prompts)  # type: ignore[misc]
            except Exception as err:  # raised below, once paramiko has given up on the empty answers
                failure.append(err)
                return [""] * len(prompts)

        # the user types the code meanwhile: the asker's own timeout and sshd's LoginGraceTime bound this wait
        link.auth_timeout = None
        try:
            link.auth_interactive(user, relay)
        except paramiko.AuthenticationException:
            if failure:
                raise AnswerRefused(f"{label} asked at login and got no answer: {failure[0]}") from None
            raise AnswerRefused(
                f"{label} refused the answer to its login question (a wrong or expired one-time code?); run the "
                "task again to be asked anew"
            ) from None

    def _open(self, host: str, port: int, user: str, sock: Any = None) -> Any:
        """One authenticated paramiko Transport (keepalive on), or an error that says what to fix."""
        import paramiko

        label = f"{user}@{host}:{port}"
        try:
            if sock is None:
                sock = socket.create_connection((host, port), self.connect_timeout)
                # small SFTP requests back to back otherwise wait for delayed ACKs: 40 ms each
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = paramiko.Transport(sock)
        except (OSError, paramiko.SSHException) as err:
            raise TransportError(f"cannot reach {label}: {err}") from None
        try:
            link.banner_timeout = link.auth_timeout = self.connect_timeout
            link.start_client(timeout=self.connect_timeout)
            self._verify_host_key(link, host, port)
            self._authenticate(link, user, label)
        except (AccessError, TransportError):
            link.close()
            raise
        except paramiko.AuthenticationException as err:
            link.close()
            raise AccessError(f"{label} refused our authentication ({err}); check the executor's credential") from None
        except (paramiko.SSHException, OSError, EOFError) as err:
            link.close()
            raise TransportError(f"{label}: {err}") from None
        link.set_keepalive(self.keepalive)
        return link

    def _connected(self) -> Any:
        waiting_since = time.monotonic()
        with self._lock:
            if self._links and self._links[0].is_active():
                return self._links[0]
            if self._refused is not None and self._refused[0] >= waiting_since:
                raise self._refused[1]  # the login this thread waited for was refused: do not ask again at once
            self._drop()
            links = []
            sock = None
            if self.proxy_jump:
                jump_user, _, rest = self.proxy_jump.rpartition("@")
                jump_host, _, jump_port = rest.partition(":")
                jump = self._open(jump_host, int(jump_port or 22), jump_user or self.user)
                links.append(jump)
                sock = jump.open_channel("direct-tcpip", (self.host, self.port), ("127.0.0.1", 0))
            try:
                target = self._open(self.host, self.port, self.user, sock)
            except BaseException as err:
                for link in links:
                    link.close()
                if isinstance(err, AnswerRefused):
                    self._refused = (time.monotonic(), err)
                raise
            self._links = [target, *links]
            return target

    def _drop(self) -> None:
        for link in self._links:
            link.close()
        self._links, self._sftp = [], None

    def _sftp_client(self) -> Any:
        link = self._connected()
        with self._sftp_lock:
            if self._sftp is None or self._sftp.sock.closed:
                import paramiko

                self._sftp = paramiko.SFTPClient.from_transport(link)
            return self._sftp

    # ------------------------------------------------------------------ operations

    async def _call(self, work: Callable[[], T], retry: bool = True) -> T:
        """Run blocking paramiko work in the pool, under the channel cap; reconnect and retry when it drops."""
        import paramiko

        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_channels)
        loop = asyncio.get_running_loop()
        delays = RECONNECT_DELAYS if retry else ()
        for delay in (*delays, None):
            try:
                async with self._slots:
                    return await loop.run_in_executor(self._pool, work)
            except (AccessError, AnswerRefused):
                raise
            except (TimeoutError, TransportError, paramiko.SSHException, EOFError, OSError) as err:
                with self._lock:
                    self._drop()
                if delay is None:
                    raise TransportError(f"{self.description}: {err or type(err).__name__}") from None
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def run(self, command: str, retry: bool = True) -> Completed:
        def work() -> Completed:
            with self._connected().open_session(timeout=self.connect_timeout) as channel:
                channel.settimeout(120)
                channel.exec_command(command)
                stdout, stderr = channel.makefile("rb"), channel.makefile_stderr("rb")
                out, err = stdout.read(), stderr.read()
                return Completed(channel.recv_exit_status(), out.decode(errors="replace"), err.decode(errors="replace"))

        return await self._call(work, retry)

    async def write(self, path: str, data: bytes) -> None:
        def work() -> None:
            sftp = self._sftp_client()
            with self._sftp_lock, _missing(path), _file_errors(self.host, path), sftp.open(path, "wb") as fh:
                fh.chmod(0o600)
                fh.write(data)

        await self._call(work)

    async def rename(self, source: str, target: str) -> None:
        """An atomic rename (SFTP posix-rename): a file written elsewhere appears whole."""

        def work() -> None:
            sftp = self._sftp_client()
            with self._sftp_lock, _missing(source), _file_errors(self.host, source):
                sftp.posix_rename(source, target)

        await self._call(work, retry=False)

    async def stream(self, command: str) -> Stream:
        """A channel of its own, beside the capped ones, read by a thread of its own (it lives as long as the
        command)."""
        loop = asyncio.get_running_loop()

        def open_channel() -> Any:
            channel = self._connected().open_session(timeout=self.connect_timeout)
            channel.exec_command(command)
            return channel

        channel = await self._call(open_channel)
        stream = Stream(channel.sendall, channel.close)

        def pump() -> None:
            buffered = b""
            try:
                while data := channel.recv(1 << 16):
                    *lines, buffered = (buffered + data).split(b"\n")
                    for line in lines:
                        loop.call_soon_threadsafe(stream.lines.put_nowait, line.decode(errors="replace"))
            except Exception:  # the link dropped: the stream ends
                pass
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                loop.call_soon_threadsafe(stream.lines.put_nowait, None)

        threading.Thread(target=pump, name=f"ssh-stream-{self.host}", daemon=True).start()
        return stream

    async def mkdir(self, path: str) -> None:
        """One directory whose parent exists (SFTP: a few ms, where a command costs a channel round trip)."""

        def work() -> None:
            sftp = self._sftp_client()
            with self._sftp_lock, _file_errors(self.host, path):
                try:
                    sftp.mkdir(path, 0o700)
                except OSError:
                    sftp.stat(path)  # it exists already: fine; anything else raises

        await self._call(work)

    async def read(self, path: str, offset: int = 0) -> bytes | None:
        def work() -> bytes | None:
            sftp = self._sftp_client()
            with self._sftp_lock:
                try:
                    with _file_errors(self.host, path), sftp.open(path, "rb") as fh:
                        fh.seek(offset)
                        return fh.read()
                except FileNotFoundError:
                    return None

        return await self._call(work)

    async def close(self) -> None:
        with self._lock:
            self._drop()
        self._pool.shutdown(wait=False)

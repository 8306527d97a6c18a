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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

RECONNECT_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)


class TransportError(RuntimeError):
    """The machine could not be reached just now (retry later)."""


class AccessError(RuntimeError):
    """The machine refused us (host key, credential): retrying will not help; the message says what to fix."""


@dataclass
class Completed:
    code: int
    out: str
    err: str


class Transport(Protocol):
    description: str

    async def run(self, command: str, retry: bool = True) -> Completed: ...
    async def write(self, path: str, data: bytes) -> None: ...
    async def mkdir(self, path: str) -> None: ...
    async def read(self, path: str, offset: int = 0) -> bytes | None: ...
    async def close(self) -> None: ...


class LocalTransport:
    """The engine runs where the jobs are (a JupyterHub on the login node): plain commands, plain files."""

    description = "local commands"

    async def run(self, command: str, retry: bool = True) -> Completed:
        proc = await asyncio.create_subprocess_shell(
            command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
        )
        out, err = await proc.communicate()
        return Completed(proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))

    async def write(self, path: str, data: bytes) -> None:
        def write() -> None:
            fd = os.open(os.path.expanduser(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)

        await asyncio.to_thread(write)

    async def mkdir(self, path: str) -> None:
        await asyncio.to_thread(os.makedirs, os.path.expanduser(path), 0o700, True)

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


def load_private_key(text: str, passphrase: str | None) -> Any:
    import paramiko

    errors = []
    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return kind.from_private_key(io.StringIO(text), password=passphrase or None)
        except paramiko.PasswordRequiredException:
            raise AccessError("the SSH key needs a passphrase; add it to the credential") from None
        except (paramiko.SSHException, ValueError) as err:
            errors.append(str(err))
    raise AccessError(f"the credential holds no private key paramiko can read ({'; '.join(errors)})")


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
    ):
        self.host, self.port, self.user = host, port, user or os.environ.get("USER", "")
        self.key, self.known_hosts, self.accept_new = key, os.path.expanduser(known_hosts), accept_new_host_keys
        self.proxy_jump, self.keepalive, self.connect_timeout = proxy_jump, keepalive, connect_timeout
        self.description = f"ssh {self.user}@{host}:{port}" + (f" via {proxy_jump}" if proxy_jump else "")
        self._pool = concurrent.futures.ThreadPoolExecutor(max_channels + 1, thread_name_prefix=f"ssh-{host}")
        self._max_channels = max_channels
        self._slots: asyncio.Semaphore | None = None
        self._lock = threading.Lock()
        self._clients: list[Any] = []  # [target, jump host] while connected
        self._sftp: Any = None
        self._sftp_lock = threading.Lock()

    # ------------------------------------------------------------------ connection (in pool threads)

    def _new_client(self) -> Any:
        import paramiko

        client = paramiko.SSHClient()
        if self.known_hosts:
            if os.path.exists(self.known_hosts):
                client.load_host_keys(self.known_hosts)
        else:
            client.load_system_host_keys()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy() if self.accept_new else paramiko.RejectPolicy())
        return client

    def _open(self, client: Any, host: str, port: int, user: str, sock: Any = None) -> None:
        import paramiko

        pkey = load_private_key(self.key["private_key"], self.key.get("passphrase")) if self.key else None
        label = f"{user}@{host}:{port}"
        try:
            client.connect(
                host,
                port,
                username=user,
                pkey=pkey,
                allow_agent=pkey is None,
                look_for_keys=False,
                sock=sock,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
            )
        except paramiko.BadHostKeyException:
            raise AccessError(
                f"the host key of {host}:{port} has CHANGED since it was recorded in "
                f"{self.known_hosts or 'known_hosts'}; refusing to connect. If the change is expected, remove the old "
                "key from that file"
            ) from None
        except paramiko.AuthenticationException as err:
            raise AccessError(f"{label} refused our authentication ({err}); check the executor's credential") from None
        except paramiko.SSHException as err:
            if "known_hosts" in str(err):
                raise AccessError(
                    f"the host key of {host}:{port} is unknown (not in {self.known_hosts or 'known_hosts'}); add it "
                    f"(ssh-keyscan -p {port} {host} >> known_hosts) or set accept_new_host_keys=True"
                ) from None
            raise TransportError(f"{label}: {err}") from None
        except (OSError, EOFError) as err:
            raise TransportError(f"cannot reach {label}: {err}") from None
        if self.accept_new and self.known_hosts:
            client.save_host_keys(self.known_hosts)
        transport = client.get_transport()
        transport.set_keepalive(self.keepalive)
        if isinstance(transport.sock, socket.socket):
            # small SFTP requests back to back otherwise wait for delayed ACKs: 40 ms each
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _connected(self) -> Any:
        with self._lock:
            if self._clients and self._clients[0].get_transport() and self._clients[0].get_transport().is_active():
                return self._clients[0]
            self._drop()
            clients = []
            sock = None
            if self.proxy_jump:
                jump_user, _, rest = self.proxy_jump.rpartition("@")
                jump_host, _, jump_port = rest.partition(":")
                jump = self._new_client()
                self._open(jump, jump_host, int(jump_port or 22), jump_user or self.user)
                clients.append(jump)
                sock = jump.get_transport().open_channel("direct-tcpip", (self.host, self.port), ("127.0.0.1", 0))
            target = self._new_client()
            self._open(target, self.host, self.port, self.user, sock)
            self._clients = [target, *clients]
            return target

    def _drop(self) -> None:
        for client in self._clients:
            client.close()
        self._clients, self._sftp = [], None

    def _sftp_client(self) -> Any:
        client = self._connected()
        with self._sftp_lock:
            if self._sftp is None or self._sftp.sock.closed:
                self._sftp = client.open_sftp()
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
            except AccessError:
                raise
            except (TimeoutError, TransportError, paramiko.SSHException, EOFError, OSError) as err:
                with self._lock:
                    self._drop()
                if delay is None:
                    raise TransportError(f"{self.description}: {err}") from None
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def run(self, command: str, retry: bool = True) -> Completed:
        def work() -> Completed:
            _, stdout, stderr = self._connected().exec_command(command, timeout=120)
            out, err = stdout.read(), stderr.read()
            return Completed(
                stdout.channel.recv_exit_status(), out.decode(errors="replace"), err.decode(errors="replace")
            )

        return await self._call(work, retry)

    async def write(self, path: str, data: bytes) -> None:
        def work() -> None:
            sftp = self._sftp_client()
            with self._sftp_lock, _file_errors(self.host, path), sftp.open(path, "wb") as fh:
                fh.chmod(0o600)
                fh.write(data)

        await self._call(work)

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

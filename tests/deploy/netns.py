"""Another machine on the same host: a network namespace joined to the host by a veth
pair, and small TCP forwarders that make a loopback-only service (PostgreSQL, Redis)
reachable on the host side of the pair only.

Addresses are taken only inside the namespaces created here (``10.200.<n>.0/30``: the
host side ``.1``, the namespace side ``.2``); nothing else outside loopback is touched.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.deploy.seaweed import unavailable


@dataclass(frozen=True)
class Namespace:
    name: str
    host_ip: str  # the host side of the veth pair: what the "other machine" reaches
    ns_ip: str
    host_if: str

    def argv(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True, check=False)
        return [int(p) for p in out.stdout.split()]


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)


def _free_subnet(seed: int) -> int:
    """A ``10.200.<n>.0/30`` that no interface of the host uses yet."""
    used = set(re.findall(r"inet 10\.200\.(\d+)\.", _ip("-4", "-o", "addr", "show").stdout))
    for i in range(254):
        n = 1 + (seed + i) % 254
        if str(n) not in used:
            return n
    raise RuntimeError("no free 10.200.<n>.0/30 subnet")


@contextmanager
def veth_namespace() -> Iterator[Namespace]:
    """Create the namespace and its veth pair; remove both (and kill anything left
    running inside) afterwards. Skips with the reason without root or ``ip netns``,
    unless ``OCT_REQUIRE_SERVICES=1`` (then fails)."""
    if os.geteuid() != 0:
        unavailable("creating a network namespace needs root (ip netns add)")
    if shutil.which("ip") is None:
        unavailable("iproute2's `ip` is not installed (apt-get install iproute2)")
    pid = os.getpid()
    name, host_if, ns_if = f"octwk{pid}", f"octh{pid}", f"octn{pid}"
    added = _ip("netns", "add", name)
    if added.returncode:
        unavailable(f"`ip netns add` is not available here: {added.stderr.strip()}")
    try:
        n = _free_subnet(pid)
        host_ip, ns_ip = f"10.200.{n}.1", f"10.200.{n}.2"
        for step in (
            ("link", "add", host_if, "type", "veth", "peer", "name", ns_if),
            ("link", "set", ns_if, "netns", name),
            ("addr", "add", f"{host_ip}/30", "dev", host_if),
            ("link", "set", host_if, "up"),
            ("netns", "exec", name, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if),
            ("netns", "exec", name, "ip", "link", "set", ns_if, "up"),
            ("netns", "exec", name, "ip", "link", "set", "lo", "up"),
        ):
            done = _ip(*step)
            if done.returncode:
                raise RuntimeError(f"ip {' '.join(step)} failed: {done.stderr.strip()}")
        ns = Namespace(name, host_ip, ns_ip, host_if)
        yield ns
    finally:
        for p in Namespace(name, "", "", host_if).pids():
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _ip("link", "del", host_if)  # deletes its peer too
        _ip("netns", "del", name)


class TcpForwarder:
    """Accept on ``bind_host``:<free port> and relay every connection to ``target``:
    the service then answers on that address too, while still listening on loopback only."""

    def __init__(self, bind_host: str, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server((bind_host, 0))
        self.listener.settimeout(0.2)
        self.host, self.port = self.listener.getsockname()[:2]
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True, name=f"forward-{self.port}")
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        self._thread.join(timeout=5)
        with self._lock:
            for s in self._sockets:
                try:
                    s.close()
                except OSError:
                    pass

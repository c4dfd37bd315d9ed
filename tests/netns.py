"""Throwaway "hosts" for tests: Linux network namespaces on a private bridge in the root namespace.

:class:`Network` creates one namespace per host name (``rtb-<host>-<suffix>``, a random suffix so
that concurrent runs never collide), each joined by a veth pair to a bridge in the root namespace
that holds ``.1`` of a random free ``10.x.y.0/24``; the hosts get ``.2``, ``.3``, ... in host
order. Hosts reach each other over the bridge (plain layer 2: no IP forwarding, no sysctl
changed) and the root namespace reaches them through the bridge's address. Only the addresses and
links created here are touched; :meth:`Network.destroy` kills every process started through
:meth:`Network.popen` (and anything else left inside the namespaces, which only these tests enter)
and deletes the namespaces, veths and bridge, whatever state the creation stopped in.

Needs root and iproute2's ``ip``.
"""

from __future__ import annotations

import ipaddress
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence


class NetnsUnavailable(RuntimeError):
    """Namespaces cannot be created here (not root, no ``ip``)."""


def require_netns() -> str:
    """Return the ``ip`` binary; raise :class:`NetnsUnavailable` saying what is missing."""
    ip = shutil.which("ip")
    if ip is None:
        raise NetnsUnavailable("`ip` is not installed (Debian: apt-get install iproute2)")
    if os.geteuid() != 0:
        raise NetnsUnavailable("network namespaces need root (ip netns add); run the test as root")
    return ip


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    """Every IPv4 prefix of an address or a route on this machine (root namespace)."""
    used: list[ipaddress.IPv4Network] = []
    texts = [_ip("-4", "-o", "addr", "show").stdout, _ip("-4", "route", "show", "table", "all").stdout]
    for word in " ".join(texts).split():
        try:
            used.append(ipaddress.ip_network(word, strict=False))  # type: ignore[arg-type]
        except ValueError:
            continue
    return [net for net in used if isinstance(net, ipaddress.IPv4Network) and net.prefixlen > 0]


def pick_subnet(attempts: int = 200) -> ipaddress.IPv4Network:
    """A random ``10.x.y.0/24`` that overlaps no address or route in use."""
    used = _networks_in_use()
    for _ in range(attempts):
        candidate = ipaddress.IPv4Network(f"10.{random.randint(16, 250)}.{random.randint(0, 255)}.0/24")
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise RuntimeError("found no free 10.x.y.0/24 for the test network")


@dataclass
class Host:
    """One namespace: its name, its address on the bridge and the veth pair joining it."""

    name: str
    namespace: str
    address: str
    veth: str
    """The root namespace's end, a port of the bridge."""
    peer: str
    """The namespace's end, holding :attr:`address`."""


@dataclass
class Network:
    """Namespaces ``rtb-<name>-<suffix>`` for *names*, joined to a bridge in the root namespace."""

    names: Sequence[str]
    suffix: str = field(default_factory=lambda: secrets.token_hex(3))
    subnet: ipaddress.IPv4Network = field(default_factory=pick_subnet)
    hosts: dict[str, Host] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"rtbbr-{self.suffix}"

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge (what the hosts see as the proxy's)."""
        return str(self.subnet.network_address + 1)

    def create(self) -> "Network":
        """Create the bridge and the namespaces; on any error undo what was made, then raise."""
        require_netns()
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for index, name in enumerate(self.names):
                host = Host(
                    name=name,
                    namespace=f"rtb-{name}-{self.suffix}",
                    address=str(self.subnet.network_address + 2 + index),
                    veth=f"rtbv{name}-{self.suffix}",
                    peer=f"rtbp{name}-{self.suffix}",
                )
                self.hosts[name] = host
                _ip("netns", "add", host.namespace)
                _ip("-n", host.namespace, "link", "set", "lo", "up")
                _ip("link", "add", host.veth, "type", "veth", "peer", "name", host.peer, "netns", host.namespace)
                _ip("link", "set", host.veth, "master", self.bridge)
                _ip("link", "set", host.veth, "up")
                _ip("-n", host.namespace, "addr", "add", f"{host.address}/{self.subnet.prefixlen}", "dev", host.peer)
                _ip("-n", host.namespace, "link", "set", host.peer, "up")
        except BaseException:
            self.destroy()
            raise
        return self

    def address(self, name: str) -> str:
        return self.hosts[name].address

    def popen(self, name: str, argv: Sequence[str], log_path: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start *argv* inside host *name*'s namespace, in a new session (its own process group),
        output to *log_path*. ``ip netns exec`` execs the command, so the pid is the command's."""
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.hosts[name].namespace, *argv],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kwargs,
            )
        self.processes.append(process)
        return process

    def run(self, name: str, argv: Sequence[str], timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        """Run *argv* inside host *name*'s namespace and wait for it."""
        return subprocess.run(["ip", "netns", "exec", self.hosts[name].namespace, *argv],
                              capture_output=True, text=True, timeout=timeout)

    def pids(self, name: str) -> list[int]:
        """The processes running in host *name*'s namespace."""
        return [int(pid) for pid in _ip("netns", "pids", self.hosts[name].namespace, check=False).stdout.split()]

    def destroy(self) -> None:
        """Kill what was started in the namespaces, then delete namespaces, veths and bridge."""
        for process in self.processes:
            kill_group(process)
        for host in self.hosts.values():
            for pid in self.pids(host.name):  # only processes these tests started can be in there
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for host in self.hosts.values():
            _ip("netns", "del", host.namespace, check=False)
            _ip("link", "del", host.veth, check=False)  # normally gone with the peer's namespace
        _ip("link", "del", self.bridge, check=False)

    def leftovers(self) -> list[str]:
        """Namespaces and links of this network that still exist (empty after :meth:`destroy`)."""
        namespaces = _ip("netns", "list", check=False).stdout
        links = _ip("-o", "link", "show", check=False).stdout
        names = [h.namespace for h in self.hosts.values() if h.namespace in namespaces.split()]
        names += [link for link in (self.bridge, *(h.veth for h in self.hosts.values())) if f" {link}:" in links or f" {link}@" in links]
        return names


def kill_group(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
    """Send *sig* to *process*'s process group (it was started in its own session) and reap it."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)


def wait_tcp(address: str, port: int, timeout: float, process: subprocess.Popen[bytes] | None = None,
             what: str = "server") -> None:
    """Wait until *address*:*port* accepts a TCP connection; raise if *process* exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited early with code {process.returncode}")
        try:
            socket.create_connection((address, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not accept connections on {address}:{port} within {timeout}s")

"""A throwaway Redis Cluster on free loopback ports, for the ``redis+cluster://`` backplane tests.

Six ``redis-server`` processes in cluster mode (three masters, one replica each; no persistence,
``cluster-node-timeout`` 1 s so a failover takes a second or two), joined by
``redis-cli --cluster create``. Every wait is bounded and fails with the nodes' log tails.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from tests.live import HOST, free_port

INSTALL_HINT = "scripts/test.sh installs them (apt-get install redis-server redis-tools)"
NODE_TIMEOUT_MS = 1000
"""``cluster-node-timeout``: how long a master may be unreachable before its replica takes over."""


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed; the Redis Cluster tests need redis-server and redis-cli 7+: {INSTALL_HINT}")
    return path


class ClusterNode:
    """One redis-server in cluster mode: its client port, its bus port and its process."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"node-{self.port}.log"

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def command(self, *args: Any) -> Any:
        """Run one command on this node (a fresh connection, closed after)."""
        with self.client() as client:
            return client.execute_command(*args)

    def start(self, timeout: float, attempts: int = 3) -> None:
        """Start on a free port (another one if it was taken meanwhile) and wait for PONG."""
        for _ in range(attempts):
            self.port = free_port()
            bus_port = free_port()
            self.process = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--cluster-port", str(bus_port), "--bind", HOST,
                 "--cluster-enabled", "yes", "--cluster-config-file", str(self.workdir / f"nodes-{self.port}.conf"),
                 "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--save", "", "--appendonly", "no",
                 "--repl-diskless-sync-delay", "0",
                 "--dir", str(self.workdir), "--logfile", str(self.log_path), "--loglevel", "notice"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    if self.command("PING"):
                        return
                except redis.RedisError:
                    time.sleep(0.02)
            self.kill()
        raise RuntimeError(f"redis-server (cluster mode) did not start on {HOST}:{self.port}:\n{self.log_tail()}")

    def info(self, section: str) -> dict[str, str]:
        """``CLUSTER INFO`` (*section* ``cluster``) or ``INFO <section>`` as a dict of strings."""
        raw = self.command("CLUSTER", "INFO") if section == "cluster" else self.command("INFO", section)
        if isinstance(raw, dict):
            return {str(key): str(value) for key, value in raw.items()}
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the node vanishes at once, as in a crash."""
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


class RedisClusterServer:
    """*masters* masters with *replicas* replica(s) each, started by :meth:`start`, removed by :meth:`stop`."""

    def __init__(self, workdir: Path, masters: int = 3, replicas: int = 1) -> None:
        server, self.cli = _binary("redis-server"), _binary("redis-cli")
        version = subprocess.run([server, "--version"], capture_output=True, text=True, timeout=10).stdout
        major = re.search(r"v=(\d+)\.", version)
        if major is None or int(major.group(1)) < 7:
            raise RuntimeError(f"sharded pub/sub needs redis-server 7+, not {version.strip()!r}; {INSTALL_HINT}")
        self.workdir = workdir
        self.replicas = replicas
        self.nodes = [ClusterNode(server, workdir) for _ in range(masters * (replicas + 1))]

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL naming three of the nodes as seeds."""
        return "redis+cluster://" + ",".join(f"{HOST}:{node.port}" for node in self.nodes[:3])

    def start(self, timeout: float = 30.0) -> "RedisClusterServer":
        """Start every node, create the cluster and wait until it is fully up; clean up on failure."""
        try:
            deadline = time.monotonic() + timeout
            for node in self.nodes:
                node.start(timeout=10.0)
            create = subprocess.run(
                [self.cli, "--cluster", "create", *(f"{HOST}:{node.port}" for node in self.nodes),
                 "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                timeout=max(1.0, deadline - time.monotonic()),
            )
            if create.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{create.stdout.decode(errors='replace')}")
            self.wait_until(self._ready, deadline - time.monotonic(), "the cluster to be ok with every replica in sync")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        for node in self.nodes:
            if node.info("cluster").get("cluster_state") != "ok":
                return False
            replication = node.info("replication")
            if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                return False
        return True

    def wait_until(self, condition: Any, timeout: float, what: str) -> None:
        """Poll *condition* (node errors count as not yet) for at most *timeout* seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if condition():
                    return
            except redis.RedisError:
                pass
            time.sleep(0.05)
        tails = "\n".join(f"--- node {node.port}:\n{node.log_tail()}" for node in self.nodes)
        raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}\n{tails}")

    def live_node(self) -> ClusterNode:
        return next(node for node in self.nodes if node.alive)

    def node(self, port: int) -> ClusterNode:
        return next(node for node in self.nodes if node.port == port)

    def masters(self) -> list[ClusterNode]:
        """The nodes that are masters of some slots now, as a live node sees it."""
        ports = dict.fromkeys(int(master[1]) for _, _, master, *_ in self.live_node().command("CLUSTER", "SLOTS"))
        return [self.node(port) for port in ports]

    def master_of(self, key: str) -> ClusterNode:
        """The node that is master of *key*'s hash slot now."""
        slot = key_slot(key.encode())
        for start, end, master, *_ in self.live_node().command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return self.node(int(master[1]))
        raise AssertionError(f"slot {slot} is not covered")

    def move_slot(self, key: str, target: ClusterNode) -> None:
        """Move *key*'s (empty) slot to *target*, as a resharding does, and tell every master."""
        slot, source = key_slot(key.encode()), self.master_of(key)
        source_id, target_id = (node.command("CLUSTER", "MYID").decode() for node in (source, target))
        target.command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        source.command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        for node in [target, source, *(node for node in self.masters() if node not in (source, target))]:
            node.command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def kill_master_of(self, key: str) -> ClusterNode:
        """SIGKILL the master of *key*'s slot (its replica takes over after the node timeout)."""
        node = self.master_of(key)
        node.kill()
        return node

    def stop(self) -> None:
        """Kill every node and remove their files."""
        for node in self.nodes:
            node.kill()
        for pattern in ("nodes-*.conf", "node-*.log", "*.rdb"):
            for path in self.workdir.glob(pattern):
                path.unlink(missing_ok=True)

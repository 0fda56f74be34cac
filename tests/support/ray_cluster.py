"""A real two-node Ray cluster for the tests: a head, and a second node that is another host.

The second node runs in a network namespace of its own (``ip netns``; root), joined to this one by
a veth pair with two 10.x addresses, so Ray reaches it over a network like any other host; it
shares the file system, as the nodes of a real cluster share the data directory. The head then
listens on the veth's address here (a node in the namespace cannot reach this host's loopback).
Where namespaces cannot be made, both nodes run on 127.0.0.1 (``RayCluster.separate_host`` says
which).

Each node is one ``ray start --block`` in a session of its own; ``stop`` ends those sessions by
their process groups (no ``ray stop``, which would end every Ray process on the machine) and
removes the namespace. Nothing reaches the internet: usage stats are off and no dashboard starts.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.servers import free_port

__all__ = ["RayCluster", "ray_processes", "start_ray_cluster"]

RAY = str(Path(sys.executable).with_name("ray"))
#: Enough for a few label maps of the small test volumes in flight at once.
OBJECT_STORE_BYTES = 100_000_000


def _env(interface: str | None = None) -> dict[str, str]:
    """The nodes' environment (their Ray workers inherit it): usage stats off, and the interface
    torch.distributed's gloo uses between hosts."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}
    return {**env, "GLOO_SOCKET_IFNAME": interface} if interface else env


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


@dataclass
class RayCluster:
    """A running cluster: ``address`` is the head's GCS (what ``ray.address`` is set to)."""

    address: str
    head_ip: str
    node_ip: str
    separate_host: bool
    temp_dir: Path
    namespace: str | None = None
    veth: str | None = None
    nodes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def pids(self) -> list[int]:
        """Every live process of the cluster's nodes (their sessions: Ray's daemons and workers)."""
        return ray_processes({p.pid for p in self.nodes})

    def stop(self) -> None:
        """SIGTERM each node's ``ray start`` (it ends its daemons), then SIGKILL what is left of it."""
        for node in reversed(self.nodes):
            if node.poll() is None:
                node.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and self.pids():
            time.sleep(0.2)
        for node in self.nodes:
            try:
                os.killpg(node.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                node.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 10
        while (left := self.pids()) and time.monotonic() < deadline:
            for pid in left:  # in the nodes' sessions but another process group
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        if self.veth:
            subprocess.run(["ip", "link", "del", self.veth], capture_output=True, timeout=30)
        if self.namespace:
            subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True, timeout=30)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def ray_processes(sessions: set[int]) -> list[int]:
    """Live processes (not zombies) whose session is one of ``sessions``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) in sessions:
            found.append(int(entry.name))
    return found


def _namespace(tag: int) -> tuple[str, str, str, str] | None:
    """A namespace with one end of a veth pair: ``(namespace, veth here, address here, address there)``."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        return None
    # Both ends get the same name (the far one renamed inside the namespace), so one
    # GLOO_SOCKET_IFNAME serves both hosts: they share /etc/hosts, whose name for this machine
    # resolves to loopback, which torch.distributed's gloo would advertise otherwise.
    namespace, here, there = f"llray{tag}", f"llr{tag}", f"llt{tag}"
    subnet = f"10.231.{tag % 250}"
    inside = ["ip", "netns", "exec", namespace, "ip"]
    try:
        _run("ip", "netns", "add", namespace)
        _run("ip", "link", "add", here, "type", "veth", "peer", "name", there)
        _run("ip", "link", "set", there, "netns", namespace)
        _run(*inside, "link", "set", there, "name", here)
        _run("ip", "addr", "add", f"{subnet}.1/30", "dev", here)
        _run("ip", "link", "set", here, "up")
        _run(*inside, "addr", "add", f"{subnet}.2/30", "dev", here)
        _run(*inside, "link", "set", here, "up")
        _run("ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up")
    except (subprocess.CalledProcessError, OSError):
        subprocess.run(["ip", "link", "del", here], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)
        return None
    return namespace, here, f"{subnet}.1", f"{subnet}.2"


def _start_node(
    args: list[str], log: Path, interface: str | None, prefix: list[str] | None = None
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*(prefix or []), RAY, "start", *args, "--block", "--disable-usage-stats"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_env(interface),
            start_new_session=True,
        )


def _alive_nodes(address: str, count: int, timeout: float) -> None:
    """Wait until ``count`` nodes are alive in the cluster at ``address`` (``ray status``)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        status = subprocess.run(
            [RAY, "status", f"--address={address}"], capture_output=True, text=True, env=_env(), timeout=60
        )
        last = status.stdout + status.stderr
        active = last.split("Active:", 1)[-1].split("Pending:", 1)[0]
        if status.returncode == 0 and active.count("node_") >= count:
            return
        time.sleep(1.0)
    raise AssertionError(f"the Ray cluster at {address} never had {count} nodes:\n{last}")


def start_ray_cluster(head_cpus: int = 1, node_cpus: int = 1, timeout: float = 120.0) -> RayCluster:
    """A head with ``head_cpus`` CPUs and a second node with ``node_cpus``, both alive."""
    temp_dir = Path(tempfile.mkdtemp(prefix="llray-", dir="/tmp"))  # Ray's socket paths must stay short
    tag = os.getpid() % 10000
    made = _namespace(tag)
    head_ip, node_ip = (made[2], made[3]) if made else ("127.0.0.1", "127.0.0.1")
    port = free_port()
    cluster = RayCluster(
        address=f"{head_ip}:{port}",
        head_ip=head_ip,
        node_ip=node_ip,
        separate_host=made is not None,
        temp_dir=temp_dir,
        namespace=made[0] if made else None,
        veth=made[1] if made else None,
    )
    common = [f"--object-store-memory={OBJECT_STORE_BYTES}", "--num-gpus=0"]
    try:
        cluster.nodes.append(
            _start_node(
                [
                    "--head",
                    f"--node-ip-address={head_ip}",
                    f"--port={port}",
                    f"--num-cpus={head_cpus}",
                    "--include-dashboard=false",
                    f"--temp-dir={temp_dir / 'head'}",
                    *common,
                ],
                temp_dir / "head.log",
                cluster.veth,
            )
        )
        _alive_nodes(cluster.address, 1, timeout)
        prefix = ["ip", "netns", "exec", made[0]] if made else None
        cluster.nodes.append(
            _start_node(
                [
                    f"--address={cluster.address}",
                    f"--node-ip-address={node_ip}",
                    f"--num-cpus={node_cpus}",
                    *common,
                ],
                temp_dir / "node.log",
                cluster.veth,
                prefix,
            )
        )
        _alive_nodes(cluster.address, 2, timeout)
    except BaseException:
        logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(temp_dir.glob("*.log")))
        cluster.stop()
        if isinstance(logs, str) and logs:
            sys.stderr.write(logs)
        raise
    return cluster

"""A 3-node nats-server JetStream cluster on loopback, from the pinned binary."""

import json
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from stayhuman.natsserver import EmbeddedNats, NatsServerError, free_ports


@dataclass
class NatsCluster:
    root: Path
    size: int = 3
    nodes: list[EmbeddedNats] = field(default_factory=list)

    @property
    def urls(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def start(self, timeout: float = 60) -> "NatsCluster":
        route_ports = free_ports(self.size)
        for index in range(self.size):
            routes = ",".join(f"nats://127.0.0.1:{port}" for i, port in enumerate(route_ports) if i != index)
            node = EmbeddedNats(
                self.root / f"node-{index}",
                extra_args=[
                    "--cluster_name", "stayhuman",
                    "--cluster", f"nats://127.0.0.1:{route_ports[index]}",
                    "--routes", routes,
                ],
            )  # fmt: skip
            self.nodes.append(node.start(wait=False))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._meta_leader(node) for node in self.nodes):
                for node in self.nodes:
                    node.wait_ready(timeout=max(1.0, deadline - time.monotonic()))
                return self
            time.sleep(0.2)
        raise NatsServerError("the JetStream cluster elected no meta leader in time")

    @staticmethod
    def _meta_leader(node: EmbeddedNats) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{node.monitor_port}/jsz", timeout=1) as response:
                return str(json.load(response).get("meta_cluster", {}).get("leader") or "")
        except OSError:
            return ""

    def node_named(self, server_name: str) -> EmbeddedNats:
        return next(node for node in self.nodes if node.server_name == server_name)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

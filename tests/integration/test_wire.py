"""What the wire carries: a capture of the loopback TCP traffic of an all-MPC MiniLM deployment, from before its
zones start until they are down, finds TLS from each connection's first byte: the zones' gRPC, the MPC parties'
and the dealer's mesh, its rendezvous included. The deployment's connections are those to its ports and those
its processes hold during the session (so that other processes' traffic on loopback is not judged here)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.launcher import running
from tests.integration.conftest import deployment, minilm_cosine
from tests.support.pcap import Connection, capture, connections, owned_connections

TEXT = "Discharge summary: patient stable, follow up with cardiology in two weeks."


@dataclass
class Wire:
    """The capture of one run: the deployment's connections, its mesh among them, and the run's cosine."""

    ours: list[Connection]
    mesh: list[Connection]
    rendezvous: list[Connection]
    cosine: float


@pytest.fixture(scope="module")
def wire(hsi_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wire]:
    pcap = tmp_path_factory.mktemp("wire") / "lo.pcap"
    with capture("lo", pcap):
        up = deployment("all-mpc-minilm.yaml", tmp_path_factory)
        dep = next(up)
        try:
            pids = running(dep.policy)
            assert pids is not None
            held: set[frozenset[tuple[str, int]]] = set()
            done = threading.Event()

            def watch() -> None:  # the session's mesh lives only while the session runs
                while not done.wait(0.1):
                    held.update(owned_connections(set(pids.values())))

            watcher = threading.Thread(target=watch)
            watcher.start()
            rt = dep.runtime()
            try:
                cosine = minilm_cosine(rt.embed(TEXT).output["embedding"], TEXT)
            finally:
                rt.close()
                done.set()
                watcher.join()
        finally:
            next(up, None)  # down
    zone = next(z for z in dep.policy.zones.values() if z.kind == "mpc")
    grpc_ports = {int(p.address.rsplit(":", 1)[1]) for p in dep.policy.processes()}
    ports = grpc_ports | {zone.rendezvous_port}
    ours = [c for c in connections(pcap) if c.carries_bytes()
            and (c.server[1] in ports or frozenset({c.client, c.server}) in held)]
    rendezvous = [c for c in ours if c.server[1] == zone.rendezvous_port]
    mesh = [c for c in ours if c.server[1] not in ports]
    yield Wire(ours, mesh, rendezvous, cosine)


def test_the_run_was_correct(wire: Wire) -> None:
    assert wire.cosine >= 0.999


def test_every_connection_that_carries_bytes_starts_with_tls(wire: Wire) -> None:
    assert len(wire.ours) >= 10, [str(c) for c in wire.ours]
    unseen = [str(c) for c in wire.ours if not c.syn_seen]
    assert not unseen, f"connections opened before the capture: {unseen}"
    clear = [str(c) for c in wire.ours if not c.starts_with_tls()]
    assert not clear, f"cleartext connections: {clear}"


def test_the_mpc_mesh_is_among_them(wire: Wire) -> None:
    """The parties' and the dealer's links: one per direction per pair of party 0, party 1 and the dealer, each
    to the peer worker's own port; and the two questions to rank 0's rendezvous hub (where does this session's
    rank 0 listen?), over TLS too. The protocol's bytes went over the links."""
    assert len(wire.rendezvous) == 2, [str(c) for c in wire.rendezvous]
    assert len(wire.mesh) == 6, [str(c) for c in wire.mesh]
    assert sum(sum(c.payload.values()) for c in wire.mesh) > 10_000_000

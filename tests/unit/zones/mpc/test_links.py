"""The MPC mesh: mutually authenticated TLS between every pair of ranks, peers checked by principal before any
protocol byte, failures named by peer within the deadline."""

from __future__ import annotations

import dataclasses
import json
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hsi.transport.certs import init_ca, issue, load_credentials
from zones.mpc import hub, links, rendezvous
from zones.mpc.local import free_port, local_meshes


def _join_all(specs: list[links.MeshSpec]) -> list[Any]:
    """Every rank joins on its own thread; each one's Mesh or exception, in rank order."""
    out: list[Any] = [None] * len(specs)

    def run(i: int) -> None:
        try:
            out[i] = rendezvous.join(specs[i])
        except Exception as e:  # reported to the test
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(specs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def _close(meshes: list[Any]) -> None:
    for m in meshes:
        if isinstance(m, links.Mesh):
            m.close()


def test_every_pair_exchanges_frames_both_ways(tmp_path: Path) -> None:
    meshes = _join_all(local_meshes(tmp_path, 3, ttp=True, timeout=20))
    try:
        assert all(isinstance(m, links.Mesh) for m in meshes), meshes
        payload = {(s, d): bytes([s * 16 + d]) * (300_000 + s) for s in range(3) for d in range(3) if s != d}
        for (s, d), data in payload.items():
            meshes[s].send(d, data)
        for (s, d), data in payload.items():
            got = bytearray(len(data))
            meshes[d].recv_into(s, memoryview(got))
            assert bytes(got) == data
        meshes[0].send(1, b"x" * 8)
        with pytest.raises(links.LinkError, match=r"party 0 \(rank0/local\) sent a 8-byte message where 9 were due"):
            meshes[1].recv_into(0, memoryview(bytearray(9)))
    finally:
        _close(meshes)


def _with_credentials(spec: links.MeshSpec, directory: Path, principal: str) -> links.MeshSpec:
    issue(directory, principal, ["127.0.0.1"])
    return dataclasses.replace(spec, credentials=load_credentials(directory, principal))


def test_a_peer_with_another_principals_certificate_is_refused(tmp_path: Path) -> None:
    specs = local_meshes(tmp_path, 2, ttp=False, timeout=3)
    # rank 1 presents a valid certificate of the same CA, for a principal the policy does not give rank 1
    specs[1] = _with_credentials(specs[1], tmp_path, "mallory/local")
    start = time.monotonic()
    rank0, rank1 = _join_all(specs)
    assert isinstance(rank0, links.LinkError)
    assert "party 1 (rank1/local) did not connect within 3 s" in str(rank0)
    assert "presented 'mallory/local' claiming rank 1" in str(rank0)
    assert isinstance(rank1, links.LinkError)  # never got a link back
    assert time.monotonic() - start < 10


def test_the_connecting_side_checks_the_listeners_principal(tmp_path: Path) -> None:
    specs = local_meshes(tmp_path, 2, ttp=False, timeout=3)
    specs[0] = _with_credentials(specs[0], tmp_path, "mallory/local")  # someone else listens on rank 0's port
    rank0, rank1 = _join_all(specs)
    assert isinstance(rank1, links.LinkError)
    assert "presented a certificate for 'mallory/local', not party 0 (rank0/local)" in str(rank1)
    assert isinstance(rank0, links.LinkError)


def test_a_certificate_from_another_ca_is_refused(tmp_path: Path) -> None:
    specs = local_meshes(tmp_path / "real", 2, ttp=False, timeout=3)
    other = tmp_path / "other"
    init_ca(other)
    issue(other, "rank1/local", ["127.0.0.1"])
    foreign = load_credentials(other, "rank1/local")
    specs[1] = dataclasses.replace(specs[1], credentials=dataclasses.replace(foreign, ca=specs[1].credentials.ca))
    rank0, _ = _join_all(specs)
    assert isinstance(rank0, links.LinkError) and "refused" in str(rank0)
    assert "CERTIFICATE_VERIFY_FAILED" in str(rank0) or "certificate" in str(rank0).lower()


def test_no_client_certificate_and_cleartext_are_refused(tmp_path: Path) -> None:
    spec = local_meshes(tmp_path, 2, ttp=False, timeout=4)[0]
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(rendezvous._try(rendezvous.join, spec)))
    thread.start()
    time.sleep(0.5)
    host, port = spec.hub
    with socket.create_connection((host, port)) as raw:  # cleartext: a hello without TLS
        raw.sendall(b'{"session": "x", "rank": 1}\n')
        raw.settimeout(5)
        try:
            assert raw.recv(100) == b""  # closed, nothing sent back
        except ConnectionResetError:
            pass
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=spec.credentials.ca.decode())
    ctx.check_hostname = False
    with socket.create_connection((host, port)) as raw, ctx.wrap_socket(raw) as tls:  # TLS, no client certificate
        tls.settimeout(5)
        with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
            tls.sendall(b"x" * 8)
            if tls.recv(100) == b"":
                raise ConnectionResetError("closed")
    thread.join(10)
    assert isinstance(result[0], links.LinkError)
    message = str(result[0])
    assert "party 1 (rank1/local) did not connect within 4 s; refused: 127.0.0.1" in message
    assert message.count("127.0.0.1") >= 2  # both attempts recorded


def test_a_dead_or_stalled_peer_is_named_within_the_deadline(tmp_path: Path) -> None:
    meshes = _join_all(local_meshes(tmp_path, 3, ttp=True, timeout=2))
    try:
        start = time.monotonic()
        with pytest.raises(links.LinkError, match=r"the dealer \(rank2/local\) sent nothing for 2 s"):
            meshes[0].recv_into(2, memoryview(bytearray(8)))
        assert time.monotonic() - start < 4
        meshes[1].close()
        with pytest.raises(links.LinkError, match=r"party 1 \(rank1/local\) closed its link"):
            meshes[0].recv_into(1, memoryview(bytearray(8)))
    finally:
        _close([meshes[0], meshes[2]])


def test_a_link_that_comes_before_it_is_awaited_is_kept(tmp_path: Path) -> None:
    # A party that has the rank table may reach the dealer before rank 0 does, while the dealer still waits
    # for rank 0's link alone; that early link must serve the dealer's next wait, not be dropped.
    specs = local_meshes(tmp_path, 3, ttp=True, timeout=10)
    server, _ = links.contexts(specs[2].credentials)
    listener = rendezvous._listen("127.0.0.1", 0)
    port = listener.getsockname()[1]
    acceptor = rendezvous._Acceptor(specs[2], server, listener)
    deadline = time.monotonic() + 10
    links_out: dict[int, Any] = {}

    def connect(rank: int) -> None:
        _, client = links.contexts(specs[rank].credentials)
        links_out[rank] = rendezvous._connect(specs[rank], client, 2, "127.0.0.1", port, 1, deadline)

    first = threading.Thread(target=connect, args=(1,))
    first.start()
    time.sleep(0.3)  # party 1's connection is first in the listen queue
    second = threading.Thread(target=connect, args=(0,))
    second.start()
    try:
        assert set(acceptor.accept({0}, deadline)) == {0}
        start = time.monotonic()
        assert set(acceptor.accept({1}, deadline)) == {1}
        assert time.monotonic() - start < 1
        assert not acceptor.refused
    finally:
        first.join(10)
        second.join(10)
        acceptor.close()
        listener.close()
        for s in links_out.values():
            s.close()


def _ask(spec: links.MeshSpec, port: int) -> Any:
    _, client = links.contexts(spec.credentials)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, client.wrap_socket(raw) as sock:
        links.send_frame(sock, json.dumps({"session": spec.session, "rank": spec.rank, "port": 0}).encode())
        try:
            return json.loads(links.recv_small(sock))
        except (EOFError, OSError):
            return None  # refused: closed without an answer


def test_the_hub_tells_each_session_its_rank0_port_and_only_to_its_ranks(tmp_path: Path) -> None:
    specs = local_meshes(tmp_path, 3, ttp=True, timeout=5)
    server, _ = links.contexts(specs[0].credentials)
    port = free_port()
    center = hub.Hub(specs[0].principals, server, port, ask_s=0.3)
    try:
        center.announce(specs[0].session, 40001)
        center.announce("another-session", 40002)  # sessions at once, each its own rank-0 port
        assert _ask(specs[1], port) == {"port": 40001} and _ask(specs[2], port) == {"port": 40001}
        other = dataclasses.replace(specs[1], session="another-session")
        assert _ask(other, port) == {"port": 40002}
        assert _ask(dataclasses.replace(specs[1], session="unknown"), port) == {"port": None}  # after ask_s
        mallory = _with_credentials(specs[1], tmp_path, "mallory/local")
        assert _ask(mallory, port) is None
        assert any("presented 'mallory/local' claiming rank 1" in r for r in center.refusals(specs[0].session))
        center.forget(specs[0].session)
        assert _ask(specs[1], port) == {"port": None}
    finally:
        center.close()

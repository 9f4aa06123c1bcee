"""Capture TCP traffic with tcpdump and tell, per connection, whether its bytes begin with a TLS handshake."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

_TLS_HANDSHAKE = 0x16  # a TLS record of content type handshake, versions 3.1-3.3 on the wire


@dataclass
class Connection:
    """One TCP connection of the capture: its endpoints, whether its SYN was seen, the first payload bytes and
    total payload of each direction (client first)."""

    client: tuple[str, int]
    server: tuple[str, int]
    syn_seen: bool = False
    first: dict[str, bytes] = field(default_factory=dict)
    payload: dict[str, int] = field(default_factory=lambda: {"client": 0, "server": 0})

    def carries_bytes(self) -> bool:
        """Whether any payload travelled."""
        return sum(self.payload.values()) > 0

    def starts_with_tls(self) -> bool:
        """Whether each direction that carried bytes began with a TLS handshake record."""
        return all(len(b) >= 3 and b[0] == _TLS_HANDSHAKE and b[1] == 3 and 1 <= b[2] <= 4
                   for side, b in self.first.items() if self.payload[side])

    def __str__(self) -> str:
        heads = {side: b[:8].hex() for side, b in self.first.items()}
        return f"{self.client[0]}:{self.client[1]} -> {self.server[0]}:{self.server[1]} {self.payload} first {heads}"


@contextmanager
def capture(interface: str, path: Path, expression: str = "tcp", snaplen: int = 160) -> Iterator[Path]:
    """tcpdump on `interface` into `path` while the block runs (packets matching `expression`, the first `snaplen`
    bytes of each: enough for the headers and a record's first bytes)."""
    tool = shutil.which("tcpdump")
    if tool is None:
        pytest.fail("tcpdump is missing: scripts/setup.sh installs it (Debian package tcpdump)")
    proc = subprocess.Popen([tool, "-i", interface, "-s", str(snaplen), "-U", "-n", "-w", str(path), expression],
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines = [proc.stderr.readline()]  # on `any` a note on the link type (LINUX_SLL2) comes first
    while "listening on" not in lines[-1] and lines[-1] and len(lines) < 5:
        lines.append(proc.stderr.readline())
    if "listening on" not in lines[-1]:
        proc.kill()
        pytest.fail(f"tcpdump did not start: {''.join(lines)}")
    try:
        yield path
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def connections(path: Path) -> list[Connection]:
    """The TCP connections in a pcap file (Ethernet or Linux cooked link layer, IPv4)."""
    data = path.read_bytes()
    magic, = struct.unpack("<I", data[:4])
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    link_header = {1: 14, 113: 16, 276: 20}.get(linktype)
    if link_header is None:
        raise ValueError(f"link type {linktype} not handled")
    found: dict[tuple[tuple[str, int], tuple[str, int]], Connection] = {}
    pos = 24
    while pos + 16 <= len(data):
        _, _, caplen, _ = struct.unpack(endian + "IIII", data[pos:pos + 16])
        packet = data[pos + 16:pos + 16 + caplen]
        pos += 16 + caplen
        ip = packet[link_header:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
            continue
        ihl = (ip[0] & 15) * 4
        total = struct.unpack(">H", ip[2:4])[0]
        src = ".".join(map(str, ip[12:16]))
        dst = ".".join(map(str, ip[16:20]))
        tcp = ip[ihl:]
        sport, dport = struct.unpack(">HH", tcp[:4])
        offset = (tcp[12] >> 4) * 4
        flags = tcp[13]
        length = total - ihl - offset
        a, b = (src, sport), (dst, dport)
        conn = found.get((a, b)) or found.get((b, a))
        if conn is None:
            syn_only = flags & 0x02 and not flags & 0x10
            conn = Connection(a, b) if syn_only or not (flags & 0x02) else Connection(b, a)
            found[(conn.client, conn.server)] = conn
        if flags & 0x02 and not flags & 0x10:
            conn.syn_seen = True
        side = "client" if (a, b) == (conn.client, conn.server) else "server"
        if length > 0:
            if side not in conn.first:
                conn.first[side] = tcp[offset:offset + 8]
            conn.payload[side] += length
    return list(found.values())


_SS_LINE = re.compile(r"(\S+):(\d+)\s+(\S+):(\d+)\s+users:\((.*)\)")
_PID = re.compile(r"pid=(\d+)")


def owned_connections(groups: set[int]) -> set[frozenset[tuple[str, int]]]:
    """The endpoint pairs of the established TCP connections held now by a process of one of the process
    `groups` (a deployment's zones and their workers), from `ss`."""
    out = subprocess.run(["ss", "-tnpH", "state", "established"], capture_output=True, text=True, check=True).stdout
    owned = set()
    for line in out.splitlines():
        m = _SS_LINE.search(line)
        if m is None:
            continue
        pgids = set()
        for pid in _PID.findall(m.group(5)):
            with contextlib.suppress(ProcessLookupError):
                pgids.add(os.getpgid(int(pid)))
        if pgids & groups:
            owned.add(frozenset({(m.group(1), int(m.group(2))), (m.group(3), int(m.group(4)))}))
    return owned

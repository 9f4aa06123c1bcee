"""A user-space netem: hold every packet an iptables NFQUEUE rule hands over for a fixed delay, then accept it.

This kernel has no `sch_netem`, but it has netfilter's packet queue: a rule such as
`iptables -A OUTPUT -o eth0 -j NFQUEUE --queue-num 0` passes each outgoing packet to the process bound to
queue 0, and the packet leaves only when that process gives its verdict. Holding each verdict for
`delay_ms` delays every packet by that much, in order (the delay is constant, so the queue stays FIFO and
one batch verdict releases every packet whose time has come). Packets are queued whole (the GSO flag), with
metadata only copied to user space. Without a listener the queue drops packets, so a dead delayer fails
the run instead of silently removing the delay.

Speaks the nfnetlink_queue protocol over a raw netlink socket; run inside the namespace it shapes:
`python -m orchestrator.delay_queue --queue 0 --delay-ms 20`.
"""

from __future__ import annotations

import argparse
import collections
import errno
import select
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_CONFIG, NFQNL_MSG_VERDICT_BATCH = 0, 2, 3
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_CFG_F_GSO = 4
NF_ACCEPT = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
QUEUE_MAXLEN = 65536


def _attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _message(msg: int, queue: int, attrs: bytes, seq: int, flags: int = NLM_F_REQUEST) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg, flags, seq, 0) + body


class DelayQueue:
    """Bound to one NFQUEUE number; `run()` releases each packet `delay_s` after it arrived."""

    def __init__(self, queue: int, delay_s: float) -> None:
        self.queue, self.delay_s = queue, delay_s
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((0, 0))
        self._seq = 0
        self._config(_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)))
        self._config(_attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META)) +
                     _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN)) +
                     _attr(NFQA_CFG_FLAGS, struct.pack("!I", NFQA_CFG_F_GSO)) +
                     _attr(NFQA_CFG_MASK, struct.pack("!I", NFQA_CFG_F_GSO)))

    def _config(self, attrs: bytes) -> None:
        """Send a config message and raise OSError if the kernel refuses it."""
        self._seq += 1
        self.sock.send(_message(NFQNL_MSG_CONFIG, self.queue, attrs, self._seq, NLM_F_REQUEST | NLM_F_ACK))
        reply = self.sock.recv(65536)
        _, kind, _, _, _ = struct.unpack_from("=IHHII", reply)
        if kind == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", reply, 16)
            if err:
                raise OSError(-err, f"nfqueue {self.queue} config refused: {errno.errorcode.get(-err, err)}")

    def _packet_ids(self, data: bytes) -> list[int]:
        ids, pos = [], 0
        while pos + 16 <= len(data):
            length, kind, _, _, _ = struct.unpack_from("=IHHII", data, pos)
            if length < 16:
                break
            if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                at = pos + 20  # nlmsghdr + nfgenmsg
                while at + 4 <= pos + length:
                    alen, akind = struct.unpack_from("=HH", data, at)
                    if alen < 4:
                        break
                    if akind & 0x3FFF == NFQA_PACKET_HDR:
                        ids.append(struct.unpack_from("!I", data, at + 4)[0])
                    at += (alen + 3) & ~3
            pos += (length + 3) & ~3
        return ids

    def _release(self, packet_id: int) -> None:
        """Accept every queued packet up to and including `packet_id` (ids increase in arrival order)."""
        self._seq += 1
        self.sock.send(_message(NFQNL_MSG_VERDICT_BATCH, self.queue,
                                _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id)), self._seq))

    def run(self) -> None:
        """Serve until killed."""
        held: collections.deque[tuple[float, int]] = collections.deque()
        while True:
            timeout = max(0.0, held[0][0] - time.monotonic()) if held else None
            ready, _, _ = select.select([self.sock], [], [], timeout)
            now = time.monotonic()
            if ready:
                for pid in self._packet_ids(self.sock.recv(1 << 20)):
                    held.append((now + self.delay_s, pid))
            last = None
            while held and held[0][0] <= time.monotonic():
                last = held.popleft()[1]
            if last is not None:
                self._release(last)


def main() -> int:
    """Delay the packets of one NFQUEUE."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queue", type=int, default=0)
    ap.add_argument("--delay-ms", type=float, required=True)
    args = ap.parse_args()
    q = DelayQueue(args.queue, args.delay_ms / 1000.0)
    print(f"delaying nfqueue {args.queue} by {args.delay_ms} ms", flush=True)
    q.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A minimal DNS client (standard library only) for the lab's resolver: the readiness
probe of ``up`` and the tests use it.  One question, UDP (or TCP), no recursion wanted
from anyone but the lab resolver it is pointed at."""

from __future__ import annotations

import dataclasses
import ipaddress
import random
import socket
import struct

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


@dataclasses.dataclass
class Answer:
    rcode: int
    answers: list  # A/AAAA: address str; MX: (pref, host); TXT: joined str; PTR/CNAME/NS: name

    @property
    def rcode_name(self) -> str:
        return RCODES.get(self.rcode, str(self.rcode))


def _encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\0"


def _read_name(msg: bytes, off: int) -> tuple[str, int]:
    labels, end, jumps = [], None, 0
    while True:
        length = msg[off]
        if length & 0xC0 == 0xC0:
            if end is None:
                end = off + 2
            off = ((length & 0x3F) << 8) | msg[off + 1]
            jumps += 1
            if jumps > 20:
                raise ValueError("compression loop")
            continue
        if length == 0:
            off += 1
            break
        labels.append(msg[off + 1:off + 1 + length].decode("ascii", "replace"))
        off += 1 + length
    return ".".join(labels), (end if end is not None else off)


def _parse(msg: bytes, qid: int) -> Answer:
    rid, flags, qd, an, _ns, _ar = struct.unpack("!HHHHHH", msg[:12])
    if rid != qid:
        raise ValueError("answer to another query")
    off = 12
    for _q in range(qd):
        _name, off = _read_name(msg, off)
        off += 4
    answers = []
    for _a in range(an):
        _name, off = _read_name(msg, off)
        rtype, _cls, _ttl, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
        off += 10
        rdata = msg[off:off + rdlen]
        if rtype == TYPES["A"]:
            answers.append(str(ipaddress.IPv4Address(rdata)))
        elif rtype == TYPES["AAAA"]:
            answers.append(str(ipaddress.IPv6Address(rdata)))
        elif rtype == TYPES["MX"]:
            answers.append((struct.unpack("!H", rdata[:2])[0], _read_name(msg, off + 2)[0]))
        elif rtype == TYPES["TXT"]:
            parts, i = [], 0
            while i < len(rdata):
                parts.append(rdata[i + 1:i + 1 + rdata[i]].decode("utf-8", "replace"))
                i += 1 + rdata[i]
            answers.append("".join(parts))
        elif rtype in (TYPES["PTR"], TYPES["CNAME"], TYPES["NS"]):
            answers.append(_read_name(msg, off)[0])
        off += rdlen
    return Answer(flags & 0x000F, answers)


def query(server: str, name: str, qtype: str = "A", port: int = 53, timeout: float = 2.0,
          tcp: bool = False) -> Answer:
    """Ask ``server`` one question (recursion desired, as a stub resolver does)."""
    qid = random.randrange(1 << 16)
    packet = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _encode_name(name) + \
        struct.pack("!HH", TYPES[qtype], 1)
    if tcp:
        with socket.create_connection((server, port), timeout=timeout) as s:
            s.sendall(struct.pack("!H", len(packet)) + packet)
            head = _recv_exact(s, 2)
            return _parse(_recv_exact(s, struct.unpack("!H", head)[0]), qid)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, (server, port))
        return _parse(s.recv(65535), qid)


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return buf


def answers(server: str, name: str, qtype: str = "A", **kwargs) -> bool:
    """True when the server answers ``name`` with at least one record (a readiness probe)."""
    try:
        a = query(server, name, qtype, **kwargs)
    except (OSError, ValueError, struct.error, IndexError):
        return False
    return a.rcode == 0 and bool(a.answers)

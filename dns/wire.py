"""Raw DNS request parsing and tiny wire builders, without dnslib (pure, layer 0: stdlib only).

Contract:
- `parse_request(data)` → `Request` for a well-formed standard query, else raises:
  `Drop` (too short to answer, or not a query: stay silent), `Reject(rcode, ...)` (answer with that
  rcode: FORMERR for malformed packets, NOTIMP for other opcodes). The question name must be plain
  labels (no compression pointers, ≤ 63 per label, ≤ 255 in total); at most one additional record,
  which must be a root-owned OPT. EDNS version and option contents are reported, not judged.
  `Request.plain` is True when the packet is exactly header + question (+ an OPT without options):
  only such queries may be answered by exact-bytes lookups (an EDNS cookie differs every query).
- `error_response(...)` builds header + question (+ OPT) replies; `patch(cached, request_bytes,
  qname_wire)` turns a cached canonical answer into the reply for this request (ID, RD and CD flags,
  the question's original letter case).
- `answer_blocks(reply)` → (head, answer RRs, rest) when the answers can be reordered by moving
  bytes (no compression pointer into the answer section, none inside it beyond the question), else
  None: cached shuffles are cut from one encoded answer instead of being encoded each.
"""

from __future__ import annotations

import struct

RCODE_NOERROR, RCODE_FORMERR, RCODE_SERVFAIL, RCODE_NXDOMAIN, RCODE_NOTIMP, RCODE_REFUSED = 0, 1, 2, 3, 4, 5
RCODE_BADVERS = 16
TYPE_OPT = 41
MAX_NAME = 255

_HEADER = struct.Struct("!HHHHHH")
_QTAIL = struct.Struct("!HH")
_OPT = struct.Struct("!HHBBBBH")  # type, udp size, ext-rcode, version, flags hi/lo, rdlen


class Drop(Exception):
    """Not worth an answer (too short to carry an ID, or a response rather than a query)."""


class Reject(Exception):
    """Answer with `rcode`; `question` is the raw question section when it could be parsed."""

    def __init__(self, rcode: int, data: bytes, question: bytes = b"", edns: bool = False):
        super().__init__(rcode)
        self.rcode = rcode
        self.data = data
        self.question = question
        self.edns = edns


class Request:
    """A parsed standard query. `qname` is the wire name with its original case."""

    __slots__ = ("data", "do", "edns", "edns_size", "edns_version", "labels", "plain", "qclass", "qname",
                 "qtype")

    def __init__(self, data: bytes, qname: bytes, labels: tuple[bytes, ...], qtype: int, qclass: int,
                 edns: bool, edns_size: int, edns_version: int, do: bool, plain: bool = False):
        self.data = data
        self.qname = qname
        self.labels = labels
        self.qtype = qtype
        self.qclass = qclass
        self.edns = edns
        self.edns_size = edns_size
        self.edns_version = edns_version
        self.do = do
        self.plain = plain

    @property
    def rd(self) -> bool:
        return bool(self.data[2] & 1)

    @property
    def question(self) -> bytes:
        return self.data[12 : 12 + len(self.qname) + 4]


def parse_request(data: bytes) -> Request:
    if type(data) is not bytes:
        data = bytes(data)
    if len(data) < 12:
        raise Drop
    _, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if flags & 0x8000:
        raise Drop
    if (flags >> 11) & 0xF != 0:
        raise Reject(RCODE_NOTIMP, data)
    if qdcount != 1 or ancount or nscount or arcount > 1:
        raise Reject(RCODE_FORMERR, data)
    pos, end = 12, len(data)
    labels = []
    while True:
        if pos >= end:
            raise Reject(RCODE_FORMERR, data)
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length > 63 or pos + 1 + length > end:
            raise Reject(RCODE_FORMERR, data)  # pointers and extended label types included
        labels.append(data[pos + 1 : pos + 1 + length])
        pos += 1 + length
        if pos - 12 > MAX_NAME:
            raise Reject(RCODE_FORMERR, data)
    if pos + 4 > end:
        raise Reject(RCODE_FORMERR, data)
    qname = data[12:pos]
    qtype, qclass = _QTAIL.unpack_from(data, pos)
    pos += 4
    question = data[12:pos]
    if not arcount:
        return Request(data, qname, tuple(labels), qtype, qclass, False, 0, 0, False, pos == end)
    # the one additional record must be OPT owned by the root
    if pos + 11 > end or data[pos] != 0:
        raise Reject(RCODE_FORMERR, data, question)
    rtype, size, _ext_rcode, version, flag_hi, _flag_lo, rdlen = _OPT.unpack_from(data, pos + 1)
    if rtype != TYPE_OPT or pos + 11 + rdlen > end:
        raise Reject(RCODE_FORMERR, data, question)
    return Request(data, qname, tuple(labels), qtype, qclass, True, size, version, bool(flag_hi & 0x80),
                   rdlen == 0 and pos + 11 == end)


def opt_record(udp_size: int, ext_rcode: int = 0) -> bytes:
    """An OPT pseudo-record, version 0, no options."""
    return b"\x00" + _OPT.pack(TYPE_OPT, udp_size, ext_rcode, 0, 0, 0, 0)


def error_response(data: bytes, rcode: int, question: bytes = b"", edns: bool = False,
                   udp_size: int = 1232, aa: bool = False, ra: bool = False) -> bytes:
    """Header (ID, opcode and RD echoed) + the question when known + OPT when the query had one."""
    flags = 0x8000 | (int.from_bytes(data[2:4]) & 0x7900) | (rcode & 0xF)
    if aa:
        flags |= 0x0400
    if ra:
        flags |= 0x0080
    header = _HEADER.pack(int.from_bytes(data[0:2]), flags, 1 if question else 0, 0, 0, 1 if edns else 0)
    return header + question + (opt_record(udp_size, rcode >> 4) if edns else b"")


def patch(cached: bytes, data: bytes, qname: bytes) -> bytes:
    """Give a cached canonical answer this request's ID, RD/CD flags and question letter case."""
    out = bytearray(cached)
    out[0] = data[0]
    out[1] = data[1]
    out[2] = (out[2] & 0xFE) | (data[2] & 0x01)
    out[3] = (out[3] & 0xEF) | (data[3] & 0x10)
    out[12 : 12 + len(qname)] = qname
    return bytes(out)


def truncated_reply(reply: bytes) -> bytes:
    """Header + question of `reply` with TC set and no records (for answers too big to relay)."""
    if len(reply) < 12:
        return reply
    qdcount = int.from_bytes(reply[4:6])
    pos = 12
    if qdcount == 1:
        while pos < len(reply) and reply[pos] != 0:
            if reply[pos] & 0xC0:
                pos += 1
                break
            pos += reply[pos] + 1
        pos += 5
    head = bytearray(reply[:12])
    head[2] |= 0x02
    head[4:12] = _HEADER.pack(0, 0, 1 if qdcount == 1 else 0, 0, 0, 0)[4:12]
    return bytes(head) + reply[12:pos]


# ---------------------------------------------------------------- answer blocks (cheap shuffles)

_RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_RDATA_NAME_AT = {2: 0, 5: 0, 6: 0, 12: 0, 15: 2, 33: 6}  # NS CNAME SOA PTR MX SRV: where a name starts


def _name_end(data: bytes, pos: int, pointers: list[int]) -> int:
    """The offset just past the (possibly compressed) name at `pos`; pointer targets are collected."""
    while True:
        length = data[pos]
        if length >= 0xC0:
            pointers.append(((length & 0x3F) << 8) | data[pos + 1])
            return pos + 2
        if length > 63:
            raise ValueError("extended label type")
        pos += 1 + length
        if length == 0:
            return pos


def _rr_end(data: bytes, pos: int, pointers: list[int]) -> int:
    pos = _name_end(data, pos, pointers)
    rtype, _, _, rdlen = _RR_FIXED.unpack_from(data, pos)
    start, end = pos + 10, pos + 10 + rdlen
    if end > len(data):
        raise ValueError("rdata past the end")
    skip = _RDATA_NAME_AT.get(rtype)
    if skip is not None:
        after = _name_end(data, start + skip, pointers)
        if rtype == 6:
            _name_end(data, after, pointers)
    return end


def answer_blocks(message: bytes) -> tuple[bytes, list[bytes], bytes] | None:
    """Split a reply into (header + question, answer RRs, the rest) when the answer RRs are
    position-independent: no compression pointer inside them points past the question and none
    elsewhere points into them. Then `head + b"".join(permuted blocks) + rest` is the same reply
    with its answers reordered (same length, every pointer still valid). None when that does not
    hold or the message cannot be walked."""
    try:
        qdcount, ancount, nscount, arcount = struct.unpack_from("!HHHH", message, 4)
        if qdcount != 1:
            return None
        q_end = _name_end(message, 12, []) + 4
        inside: list[int] = []
        blocks = []
        pos = q_end
        for _ in range(ancount):
            end = _rr_end(message, pos, inside)
            blocks.append(message[pos:end])
            pos = end
        an_end = pos
        outside: list[int] = []
        for _ in range(nscount + arcount):
            pos = _rr_end(message, pos, outside)
    except (struct.error, IndexError, ValueError):
        return None
    if pos != len(message) or any(p >= q_end for p in inside) or any(q_end <= p < an_end for p in outside):
        return None
    return message[:q_end], blocks, message[an_end:]

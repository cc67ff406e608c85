"""Batched UDP I/O with Linux recvmmsg/sendmmsg through ctypes (layer 3: sockets, no asyncio).

Contract:
- `Batch.create(sock, size)` → a `Batch` bound to the non-blocking UDP socket `sock`, or None when
  the platform lacks recvmmsg/sendmmsg (callers then use plain recvfrom/sendto).
- `recv()` reads up to `size` datagrams with one system call and returns how many (0 when none
  are waiting); datagram i is `query(i)` (bytes, at most SLOT bytes: longer ones are cut), its
  sender `sender(i)` (the socket-module address tuple, built only when asked).
- `reply(i, data)` stages an answer to datagram i's sender; `flush()` sends every staged answer
  with one sendmmsg and clears the stage. An answer the kernel refuses (a full buffer, or an error
  for that destination) is dropped: this is UDP, the client retries. Staged answers name their
  destination by the receive slot: `flush` before the next `recv`.
- Raises OSError from `recv` only for socket errors other than "nothing to read".
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import socket
import sys

SLOT = 4096  # bytes per datagram buffer, both directions
_NAME = 128  # sizeof(struct sockaddr_storage)
_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.c_void_p),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


_HDR = ctypes.sizeof(_MMsgHdr)
_LEN_AT = _MMsgHdr.len.offset // 4  # in 32-bit words
_NAMELEN_AT = _MMsgHdr.hdr.offset + _MsgHdr.namelen.offset


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        recv, send = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    send.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    recv.restype = send.restype = ctypes.c_int
    return libc


class Batch:
    def __init__(self, libc: ctypes.CDLL, sock: socket.socket, size: int):
        self._recvmmsg, self._sendmmsg = libc.recvmmsg, libc.sendmmsg
        self.sock = sock
        self.size = size
        self._family = sock.family
        self._fd = sock.fileno()
        self._in = bytearray(size * SLOT)
        self._out = bytearray(size * SLOT)
        self._names = bytearray(size * _NAME)
        self._rvec_raw = bytearray(size * _HDR)
        self._svec_raw = bytearray(size * _HDR)
        in_buf = (ctypes.c_char * len(self._in)).from_buffer(self._in)
        out_buf = (ctypes.c_char * len(self._out)).from_buffer(self._out)
        names = (ctypes.c_char * len(self._names)).from_buffer(self._names)
        self._riov = (_IoVec * size)()
        self._siov_raw = bytearray(size * ctypes.sizeof(_IoVec))
        self._siov = (_IoVec * size).from_buffer(self._siov_raw)
        self._rvec = (_MMsgHdr * size).from_buffer(self._rvec_raw)
        self._svec = (_MMsgHdr * size).from_buffer(self._svec_raw)
        self._keep = (in_buf, out_buf, names)
        self._in_addr = ctypes.addressof(in_buf)
        self._names_addr = ctypes.addressof(names)
        self._rvec_addr = ctypes.addressof(self._rvec)
        self._svec_addr = ctypes.addressof(self._svec)
        for i in range(size):
            self._riov[i].base, self._riov[i].len = self._in_addr + i * SLOT, SLOT
            self._siov[i].base, self._siov[i].len = ctypes.addressof(out_buf) + i * SLOT, 0
            for vec, iov in ((self._rvec, self._riov), (self._svec, self._siov)):
                hdr = vec[i].hdr
                hdr.name, hdr.namelen = self._names_addr + i * _NAME, _NAME
                hdr.iov, hdr.iovlen = ctypes.addressof(iov) + i * ctypes.sizeof(_IoVec), 1
        self._lens = memoryview(self._rvec_raw).cast("I")  # msg_len of datagram i: [i * step + _LEN_AT]
        self._step = _HDR // 4
        self._view_in = memoryview(self._in)
        self._view_out = memoryview(self._out)
        self._siov_q = memoryview(self._siov_raw).cast("Q")  # [2 * j + 1] = length of answer j
        self._svec_q = memoryview(self._svec_raw).cast("Q")  # [j * step8] = name pointer of answer j
        self._svec_i = memoryview(self._svec_raw).cast("I")
        self._rvec_i = self._lens
        self.staged = 0

    @classmethod
    def create(cls, sock: socket.socket, size: int) -> Batch | None:
        libc = _libc()
        if libc is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        return cls(libc, sock, size)

    def recv(self) -> int:
        got = self._recvmmsg(self._fd, self._rvec_addr, self.size, socket.MSG_DONTWAIT, None)
        if got < 0:
            err = ctypes.get_errno()
            if err in _AGAIN:
                return 0
            raise OSError(err, "recvmmsg failed")
        return got

    def query(self, i: int) -> bytes:
        start = i * SLOT
        return bytes(self._view_in[start : start + self._lens[i * self._step + _LEN_AT]])

    def sender(self, i: int) -> tuple:
        name = self._names[i * _NAME : (i + 1) * _NAME]
        port = int.from_bytes(name[2:4])
        if self._family == socket.AF_INET:
            return socket.inet_ntop(socket.AF_INET, name[4:8]), port
        return (socket.inet_ntop(socket.AF_INET6, name[8:24]), port, int.from_bytes(name[4:8]),
                int.from_bytes(name[24:28], sys.byteorder))

    def reply(self, i: int, data: bytes) -> None:
        """Stage `data` for datagram i's sender (sent at once with sendto when it exceeds SLOT)."""
        size = len(data)
        if size > SLOT:
            try:
                self.sock.sendto(data, self.sender(i))
            except OSError:
                pass
            return
        j = self.staged
        start = j * SLOT
        self._view_out[start : start + size] = data
        self._siov_q[2 * j + 1] = size
        step8 = _HDR // 8
        self._svec_q[j * step8] = self._names_addr + i * _NAME  # msg_name: that datagram's sender
        self._svec_i[(j * _HDR + _NAMELEN_AT) // 4] = self._rvec_i[(i * _HDR + _NAMELEN_AT) // 4]
        self.staged = j + 1

    def flush(self) -> int:
        """Send the staged answers; returns how many the kernel took."""
        total, start, sent = self.staged, 0, 0
        self.staged = 0
        while start < total:
            got = self._sendmmsg(self._fd, self._svec_addr + start * _HDR, total - start, 0)
            if got < 0:
                if ctypes.get_errno() in _AGAIN:
                    break
                start += 1  # that destination failed (e.g. unreachable): drop it, send the rest
                continue
            start += got
            sent += got
        return sent

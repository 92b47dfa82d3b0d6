"""UDP sendto that keeps the GIL, for the RTP pacer thread.

`socket.sendto` releases the GIL around the system call. From the pacer thread that is a hand-off
per packet: the busy event loop takes the GIL during the few microseconds of the send, and the
pacer waits up to a whole switch interval to get it back, so a phase of 50 calls could leave
50 ms late. A non-blocking sendto on a datagram socket never waits (a full buffer is EAGAIN and
the packet is lost, as a late frame should be), so holding the GIL through it costs nothing:
libc's sendto through `ctypes.PyDLL`, which calls without releasing the GIL. Where there is no
such libc, the plain `socket.sendto` is used.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

_FAMILY = struct.Struct("=H")  # sa_family_t, host order
_PORT = struct.Struct("!H")


def sockaddr(addr: tuple[Any, ...]) -> bytes:
    """struct sockaddr_in / sockaddr_in6 for an (ip literal, port[, flowinfo, scope]) tuple.
    OSError for something that is not an IP literal, OverflowError/TypeError for a bad port."""
    host, port = addr[0], addr[1]
    if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise OverflowError(f"port must be 0-65535, got {port!r}")
    if ":" in host:
        packed = socket.inet_pton(socket.AF_INET6, host)
        scope = addr[3] if len(addr) > 3 else 0
        return _FAMILY.pack(socket.AF_INET6) + _PORT.pack(port) + struct.pack("=I16sI", 0, packed, scope)
    return _FAMILY.pack(socket.AF_INET) + _PORT.pack(port) + socket.inet_pton(socket.AF_INET, host) + bytes(8)


def _libc_sendto() -> Callable[[int, bytes, bytes], None] | None:
    try:
        libc = ctypes.PyDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.sendto
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_char_p,
                   ctypes.c_uint32]
    fn.restype = ctypes.c_ssize_t
    flags = getattr(socket, "MSG_DONTWAIT", 0)

    def send(fd: int, data: bytes, sa: bytes) -> None:
        if fn(fd, data, len(data), flags, sa, len(sa)) < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return send


_SEND = _libc_sendto()
# The network's state, not ours: that packet is lost, the call goes on (stats: send_errors).
TRANSIENT = {errno.EAGAIN, errno.ENOBUFS, errno.EINTR, errno.ECONNREFUSED, errno.EHOSTUNREACH,
             errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN, errno.EPERM, errno.EACCES}


class DatagramSender:
    """Sends datagrams from one socket, the GIL held (see the module docstring)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._dest: tuple[Any, ...] | None = None
        self._sa = b""

    def address(self, addr: tuple[Any, ...]) -> bytes:
        """`sockaddr(addr)`, kept for the next packet to the same place."""
        if addr != self._dest:
            self._sa, self._dest = sockaddr(addr), addr
        return self._sa

    def sendto(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if _SEND is None:
            self.sock.sendto(data, addr)
            return
        if addr != self._dest:
            self._sa, self._dest = sockaddr(addr), addr
        fd = self.sock.fileno()
        if fd < 0:
            raise OSError(9, "Bad file descriptor")
        _SEND(fd, data, self._sa)

"""UDP port pairs for media: even RTP ports with RTCP on port + 1, bound and handed out round-robin."""

from __future__ import annotations

import errno
import socket


def bind_pair(host: str, port: int) -> list[socket.socket]:
    """Non-blocking UDP sockets bound to (host, port) and (host, port + 1); OSError if either is taken."""
    socks: list[socket.socket] = []
    try:
        for p in (port, port + 1):
            socks.append(socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM))
            socks[-1].setblocking(False)
            socks[-1].bind((host, p))
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


class PortPool:
    """Even ports (RTCP = port + 1) from [lo, hi], handed out round-robin rather than lowest
    first: a port just released is reused last, so late packets of the previous call do not reach
    the next one. Ports another process holds are skipped when a bind finds them taken."""

    def __init__(self, lo: int, hi: int) -> None:
        self.ports = list(range(lo + (lo & 1), hi, 2))  # port + 1 <= hi
        if not self.ports:
            raise ValueError(f"RTP port range {lo}-{hi} holds no even port pair")
        self._used: set[int] = set()
        self._cursor = 0

    @property
    def in_use(self) -> int:
        return len(self._used)

    def free(self) -> int:
        """Port pairs left (for overload control: refuse a call before ringing when 0)."""
        return len(self.ports) - len(self._used)

    def bind(self, host: str) -> tuple[int, list[socket.socket]]:
        """Bind the next free pair on `host`, marked in use; RuntimeError when none is free."""
        n = len(self.ports)
        for i in range(n):
            port = self.ports[(self._cursor + i) % n]
            if port in self._used:
                continue
            try:
                socks = bind_pair(host, port)
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise
            self._used.add(port)
            self._cursor = (self._cursor + i + 1) % n
            return port, socks
        raise RuntimeError("no free RTP port")

    def release(self, port: int) -> None:
        self._used.discard(port)

"""asyncio adapter for the sans-IO SIP core: UDP and TCP transports and the core's timer.

Feed bytes in, drain datagrams and events out, re-arm one loop timer: the same
few lines after every input, as aioquic's asyncio protocol does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from voice import sipwire
from voice.aio.resolve import HostResolver, cut
from voice.sip.core import SipCore
from voice.sip.events import Event
from voice.sip.message import SipParseError, StreamParser
from voice.sip.transaction import Address

log = logging.getLogger("voice.sip")

MAX_DATAGRAM = 65535
MAX_TCP_BUFFER = 1 << 20  # a peer that sends a megabyte without a complete message is dropped
UDP_BUFFER = 4 << 20  # SO_RCVBUF/SO_SNDBUF asked for (the kernel caps it at net.core.rmem_max/wmem_max)
UDP_DRAIN = 64  # datagrams read per readiness event (asyncio itself reads one)
MAX_UDP_PAYLOAD = 65507  # 65535 - 20 (IPv4 header) - 8 (UDP header)
UDP_REQUEST_LIMIT = 1300  # RFC 3261 18.1.1: larger requests go over TCP when the MTU is unknown
LOGGED_MAX = 256  # distinct (problem, peer) pairs logged before the set starts over


class SipEndpoint:
    """Runs a SipCore on the event loop; events of a call go to `call.app.on_event`, others to `on_event`."""

    def __init__(self, core: SipCore, on_event: Callable[[Event], None]) -> None:
        self.core = core
        self.on_event = on_event
        self.loop = asyncio.get_running_loop()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.base_events.Server | None = None
        self._conns: dict[int, asyncio.StreamWriter] = {}
        self._conn_by_peer: dict[tuple[str, int], int] = {}
        self._conn_ids = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.udp_port = 0
        self.tcp_port = 0
        self.resolver = HostResolver(self.loop)
        self._logged: set[tuple[str, str]] = set()
        self.stats = {"oversized_dropped": 0, "requests_over_tcp": 0, "unresolved_dropped": 0}

    # ---- lifecycle ---------------------------------------------------------------
    async def start(self, host: str, port: int, transports: tuple[str, ...] = ("udp", "tcp")) -> None:
        if "udp" in transports:
            infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            sock = udp_socket(infos[0][0], infos[0][4])
            self._udp, _ = await self.loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self, sock), sock=sock)
            self.udp_port = self._udp.get_extra_info("sockname")[1]
            port = port or self.udp_port  # TCP on the same port when UDP picked one
        if "tcp" in transports:
            self._tcp_server = await asyncio.start_server(self._serve_tcp, host, port, limit=MAX_TCP_BUFFER)
            self.tcp_port = self._tcp_server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._udp is not None:
            self._udp.close()
        if self._tcp_server is not None:
            self._tcp_server.close()
        for writer in list(self._conns.values()):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tcp_server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp_server.wait_closed(), 2)

    # ---- the sans-IO loop ------------------------------------------------------------
    def now(self) -> float:
        return self.loop.time()

    def feed(self, data: bytes, source: Address) -> None:
        sipwire.received(data, source)  # metrics, trace, security events
        try:
            self.core.receive(data, source, self.now())
        except Exception:  # a peer must never take the service down
            log.exception("SIP core failed on a message from %s", source)
        self.flush()

    def flush(self) -> None:
        """Send what the core queued, dispatch its events, re-arm its timer."""
        for data, peer in self.core.outgoing():
            self._transmit(data, peer)
        for event in self.core.events():
            # A call's events go to the object attached to it (`call.app`: the inbound CallHandler or
            # an agent leg); the rest (new calls, registration) to `on_event`.
            app = getattr(getattr(event, "call", None), "app", None)
            handler = getattr(app, "on_event", None) or self.on_event
            try:
                handler(event)
            except Exception:
                log.exception("handler failed on %s", type(event).__name__)
        # handlers may have produced more output (answers, BYEs)
        if self.core.has_pending():
            self.flush()
            return
        self._arm()

    def _arm(self) -> None:
        deadline = self.core.get_timer()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = None if deadline is None else self.loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            self.core.handle_timer(self.now())
        except Exception:
            log.exception("SIP timer failed")
        self.flush()

    # ---- sending ------------------------------------------------------------------
    def _log_once(self, problem: str, peer: Address, message: str, *args: object) -> None:
        key = (problem, peer.host)
        if key in self._logged:
            return
        if len(self._logged) >= LOGGED_MAX:
            self._logged.clear()
        self._logged.add(key)
        log.warning(message, *args)

    def _transmit(self, data: bytes, peer: Address) -> None:
        sipwire.sent(data, peer)
        if peer.transport == "tcp":
            self._send_tcp(data, peer)
            return
        if len(data) > UDP_REQUEST_LIMIT and not data.startswith(b"SIP/"):
            # RFC 3261 18.1.1: a request over 1300 bytes (path MTU unknown) MUST go over a
            # congestion-controlled transport; UDP again only if the TCP connection fails.
            self.stats["requests_over_tcp"] += 1
            self._spawn(self._send_request_over_tcp(data, peer))
            return
        if len(data) > MAX_UDP_PAYLOAD:
            # A response goes back the way its request came (18.2.2); one too big for a datagram
            # cannot, so it is dropped, and said so (the transaction layer will time out).
            self.stats["oversized_dropped"] += 1
            self._log_once("oversized", peer, "SIP response of %d bytes to %s is larger than a UDP datagram "
                           "(%d): not sent", len(data), cut(peer.host), MAX_UDP_PAYLOAD)
            return
        self._send_udp(data, peer)

    def _send_udp(self, data: bytes, peer: Address) -> None:
        if self._udp is None:
            self._log_once("no_udp", peer, "no UDP transport to reach %s", cut(peer.host))
            return
        try:
            ipaddress.ip_address(peer.host)
        except ValueError:
            self._spawn(self._resolve_and_send(data, peer))
            return
        self._udp.sendto(data, (peer.host, peer.port))

    async def _resolve_and_send(self, data: bytes, peer: Address) -> None:
        addr = await self.resolver.resolve(peer.host, peer.port)
        if addr is None:
            self.stats["unresolved_dropped"] += 1  # logged once by the resolver
            return
        if self._udp is not None:
            self._udp.sendto(data, addr)

    async def _send_request_over_tcp(self, data: bytes, peer: Address) -> None:
        tcp = Address(peer.host, peer.port, "tcp")
        if await self._connect_and_send(_via_over_tcp(data), tcp, quiet=True):
            return
        if len(data) > MAX_UDP_PAYLOAD:
            self.stats["oversized_dropped"] += 1
            self._log_once("oversized", peer, "SIP request of %d bytes to %s: no TCP connection and too "
                           "large for UDP: not sent", len(data), cut(peer.host))
            return
        self._log_once("tcp_fallback", peer, "SIP request of %d bytes to %s sent over UDP: TCP connection "
                       "failed (RFC 3261 18.1.1)", len(data), cut(peer.host))
        self._send_udp(data, peer)

    def _send_tcp(self, data: bytes, peer: Address) -> None:
        conn = peer.conn if peer.conn in self._conns else self._conn_by_peer.get((peer.host, peer.port))
        writer = self._conns.get(conn) if conn is not None else None
        if writer is not None and not writer.is_closing():
            writer.write(data)
            return
        self._spawn(self._connect_and_send(data, peer))

    async def _connect_and_send(self, data: bytes, peer: Address, *, quiet: bool = False) -> bool:
        """Open a TCP connection to `peer` (its name resolved like any other), send, then read
        the answers on it; False when no connection could be made."""
        addr = await self.resolver.resolve(peer.host, peer.port)
        if addr is None:
            return False
        conn = self._conn_by_peer.get(addr)
        existing = self._conns.get(conn) if conn is not None else None
        if existing is not None and not existing.is_closing():
            existing.write(data)
            return True
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(addr[0], addr[1], limit=MAX_TCP_BUFFER), 5)
        except (OSError, TimeoutError) as exc:
            if not quiet:
                self._log_once("tcp_connect", peer, "TCP connect to %s:%d failed: %s", cut(peer.host),
                               peer.port, exc)
            return False
        writer.write(data)
        self._spawn(self._read_connection(reader, writer))
        return True

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """Every spawned task's end is looked at: a failure is logged here (briefly), never left as
        "Task exception was never retrieved"."""
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("SIP transport task failed: %s: %s", exc.__class__.__name__, cut(str(exc), 200))

    # ---- receiving over TCP -----------------------------------------------------------
    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        await self._read_connection(reader, writer)

    async def _read_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = next(self._conn_ids)
        peername = writer.get_extra_info("peername")
        host, port = peername[0], peername[1]
        self._conns[conn] = writer
        self._conn_by_peer[(host, port)] = conn
        source = Address(host, port, "tcp", conn)
        parser = StreamParser()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                try:
                    messages = parser.feed(data)
                except SipParseError as exc:
                    log.info("closing TCP connection from %s: %s", source, exc.reason)
                    self.core.receive_message(exc, source, self.now())
                    self.flush()
                    break
                for message in messages:
                    sipwire.received_message(message, source)
                    try:
                        self.core.receive_message(message, source, self.now())
                    except Exception:
                        log.exception("SIP core failed on a message from %s", source)
                self.flush()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._conns.pop(conn, None)
            if self._conn_by_peer.get((host, port)) == conn:
                del self._conn_by_peer[(host, port)]
            writer.close()


def _via_over_tcp(data: bytes) -> bytes:
    """The request with its top Via's transport changed to TCP (RFC 3261 18.1.1: the Via names the
    transport the request is really sent over)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    for i, line in enumerate(lines):
        name = line.split(b":", 1)[0].strip().lower()
        if name in (b"via", b"v"):
            lines[i] = line.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP", 1)
            break
    return b"\r\n".join(lines) + sep + body


def udp_socket(family: int, address: Any) -> socket.socket:
    """A bound non-blocking UDP socket with large buffers: a burst of INVITEs (100 calls a second)
    arriving while the loop is busy with media must wait in the kernel, not be dropped there."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, UDP_BUFFER)
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: SipEndpoint, sock: socket.socket) -> None:
        self.endpoint = endpoint
        self.sock = sock

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._receive(data, addr)
        # asyncio reads one datagram per wake-up, and with hundreds of RTP sockets ready one
        # loop iteration can take many milliseconds: signalling would trail behind the media.
        # So drain what is queued now (bounded, so the media gets its turn too).
        for _ in range(UDP_DRAIN):
            try:
                data, addr = self.sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.error_received(exc)
                return
            self._receive(data, addr)

    def _receive(self, data: bytes, addr: tuple[Any, ...]) -> None:
        host, port = str(addr[0]), int(addr[1])
        self.endpoint.feed(data, Address(host, port, "udp"))

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)  # ICMP unreachable from a peer that went away

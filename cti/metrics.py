"""Every Prometheus metric of the service, in one registry, served as `GET /metrics`.

cti imports nothing from voice, so call control, SIP and speech report here through small
functions (`call_started`, `sip_message`, `speech_recognized`, ...). What already lives in an
object (queues and agents in the AgentDesk, RTP packet totals in the media layer) is read at
scrape time by collectors, so the hot paths pay nothing for it.

Labels stay low-cardinality: methods, status codes, outcomes, queue names, engine names; never a
caller number, a call id or a URL with ids in it.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Outcomes a call ends with (anything else is counted as "other", so a typo cannot add a series).
CALL_OUTCOMES = ("completed", "caller_hangup", "hangup", "transfer", "agent", "abandoned", "error",
                 "rejected", "cancelled", "interrupted", "other")
SIP_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "REFER", "NOTIFY", "INFO",
               "UPDATE", "PRACK", "SUBSCRIBE", "MESSAGE", "PUBLISH")
SPEECH_STATUSES = ("match", "nomatch", "noinput", "error", "cancelled", "other")

CALLS_ACTIVE = Gauge("voice_calls_active", "Calls in progress on this node", registry=REGISTRY)
CALLS_TOTAL = Counter("voice_calls", "Calls ended, by outcome", ["outcome"], registry=REGISTRY)
SIP_REQUESTS = Counter("voice_sip_requests", "SIP requests by direction and method",
                       ["direction", "method"], registry=REGISTRY)
SIP_RESPONSES = Counter("voice_sip_responses", "SIP responses by direction and status code",
                        ["direction", "code"], registry=REGISTRY)
SIP_UNPARSABLE = Counter("voice_sip_unparsable", "Datagrams/messages that were not SIP",
                         registry=REGISTRY)
FLOW_STEPS = Counter("voice_flow_steps", "IVR flow nodes entered", ["flow"], registry=REGISTRY)
SPEECH_RECOGNITIONS = Counter("voice_speech_recognitions", "Speech recognitions by engine and status",
                              ["engine", "status"], registry=REGISTRY)
SPEECH_LATENCY = Histogram("voice_speech_recognition_seconds",
                           "From end of speech to the recognition result", ["engine"],
                           buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0),
                           registry=REGISTRY)
HTTP_REQUESTS = Counter("voice_http_requests", "HTTP requests by route, method and status class",
                        ["route", "method", "status"], registry=REGISTRY)
HTTP_LATENCY = Histogram("voice_http_request_seconds", "HTTP request latency by route",
                         ["route", "method"],
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
                         registry=REGISTRY)
INGEST_REQUESTS = Counter("voice_ingest_requests", "Interaction ingest requests by status code class",
                          ["status"], registry=REGISTRY)
INGEST_LATENCY = Histogram("voice_ingest_request_seconds", "Interaction ingest latency",
                           buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
                           registry=REGISTRY)
DB_ERRORS = Counter("voice_database_errors", "Database operations that raised, by operation",
                    ["operation"], registry=REGISTRY)


# ---- calls (reported by call control) -------------------------------------------------------
def call_started() -> None:
    """A call was answered (or an outbound leg began): one more active call."""
    CALLS_ACTIVE.inc()


def call_ended(outcome: str) -> None:
    """The call that `call_started` counted has ended with `outcome` (see CALL_OUTCOMES)."""
    CALLS_ACTIVE.dec()
    CALLS_TOTAL.labels(outcome if outcome in CALL_OUTCOMES else "other").inc()


def call_refused(outcome: str = "rejected") -> None:
    """A call that was never answered (refused, cancelled while ringing): counted, never active."""
    CALLS_TOTAL.labels(outcome if outcome in CALL_OUTCOMES else "other").inc()


# ---- SIP (reported by voice.sipwire from the SipEndpoint) -------------------------------------
_SIP_METHOD_BYTES = frozenset(m.encode() for m in SIP_METHODS)
_sip_children: dict[tuple[str, bytes], Any] = {}  # (direction, method or code) -> counter child


def sip_message(direction: str, first_line: bytes) -> None:
    """Count one SIP message from its start line (`direction` is "in" or "out").

    Called for every message: the counter child is looked up in a dict (label resolution costs
    several times more); keys are known methods and 3-digit codes only, so the dict stays small."""
    response = first_line.startswith(b"SIP/2.0 ")
    key = first_line[8:11] if response else first_line.split(b" ", 1)[0]
    child = _sip_children.get((direction, key))
    if child is None:
        if response:
            valid = len(key) == 3 and key.isdigit()
            child = SIP_RESPONSES.labels(direction, key.decode() if valid else "other")
        else:
            valid = key in _SIP_METHOD_BYTES
            child = SIP_REQUESTS.labels(direction, key.decode() if valid else "other")
        if valid:
            _sip_children[(direction, key)] = child
    child.inc()


# ---- flows and speech ---------------------------------------------------------------------
_flow_children: dict[str, Any] = {}


def flow_step(flow: str) -> None:
    child = _flow_children.get(flow)
    if child is None:
        child = _flow_children[flow] = FLOW_STEPS.labels(flow)  # flows: a handful of files
    child.inc()


def speech_recognized(engine: str, status: str, seconds: float | None) -> None:
    """One recognition finished; `seconds` from the end of speech to the result, when known."""
    SPEECH_RECOGNITIONS.labels(engine or "unknown", status if status in SPEECH_STATUSES else "other").inc()
    if seconds is not None and seconds >= 0:
        SPEECH_LATENCY.labels(engine or "unknown").observe(seconds)


def database_error(operation: str) -> None:
    DB_ERRORS.labels(operation).inc()


# ---- RTP (the media layer reports; read at scrape time) --------------------------------------
class LatenessHistogram:
    """Send lateness of RTP packets: a bisect and an increment per observation, no lock and no
    label look-up, because the pacer calls it for every packet it sends. Exported by RtpCollector."""

    BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08)

    def __init__(self, bounds: tuple[float, ...] = BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, seconds: float, count: int = 1) -> None:
        """`count` packets that left `seconds` after their deadline (one pacer wake sends many)."""
        self.counts[bisect.bisect_left(self.bounds, seconds)] += count
        self.sum += seconds * count

    def buckets(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(total)))
        return out


RTP_SEND_LATENESS = LatenessHistogram()
RtpTotals = Mapping[str, int]  # {"sent": n, "received": n, "late": n, "overdue": n, "dropped": n}
_rtp_provider: Callable[[], RtpTotals] | None = None


def set_rtp_totals_provider(provider: Callable[[], RtpTotals] | None) -> None:
    """Register what returns the node's RTP packet totals since start ({"sent", "received", "late"})."""
    global _rtp_provider
    _rtp_provider = provider


def rtp_send_lateness(seconds: float, count: int = 1) -> None:
    """How late `count` RTP packets left after their deadline (seconds, >= 0)."""
    RTP_SEND_LATENESS.observe(seconds, count)


class RtpCollector(Collector):
    def collect(self) -> Iterator[Any]:
        totals: RtpTotals = {}
        if _rtp_provider is not None:
            try:
                totals = _rtp_provider()
            except Exception:
                log.exception("RTP totals provider failed")
        for key, help_text in (("sent", "RTP packets sent"), ("received", "RTP packets received"),
                               ("late", "RTP packets sent later than their deadline"),
                               ("overdue", "RTP packets made after their deadline: the pacer was later "
                                           "than [rtp] send_ahead_ms (only with a transmitter)"),
                               ("dropped", "RTP packets lost on the way to the RTP transmitter process "
                                           "(its queue was full: the process is stuck or starved)")):
            family = CounterMetricFamily(f"voice_rtp_packets_{key}", help_text)
            family.add_metric([], float(totals.get(key, 0)))
            yield family
        h = RTP_SEND_LATENESS
        lateness = HistogramMetricFamily("voice_rtp_send_lateness_seconds",
                                         "How late RTP packets left after their deadline")
        lateness.add_metric([], h.buckets(), sum_value=h.sum)
        yield lateness


# ---- the garbage collector (the media waits for it: a collection holds the GIL) --------------
class GcPauses:
    """How long each collection of each generation took (gc.callbacks), as histograms: a full
    collection longer than `[rtp] send_ahead_ms` shows on the wire. The callback runs in the
    thread that triggered the collection, and collections never overlap: one start time will do."""

    BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32)

    def __init__(self) -> None:
        self.generations = [LatenessHistogram(self.BUCKETS) for _ in range(3)]
        self._start = 0.0

    def callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.generations[min(2, info.get("generation", 2))].observe(time.perf_counter() - self._start)

    def install(self) -> None:
        if self.callback not in gc.callbacks:
            gc.callbacks.append(self.callback)

    def remove(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self.callback)


GC_PAUSES = GcPauses()


def watch_gc() -> None:
    """Time every garbage collection from now on (the service calls it once it runs)."""
    GC_PAUSES.install()


class GcCollector(Collector):
    def collect(self) -> Iterator[Any]:
        family = HistogramMetricFamily("voice_gc_pause_seconds",
                                       "Garbage collections by generation and how long each held the "
                                       "interpreter", labels=["generation"])
        for generation, h in enumerate(GC_PAUSES.generations):
            family.add_metric([str(generation)], h.buckets(), sum_value=h.sum)
        yield family


# ---- queues and agents (read from the desk at scrape time) ------------------------------------
# A desk snapshot: {"queues": {name: waiting}, "longest_wait": {name: seconds},
# "agents": [{"state": ...}, ...]} (cti.routing.AgentDesk.snapshot plus longest waits).
DeskSnapshot = Callable[[], Mapping[str, Any]]
_desks: dict[int, DeskSnapshot] = {}
_desks_lock = threading.Lock()
AGENT_STATES = ("available", "ringing", "on_call", "wrap_up", "away")


def add_desk(key: int, snapshot: DeskSnapshot) -> None:
    with _desks_lock:
        _desks[key] = snapshot


def remove_desk(key: int) -> None:
    with _desks_lock:
        _desks.pop(key, None)


class DeskCollector(Collector):
    def collect(self) -> Iterator[Any]:
        waiting = GaugeMetricFamily("voice_queue_waiting", "Callers waiting per queue", labels=["queue"])
        longest = GaugeMetricFamily("voice_queue_longest_wait_seconds",
                                    "Longest current wait per queue", labels=["queue"])
        agents = GaugeMetricFamily("voice_agents", "Agents by state", labels=["state"])
        with _desks_lock:
            providers = list(_desks.values())
        per_queue: dict[str, int] = {}
        longest_wait: dict[str, float] = {}
        by_state = dict.fromkeys(AGENT_STATES, 0)
        for provider in providers:
            try:
                snap = provider()
            except Exception:
                log.exception("desk snapshot failed")
                continue
            for name, count in snap.get("queues", {}).items():
                per_queue[name] = per_queue.get(name, 0) + int(count)
            for name, seconds in snap.get("longest_wait", {}).items():
                longest_wait[name] = max(longest_wait.get(name, 0.0), float(seconds))
            for agent in snap.get("agents", []):
                state = str(agent.get("state"))
                by_state[state if state in by_state else "other"] = by_state.get(state, 0) + 1
        for name in sorted(per_queue):
            waiting.add_metric([name], per_queue[name])
            longest.add_metric([name], longest_wait.get(name, 0.0))
        for state, count in by_state.items():
            agents.add_metric([state], count)
        yield waiting
        yield longest
        yield agents


REGISTRY.register(RtpCollector())
REGISTRY.register(GcCollector())
REGISTRY.register(DeskCollector())


def render() -> bytes:
    """The whole registry in the Prometheus text format."""
    return generate_latest(REGISTRY)


def status_class(status: int) -> str:
    return f"{status // 100}xx"


class Timer:
    """`with Timer() as t: ...; t.seconds`: monotonic wall time of a block."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def sample_value(families: Iterable[Any], name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """The value of one sample in parsed families (prometheus_client.parser); for tests and tools."""
    for family in families:
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                return float(sample.value)
    return None

"""Recognition worker pool: processes that load the engine once and decode many streams.

Why processes: PocketSphinx holds the GIL while decoding (measured: two threads run
at 0.47x the speed of one), so threads would serialize it; Vosk releases it, but one
design for both keeps things simple and isolates a crashing engine from the loop.

Whole utterances (Whisper): an engine that is not streaming decodes an utterance only
once it has ended, so nothing is pinned: the session keeps the audio in the loop's process
and, at the end of speech, puts the utterance on one queue shared by all workers; whichever
worker is free takes it, together with any other utterances for the same grammar that ended
meanwhile (up to `batch` of them, decoded in one encoder pass).

Session affinity (streaming engines): a stream lives in one worker from its first chunk to its result
(the decoder state is in that process). Each worker has its own input queue; the
pool pins a new session to the worker with the fewest open sessions and sends every
chunk for it to that queue. `multiprocessing.Queue.put` only appends to a buffer
(a feeder thread pickles and writes), so the event loop never blocks on a busy
worker. Results come back on one shared queue, read by one thread that hands them
to the loop with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing as mp
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from voice.asr.engine import EngineError, EngineResult, EngineSpec, EngineStream, create_engine

log = logging.getLogger(__name__)

_MODEL_LOADS = 0  # per worker process: how many times the engine was loaded (must stay 1)


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _serve_utterances(wid: int, engine: Any, inq: Any, shared: Any, outq: Any, batch: int) -> None:
    """Non-streaming engine: take ended utterances from the shared queue, a batch at a time."""
    held: list[tuple[Any, ...]] = []  # taken while batching but for another grammar
    while True:
        try:
            ctl = inq.get_nowait()
        except queue.Empty:
            ctl = None
        if ctl is not None:
            if ctl[0] == "stop":
                return
            outq.put(("stats", wid, {"pid": os.getpid(), "model_loads": _MODEL_LOADS, "rss_mb": _rss_mb(),
                                     "cpu_seconds": time.process_time(), **engine.stats()}))
        if held:
            first = held.pop(0)
        else:
            try:
                first = shared.get(timeout=0.05)
            except queue.Empty:
                continue
        group = [first]
        while len(group) < batch:
            try:
                nxt = shared.get_nowait()
            except queue.Empty:
                break
            (group if nxt[2] == first[2] else held).append(nxt)
        t = time.perf_counter()
        try:
            results = engine.decode_utterances([np.frombuffer(m[3], dtype=np.int16) for m in group], first[2])
        except Exception as exc:  # one bad batch must not take the worker down
            log.exception("asr worker %d: decode failed", wid)
            for m in group:
                outq.put(("error", m[1], f"{type(exc).__name__}: {exc}"))
            continue
        wall = time.perf_counter() - t
        for m, res in zip(group, results, strict=True):
            outq.put(("result", m[1], replace(res, cpu_seconds=wall / len(group), batch=len(group))))


def _worker_main(wid: int, spec: EngineSpec, inq: Any, outq: Any, shared: Any = None, batch: int = 1) -> None:
    """Worker process loop: load once, then serve open/audio/finish/cancel messages in order
    (streaming engines) or whole utterances from the shared queue."""
    global _MODEL_LOADS
    logging.basicConfig(level=logging.WARNING)
    t0 = time.monotonic()
    try:
        engine = create_engine(spec)
        _MODEL_LOADS += 1
    except Exception as exc:
        outq.put(("failed", wid, f"{type(exc).__name__}: {exc}"))
        return
    outq.put(("ready", wid, {"pid": os.getpid(), "load_seconds": time.monotonic() - t0, "rss_mb": _rss_mb(),
                             "streaming": engine.streaming}))
    if not engine.streaming:
        _serve_utterances(wid, engine, inq, shared, outq, max(1, batch))
        return
    streams: dict[int, EngineStream | str] = {}
    while True:
        msg = inq.get()
        op = msg[0]
        if op == "stop":
            break
        if op == "stats":
            outq.put(("stats", wid, {"pid": os.getpid(), "model_loads": _MODEL_LOADS, "rss_mb": _rss_mb(),
                                     "cpu_seconds": time.process_time(), **engine.stats()}))
            continue
        sid = msg[1]
        try:
            if op == "open":
                streams[sid] = engine.open_stream(msg[2])
            elif op == "audio":
                stream = streams.get(sid)
                if isinstance(stream, EngineStream):
                    stream.accept(np.frombuffer(msg[2], dtype=np.int16))
            elif op == "finish":
                stream = streams.pop(sid, "session unknown to worker")
                if isinstance(stream, str):
                    outq.put(("error", sid, stream))
                else:
                    outq.put(("result", sid, stream.finish()))
            elif op == "cancel":
                stream = streams.pop(sid, "")
                if isinstance(stream, EngineStream):
                    stream.cancel()
        except Exception as exc:  # one bad stream must not take the worker down
            log.exception("asr worker %d: %s on session %d failed", wid, op, sid)
            streams[sid] = f"{type(exc).__name__}: {exc}" if not isinstance(exc, EngineError) else str(exc)
            if op == "finish":
                streams.pop(sid, None)
                outq.put(("error", sid, str(exc)))


@dataclass
class _Worker:
    wid: int
    process: Any
    inq: Any
    sessions: int = 0


class RecognizerPool:
    """A fixed set of worker processes, each holding one loaded engine."""

    def __init__(self, spec: EngineSpec, workers: int = 2, batch: int = 1) -> None:
        self.spec = spec
        self.n_workers = max(1, workers)
        self.batch = max(1, batch)
        self.streaming = True  # known once the workers have loaded the engine
        self.load_seconds = 0.0
        self.worker_rss_mb: list[float] = []
        self._shared: Any = None
        self._ctx = mp.get_context("spawn")
        self._workers: list[_Worker] = []
        self._outq: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: threading.Thread | None = None
        self._pending: dict[int, tuple[asyncio.Future[EngineResult], _Worker | None]] = {}
        self._ready: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._stats: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._closing = False

    @property
    def engine_name(self) -> str:
        return self.spec.name

    async def start(self) -> None:
        """Spawn the workers and wait until each has loaded its model (raises EngineError if one fails)."""
        self._loop = asyncio.get_running_loop()
        self._outq = self._ctx.Queue()
        self._shared = self._ctx.Queue()
        for wid in range(self.n_workers):
            inq = self._ctx.Queue()
            proc = self._ctx.Process(
                target=_worker_main,
                args=(wid, self.spec, inq, self._outq, self._shared, self.batch),
                name=f"asr-{wid}",
                daemon=True,
            )
            proc.start()
            self._workers.append(_Worker(wid=wid, process=proc, inq=inq))
            self._ready[wid] = self._loop.create_future()
        self._reader = threading.Thread(target=self._read_results, name="asr-results", daemon=True)
        self._reader.start()
        try:
            infos = await asyncio.gather(*self._ready.values())
        except EngineError:
            await self.close()
            raise
        self.streaming = all(i["streaming"] for i in infos)
        self.load_seconds = max(i["load_seconds"] for i in infos)
        self.worker_rss_mb = [i["rss_mb"] for i in infos]
        log.info(
            "asr: %d %s workers ready (model load %.1fs, %.0f MB each)",
            self.n_workers,
            self.spec.name,
            self.load_seconds,
            max(self.worker_rss_mb),
        )

    def _read_results(self) -> None:
        while not self._closing:
            try:
                msg = self._outq.get(timeout=0.5)
            except queue.Empty:
                self._check_workers()
                continue
            except (EOFError, OSError):
                return
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(self._dispatch, msg)
            except RuntimeError:  # loop closed
                return

    def _check_workers(self) -> None:
        for w in self._workers:
            if not w.process.is_alive() and not self._closing and self._loop is not None:
                try:
                    self._loop.call_soon_threadsafe(self._worker_died, w)
                except RuntimeError:
                    return

    def _worker_died(self, w: _Worker) -> None:
        for sid, (fut, owner) in list(self._pending.items()):
            # a shared-queue utterance may have been in the dead worker's hands: fail them all
            if (owner is w or owner is None) and not fut.done():
                fut.set_exception(EngineError(f"asr worker {w.wid} died (exit code {w.process.exitcode})"))
                del self._pending[sid]

    def _dispatch(self, msg: tuple[Any, ...]) -> None:
        kind, key, payload = msg
        if kind == "ready" and not self._ready[key].done():
            self._ready[key].set_result(payload)
        elif kind == "failed" and not self._ready[key].done():
            err = EngineError(f"asr worker could not load {self.spec.name}: {payload}")
            self._ready[key].set_exception(err)
        elif kind == "stats" and key in self._stats and not self._stats[key].done():
            self._stats[key].set_result(payload)
        elif kind in ("result", "error"):
            entry = self._pending.pop(key, None)
            if entry is None or entry[0].done():
                return
            fut, worker = entry
            if worker is not None:
                worker.sessions -= 1
            if kind == "result":
                fut.set_result(payload)
            else:
                fut.set_exception(EngineError(payload))

    def open(self, options: Sequence[str] | None) -> PoolSession | UtteranceSession:
        """Start a stream on the least busy worker; feed it with `send`, end it with `finish`."""
        if not self._workers:
            raise EngineError("recognizer pool is not started")
        if not self.streaming:
            return UtteranceSession(self, next(self._ids), options)
        worker = min(self._workers, key=lambda w: w.sessions)
        worker.sessions += 1
        sid = next(self._ids)
        worker.inq.put(("open", sid, tuple(options) if options is not None else None))
        return PoolSession(self, worker, sid)

    async def stats(self) -> list[dict[str, Any]]:
        """Counters from every worker (pid, model_loads, engine counters)."""
        assert self._loop is not None
        self._stats = {w.wid: self._loop.create_future() for w in self._workers}
        for w in self._workers:
            w.inq.put(("stats",))
        return list(await asyncio.wait_for(asyncio.gather(*self._stats.values()), 30))

    async def close(self) -> None:
        self._closing = True
        for w in self._workers:
            w.inq.put(("stop",))
        for w in self._workers:
            await asyncio.to_thread(w.process.join, 5)
            if w.process.is_alive():
                w.process.kill()
                await asyncio.to_thread(w.process.join, 5)
        if self._reader is not None:
            await asyncio.to_thread(self._reader.join, 2)
        for w in self._workers:
            w.inq.close()
            w.inq.join_thread()
        for q in (self._outq, self._shared):
            if q is not None:
                q.close()
                q.join_thread()
        self._workers = []
        for sid, (fut, _) in list(self._pending.items()):
            if not fut.done():
                fut.set_exception(EngineError("recognizer pool closed"))
            del self._pending[sid]


class PoolSession:
    """One utterance pinned to one worker."""

    def __init__(self, pool: RecognizerPool, worker: _Worker, sid: int) -> None:
        self.pool = pool
        self.worker = worker
        self.sid = sid
        self.done = False

    def send(self, pcm: np.ndarray) -> None:
        if not self.done and len(pcm):
            self.worker.inq.put(("audio", self.sid, pcm.astype(np.int16).tobytes()))

    def finish(self) -> asyncio.Future[EngineResult]:
        """Ask for the final result; the future resolves when the worker has decoded the tail."""
        assert self.pool._loop is not None and not self.done
        self.done = True
        fut: asyncio.Future[EngineResult] = self.pool._loop.create_future()
        self.pool._pending[self.sid] = (fut, self.worker)
        self.worker.inq.put(("finish", self.sid))
        return fut

    def cancel(self) -> None:
        if not self.done:
            self.done = True
            self.worker.sessions -= 1
            self.worker.inq.put(("cancel", self.sid))


class UtteranceSession:
    """One utterance for a non-streaming engine: audio kept here until the end of speech."""

    def __init__(self, pool: RecognizerPool, sid: int, options: Sequence[str] | None) -> None:
        self.pool = pool
        self.sid = sid
        self.options = tuple(options) if options is not None else None
        self.chunks: list[bytes] = []
        self.done = False

    def send(self, pcm: np.ndarray) -> None:
        if not self.done and len(pcm):
            self.chunks.append(pcm.astype(np.int16).tobytes())

    def finish(self) -> asyncio.Future[EngineResult]:
        assert self.pool._loop is not None and not self.done
        self.done = True
        fut: asyncio.Future[EngineResult] = self.pool._loop.create_future()
        self.pool._pending[self.sid] = (fut, None)
        # put() only appends to the queue's buffer: the feeder thread pickles and writes
        self.pool._shared.put(("decode", self.sid, self.options, b"".join(self.chunks)))
        self.chunks = []
        return fut

    def cancel(self) -> None:
        self.done = True
        self.chunks = []

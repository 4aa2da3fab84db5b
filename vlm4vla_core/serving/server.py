"""Websocket policy server: one process holds the model, many simulator workers query it.

Each connection is served by its own thread (``websockets.sync.server``); a single
batching thread gathers pending requests from all connections and runs one batched
inference for them, so the model is only ever called from that one thread.

Protocol (binary msgpack, see :mod:`.wire`): on connect the server sends its metadata
dict; then each request dict gets exactly one reply, in order. Replies are whatever
``infer_batch`` returned for that request (normally an array of actions), ``{"reset": True}``
for a ``{"reset": True}`` request, or ``{"error": "<traceback>"}``.
"""

import dataclasses
import logging
import queue
import threading
import time
import traceback

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import serve

from . import wire

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ServerStats:
    requests: int = 0  # inference requests answered (resets not counted)
    batches: int = 0  # calls of infer_batch
    max_batch_size: int = 0
    errors: int = 0  # requests answered with an error

    @property
    def mean_batch_size(self) -> float:
        return self.requests / self.batches if self.batches else 0.0


class _Pending:
    """One request waiting for the batching thread."""

    def __init__(self, request):
        self.request, self.reply, self.done = request, None, threading.Event()

    def answer(self, reply):
        self.reply = reply
        self.done.set()


class PolicyServer:
    """Serve ``infer_batch(requests: list[dict]) -> list[np.ndarray]`` over websockets.

    ``host``/``port``: where to listen (port 0 picks a free port, see ``.port``).
    ``max_batch``: most requests per ``infer_batch`` call. ``max_wait_ms``: how long the
    batching thread waits for more requests after the first one of a batch arrives.
    """

    def __init__(self, infer_batch, metadata: dict, host="127.0.0.1", port=0, max_batch=64, max_wait_ms=5.0):
        self.infer_batch, self.metadata = infer_batch, dict(metadata)
        self.max_batch, self.max_wait_s = max_batch, max_wait_ms / 1000.0
        self.stats = ServerStats()
        self._queue: queue.Queue = queue.Queue()
        self._stopping = threading.Event()
        self._server = serve(
            self._handle, host, port,
            compression=None,  # images barely compress; deflate only costs CPU
            max_size=None,  # trusted peers; images and action chunks can be several MB
            ping_interval=None,  # a busy simulator must not be dropped for a missed pong
        )
        self.host = host
        self.port = self._server.socket.getsockname()[1]
        self._threads = []

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def start(self):
        """Serve in background threads; returns self."""
        for target, name in ((self._server.serve_forever, "policy-server"), (self._batch_loop, "policy-batcher")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("policy server listening on %s", self.url)
        return self

    def stop(self):
        """Close all connections and stop; does not wait for a running inference to finish."""
        self._stopping.set()
        if self._threads:
            self._server.shutdown()  # closes connections, waits for their handler threads
        else:
            self._server.socket.close()  # never started
        for thread in self._threads:
            thread.join(timeout=1.0)
        log.info("policy server stopped: %s requests in %s batches (mean batch %.2f)",
                 self.stats.requests, self.stats.batches, self.stats.mean_batch_size)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # One thread per connection.
    def _handle(self, ws):
        try:
            ws.send(wire.packb(self.metadata))
            while not self._stopping.is_set():
                reply = self._reply(ws.recv())
                try:
                    data = wire.packb(reply)
                except Exception:  # e.g. infer_batch returned a torch tensor
                    data = wire.packb({"error": traceback.format_exc()})
                ws.send(data)
        except ConnectionClosed:
            pass

    def _reply(self, message):
        try:
            request = wire.unpackb(message)
            if not isinstance(request, dict):
                raise TypeError(f"request must be a dict, got {type(request).__name__}")
        except Exception:
            return {"error": traceback.format_exc()}
        if request.get("reset"):
            return {"reset": True}  # stateless policies: nothing to reset
        pending = _Pending(request)
        self._queue.put(pending)
        while not pending.done.wait(0.1):
            if self._stopping.is_set():
                return {"error": "policy server is shutting down"}
        return pending.reply

    # The batching thread: the only caller of infer_batch.
    def _batch_loop(self):
        while not self._stopping.is_set():
            try:
                batch = [self._queue.get(timeout=0.1)]
            except queue.Empty:
                continue
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            self._run(batch)

    def _run(self, batch):
        try:
            replies = list(self.infer_batch([p.request for p in batch]))
            if len(replies) != len(batch):
                raise ValueError(f"infer_batch returned {len(replies)} results for {len(batch)} requests")
        except Exception:
            error = traceback.format_exc()
            log.error("infer_batch failed for a batch of %d:\n%s", len(batch), error)
            replies = [{"error": error}] * len(batch)
            self.stats.errors += len(batch)
        self.stats.requests += len(batch)
        self.stats.batches += 1
        self.stats.max_batch_size = max(self.stats.max_batch_size, len(batch))
        for pending, reply in zip(batch, replies):
            pending.answer(reply)

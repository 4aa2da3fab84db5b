"""Websocket policy server: one process holds the model, many simulator workers query it.

Each connection is served by its own thread (``websockets.sync.server``); a single
batching thread gathers pending requests from all connections and runs one batched
inference for them, so the model is only ever called from that one thread.

Batches fill by waiting, not by chance. A simulator worker sends a request, waits for its
answer, then steps its simulator through the chunk before it asks again, so two workers'
requests coincide only if something lines them up. The batching thread does: once a request
is pending it waits until every connected client that has asked before has one pending (or
``max_batch`` are), or until the window runs out; a client still starting up is not waited
for. The window is, unless ``max_wait_ms`` fixes it, the policy's own latency (the median of
its recent batch times): a peer that arrives within it costs the waiting worker at most what
a separate batch for that peer would cost the policy. When the policy is the slower side the
workers come back within one inference of each other, so after the first round every batch
holds every worker; when the simulator is the slower side the window is short and a worker
waits little.

Protocol (binary msgpack, see :mod:`.wire`): on connect the server sends its metadata
dict; then each request dict gets exactly one reply, in order. Replies are whatever
``infer_batch`` returned for that request (normally an array of actions), ``{"reset": True}``
for a ``{"reset": True}`` request, or ``{"error": "<traceback>"}``.
"""

import collections
import dataclasses
import logging
import statistics
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
    clients: int = 0  # most connections open at once (the simulator workers)
    infer_s: float = 0.0  # time inside infer_batch
    wait_s: float = 0.0  # time the batching thread held a pending request back for peers
    sizes: dict = dataclasses.field(default_factory=dict)  # batches by their size
    #: per closed connection: its inference requests and the seconds from the first one's arrival to the last
    #: one's (a worker's steady pace, its start-up and first environment build left out)
    per_client: list = dataclasses.field(default_factory=list)

    @property
    def mean_batch_size(self) -> float:
        return self.requests / self.batches if self.batches else 0.0

    @property
    def fill(self) -> float:
        """Mean batch over the most clients connected at once: 1.0 when every batch held every worker."""
        return self.mean_batch_size / self.clients if self.clients else 0.0

    def as_dict(self) -> dict:
        return dict(dataclasses.asdict(self), mean_batch_size=round(self.mean_batch_size, 3), fill=round(self.fill, 3),
                    infer_s=round(self.infer_s, 3), wait_s=round(self.wait_s, 3),
                    per_client=[dict(requests=n, span_s=round(span, 3)) for n, span in self.per_client])


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
    ``max_batch``: most requests per ``infer_batch`` call. ``max_wait_ms``: the longest a
    pending request is held back for the other clients' requests; None (the default): the
    policy's latency, the median time of the last ``LATENCY_WINDOW`` batches (0 before the first).
    """

    LATENCY_WINDOW = 16

    def __init__(self, infer_batch, metadata: dict, host="127.0.0.1", port=0, max_batch=64, max_wait_ms=None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms is not None and max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0 or None, got {max_wait_ms}")
        self.infer_batch, self.metadata = infer_batch, dict(metadata)
        self.max_batch = max_batch
        self.max_wait_s = None if max_wait_ms is None else max_wait_ms / 1000.0
        self.stats = ServerStats()
        self._pending: list[_Pending] = []
        self._cond = threading.Condition()
        self._connected = 0
        self._asking = 0  # connected clients that have sent an inference request: those a batch waits for
        self._latencies: collections.deque = collections.deque(maxlen=self.LATENCY_WINDOW)
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

    def window_s(self) -> float:
        """How long a pending request waits for the other clients' requests."""
        if self.max_wait_s is not None:
            return self.max_wait_s
        return statistics.median(self._latencies) if self._latencies else 0.0

    def stop(self):
        """Close all connections and stop; does not wait for a running inference to finish."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
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
        with self._cond:
            self._connected += 1
            self.stats.clients = max(self.stats.clients, self._connected)
        arrivals = []  # this connection's inference requests
        try:
            ws.send(wire.packb(self.metadata))
            while not self._stopping.is_set():
                reply = self._reply(ws.recv(), arrivals)
                try:
                    data = wire.packb(reply)
                except Exception:  # e.g. infer_batch returned a torch tensor
                    data = wire.packb({"error": traceback.format_exc()})
                ws.send(data)
        except ConnectionClosed:
            pass
        finally:
            with self._cond:
                if arrivals:
                    self.stats.per_client.append((len(arrivals), arrivals[-1] - arrivals[0]))
                    self._asking -= 1
                self._connected -= 1
                self._cond.notify_all()  # a batch waiting for this client stops waiting

    def _reply(self, message, arrivals: list):
        try:
            request = wire.unpackb(message)
            if not isinstance(request, dict):
                raise TypeError(f"request must be a dict, got {type(request).__name__}")
        except Exception:
            return {"error": traceback.format_exc()}
        if request.get("reset"):
            return {"reset": True}  # stateless policies: nothing to reset
        pending = _Pending(request)
        arrivals.append(time.monotonic())
        with self._cond:
            self._asking += len(arrivals) == 1
            self._pending.append(pending)
            self._cond.notify_all()
        while not pending.done.wait(0.1):
            if self._stopping.is_set():
                return {"error": "policy server is shutting down"}
        return pending.reply

    # The batching thread: the only caller of infer_batch.
    def _batch_loop(self):
        while not self._stopping.is_set():
            batch = self._next_batch()
            if batch:
                self._run(batch)

    def _next_batch(self) -> list[_Pending]:
        """The next batch: once a request is pending, wait until every client that asks has one pending (or
        ``max_batch`` are) or the window has passed since the wait began."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._pending or self._stopping.is_set(), timeout=0.1):
                return []
            start = time.monotonic()
            deadline = start + self.window_s()
            while not self._stopping.is_set() and len(self._pending) < min(max(self._asking, 1), self.max_batch):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            self.stats.wait_s += time.monotonic() - start
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            return batch

    def _run(self, batch):
        start = time.monotonic()
        try:
            replies = list(self.infer_batch([p.request for p in batch]))
            if len(replies) != len(batch):
                raise ValueError(f"infer_batch returned {len(replies)} results for {len(batch)} requests")
        except Exception:
            error = traceback.format_exc()
            log.error("infer_batch failed for a batch of %d:\n%s", len(batch), error)
            replies = [{"error": error}] * len(batch)
            self.stats.errors += len(batch)
        took = time.monotonic() - start
        self._latencies.append(took)
        self.stats.infer_s += took
        self.stats.requests += len(batch)
        self.stats.batches += 1
        self.stats.max_batch_size = max(self.stats.max_batch_size, len(batch))
        self.stats.sizes[len(batch)] = self.stats.sizes.get(len(batch), 0) + 1
        for pending, reply in zip(batch, replies):
            pending.answer(reply)

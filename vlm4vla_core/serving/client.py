"""Simulator-side client of :class:`vlm4vla_core.serving.server.PolicyServer`.

Imports only numpy, msgpack and websockets (plus the sibling :mod:`wire` module), so it
runs inside each simulator's own Python environment. It works as part of the package or
with ``client.py`` and ``wire.py`` copied side by side onto ``sys.path``.
"""

import inspect
import time

from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect

try:
    from . import wire
except ImportError:  # used as loose files, outside the package
    import wire

# Options that only some websockets versions know: connect directly (no proxy from the
# environment) and get a plain connection without the 17.1+ deprecation warning.
_CONNECT_PARAMS = inspect.signature(connect).parameters
_EXTRA = {k: v for k, v in (("proxy", None), ("legacy", True)) if k in _CONNECT_PARAMS}


class PolicyClient:
    """Blocking connection to a policy server.

    Retries connecting until the server is up or ``connect_timeout_s`` passes (then
    raises ConnectionError). ``timeout_s`` bounds the wait for each reply.
    ``.metadata`` is the dict the server sent on connect.
    """

    def __init__(self, url: str, timeout_s: float = 300, connect_timeout_s: float = 60):
        self.url, self.timeout_s = url, timeout_s
        deadline = time.monotonic() + connect_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                self._ws = connect(url, compression=None, max_size=None, open_timeout=max(remaining, 1.0), **_EXTRA)
                break
            except (OSError, InvalidHandshake) as exc:  # refused, reset, timed out, server still starting
                if remaining <= 0:
                    raise ConnectionError(f"no policy server at {url} after {connect_timeout_s:g} s: {exc!r}") from exc
                time.sleep(min(0.5, max(remaining, 0.05)))
        self.metadata = self._exchange()

    def _exchange(self, request=None):
        """Send ``request`` (if given) and return the next message from the server."""
        try:
            if request is not None:
                self._ws.send(wire.packb(request))
            reply = wire.unpackb(self._ws.recv(timeout=self.timeout_s))
        except ConnectionClosed as exc:
            raise ConnectionError(f"policy server at {self.url} closed the connection: {exc}") from exc
        except TimeoutError:
            self.close()  # a late reply would be taken for the answer to the next request
            raise TimeoutError(f"no reply from policy server at {self.url} within {self.timeout_s:g} s") from None
        if isinstance(reply, dict) and "error" in reply:
            raise RuntimeError(f"policy server at {self.url} failed:\n{reply['error']}")
        return reply

    def infer(self, request: dict):
        """Send one observation dict (e.g. image, instruction); return the server's actions."""
        return self._exchange(request)

    def reset(self):
        """Tell the server an episode starts (for stateful policies)."""
        self._exchange({"reset": True})

    def close(self):
        self._ws.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

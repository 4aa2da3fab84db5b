"""Process boundary between simulators and the policy: a batching websocket server
(:class:`PolicyServer`, next to the model) and a light client (:class:`PolicyClient`,
inside each simulator's environment; it needs only numpy, msgpack and websockets)."""

from .client import PolicyClient
from .server import PolicyServer, ServerStats
from .wire import packb, unpackb

__all__ = ["PolicyClient", "PolicyServer", "ServerStats", "packb", "unpackb"]

"""Policy server and client: wire format, batching across connections and processes, errors, shutdown."""

import shutil
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from vlm4vla_core.serving import PolicyClient, PolicyServer, packb, unpackb

SERVING = Path(__file__).resolve().parents[1] / "vlm4vla_core" / "serving"
K, A = 4, 7  # action chunk length, action dim
METADATA = {"chunk_size": K, "action_dim": A, "name": "toy"}


def expected(image, instruction):
    """Reference policy for one request: per-channel pixel mean plus an instruction hash."""
    mean = image.reshape(-1, 3).mean(0)
    frac = zlib.crc32(instruction.encode()) % 1000 / 1000
    return (mean[np.arange(A) % 3][None, :] + frac * np.arange(1, K + 1)[:, None]).astype(np.float32)


def infer_batch(requests):
    """The same policy, computed for the whole batch at once."""
    if any(r["instruction"] == "boom" for r in requests):
        raise ValueError("boom requested")
    images = np.stack([r["image"] for r in requests])
    means = images.reshape(len(requests), -1, 3).mean(1)
    fracs = np.array([zlib.crc32(r["instruction"].encode()) % 1000 / 1000 for r in requests])
    out = means[:, None, np.arange(A) % 3] + fracs[:, None, None] * np.arange(1, K + 1)[None, :, None]
    return list(out.astype(np.float32))


def make_request(seed, step):
    rng = np.random.default_rng([seed, step])
    return {"image": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
            "instruction": f"task {seed} step {step}", "state": rng.standard_normal(8).astype(np.float32)}


@pytest.fixture
def server():
    with PolicyServer(infer_batch, METADATA, max_wait_ms=50) as srv:
        yield srv


def test_wire_round_trip():
    msg = {
        "image": np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3),
        "nested": {"f32": np.linspace(0, 1, 5, dtype=np.float32), "list": [np.int64(-3), np.float16(0.5), True]},
        "big_endian": np.arange(6, dtype=">i4").reshape(2, 3)[:, ::2],  # non-contiguous view too
        "bools": np.array([True, False]), "empty": np.zeros((0, 4), np.float64), "c64": np.array([1 + 2j], np.complex64),
        "text": "pick up the cup", "raw": b"\x00\xff", "none": None, "num": 1.25, 7: [1, [2, (3,)]],
    }
    out = unpackb(packb(msg))
    assert set(out) == set(msg) and out["text"] == msg["text"] and out["raw"] == msg["raw"] and out[7] == [1, [2, [3]]]
    for key in ("image", "big_endian", "bools", "empty", "c64"):
        assert out[key].dtype == msg[key].dtype and out[key].shape == msg[key].shape
        np.testing.assert_array_equal(out[key], msg[key])
    np.testing.assert_array_equal(out["nested"]["f32"], msg["nested"]["f32"])
    assert out["image"].flags.writeable
    scalars = out["nested"]["list"]
    assert [type(x) for x in scalars] == [np.int64, np.float16, bool] and scalars[:2] == [-3, 0.5]
    with pytest.raises(TypeError):
        packb({"bad": np.array(["a"], dtype=object)})


# Runs in a separate interpreter with only client.py and wire.py on its path, as in a simulator's environment.
SUBPROCESS_CLIENT = """
import sys, numpy as np
from client import PolicyClient
import wire
url, seed, steps, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
with PolicyClient(url, connect_timeout_s=20) as client:
    assert client.metadata["chunk_size"] == 4, client.metadata
    replies = []
    for step in range(steps):
        rng = np.random.default_rng([seed, step])
        replies.append(client.infer({"image": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
            "instruction": "task %d step %d" % (seed, step), "state": rng.standard_normal(8).astype(np.float32)}))
assert not any(m == "torch" or m.startswith(("torch.", "vlm4vla_core")) for m in sys.modules), sorted(sys.modules)
open(out, "wb").write(wire.packb(replies))
"""


def test_concurrent_threads_and_processes_share_batches(server, tmp_path):
    for name in ("client.py", "wire.py"):
        shutil.copy(SERVING / name, tmp_path / name)
    steps, n_threads, proc_seeds = 5, 4, (100, 101)
    procs = [subprocess.Popen([sys.executable, "-c", SUBPROCESS_CLIENT, server.url, str(seed), str(steps),
                               str(tmp_path / f"out{seed}.bin")], cwd=tmp_path) for seed in proc_seeds]
    barrier, results, failures = threading.Barrier(n_threads), {}, []

    def worker(seed):
        try:
            with PolicyClient(server.url, connect_timeout_s=5) as client:
                assert client.metadata == METADATA
                client.reset()
                for step in range(steps):
                    barrier.wait(timeout=10)  # all threads send at once, so the server can batch them
                    results[seed, step] = client.infer(make_request(seed, step))
        except Exception as exc:  # reported below; a failed thread must not hang the barrier
            barrier.abort()
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not failures, failures
    for seed in proc_seeds:
        assert procs[proc_seeds.index(seed)].wait(timeout=20) == 0
        for step, reply in enumerate(unpackb((tmp_path / f"out{seed}.bin").read_bytes())):
            results[seed, step] = reply

    assert len(results) == (n_threads + len(proc_seeds)) * steps
    for (seed, step), actions in results.items():
        req = make_request(seed, step)
        assert actions.dtype == np.float32 and actions.shape == (K, A)
        np.testing.assert_allclose(actions, expected(req["image"], req["instruction"]), rtol=1e-6)
    stats = server.stats
    assert stats.requests == len(results) and stats.errors == 0
    assert stats.max_batch_size > 1 and stats.mean_batch_size > 1, stats


def test_errors_reach_client_and_server_keeps_serving(server):
    with PolicyClient(server.url) as client, PolicyClient(server.url) as other:
        with pytest.raises(RuntimeError, match="boom requested") as info:
            client.infer({"image": np.zeros((8, 8, 3), np.uint8), "instruction": "boom"})
        assert "Traceback" in str(info.value) and "ValueError" in str(info.value)
        for c in (client, other):
            req = make_request(7, 0)
            np.testing.assert_allclose(c.infer(req), expected(req["image"], req["instruction"]), rtol=1e-6)
        with pytest.raises(RuntimeError, match="must be a dict"):
            client.infer([1, 2])
    assert server.stats.errors == 1


def test_no_server_raises_connection_error_naming_url():
    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{s.getsockname()[1]}"
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=url):
        PolicyClient(url, connect_timeout_s=0.5)
    assert time.monotonic() - start < 5


def test_stop_returns_promptly_with_connected_clients():
    release = threading.Event()

    def slow(requests):
        release.wait(30)
        return infer_batch(requests)

    srv = PolicyServer(slow, METADATA).start()
    idle = PolicyClient(srv.url)
    busy = PolicyClient(srv.url)
    errors = []

    def wait_for_reply():
        try:
            busy.infer(make_request(1, 0))
        except (ConnectionError, RuntimeError) as exc:
            errors.append(exc)

    waiting = threading.Thread(target=wait_for_reply)
    waiting.start()
    time.sleep(0.2)  # the request is now inside infer_batch
    start = time.monotonic()
    srv.stop()
    assert time.monotonic() - start < 3
    waiting.join(timeout=5)
    release.set()
    assert len(errors) == 1
    with pytest.raises(ConnectionError):
        idle.infer(make_request(2, 0))
    idle.close()
    busy.close()

"""CALVIN's evaluation protocol facts as data and arithmetic: numpy, gzip and yaml only.

Imported on both sides: by the plug-in in the policy's process and by the simulator worker in the
CALVIN environment. Nothing here needs calvin_env.

- ``chains()``: the 1000 evaluation chains (VLM4VLA's ``eval_sequences.json``, kept here gzipped and
  checked by the md5 of the original file), each an initial condition and 5 subtasks.
- ``instructions()``: the first validation instruction of every subtask
  (``new_playtable_validation.yaml``), as the official evaluator picks it.
- ``initial_state(condition)``: the robot and scene state a chain starts from, as the official
  ``get_env_state_for_initial_condition`` computes it, with its block placement seeded by
  ``pyhash_fnv1_32(str(condition.values()))`` (``condition_seed``).
- ``chain_metrics(records)``: success rate at chain lengths 1..5, average length, per-subtask
  success, and percentile-bootstrap intervals over chains, all from per-chain counts.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np

OFFICIAL = Path(__file__).resolve().parent / "official"
SEQUENCES = OFFICIAL / "eval_sequences.json.gz"
#: md5 of VLM4VLA's configs/data/calvin/eval_sequences.json (RoboVLMs' copy is byte-identical)
SEQUENCES_MD5 = "dd9695b40bec35035451a1e3610bca51"
VALIDATION = OFFICIAL / "new_playtable_validation.yaml"
TASKS = OFFICIAL / "new_playtable_tasks.yaml"
CHAIN_LENGTH = 5
#: the key order of an initial condition: it is part of the string the block-placement seed hashes
CONDITION_KEYS = ("led", "lightbulb", "slider", "drawer", "red_block", "blue_block", "pink_block", "grasped")


# -- pyhash's fnv1_32 ---------------------------------------------------------------------------------
FNV_32_PRIME = 0x01000193
FNV1_32_INIT = 0x811C9DC5  # the FNV-1 offset basis; pyhash does NOT start from it (see below)


def fnv1_32(data: bytes, hval: int = 0) -> int:
    """32-bit FNV-1 (multiply by the prime, then xor the octet) of ``data``, from ``hval``.

    This is ``fnv_32_buf`` of the FNV reference code. ``hval=FNV1_32_INIT`` gives the standard FNV-1
    hash (the published test vectors); ``hval=0`` is what pyhash uses."""
    for octet in data:
        hval = ((hval * FNV_32_PRIME) & 0xFFFFFFFF) ^ octet
    return hval


def pyhash_fnv1_32(value: str | bytes, seed: int = 0) -> int:
    """``pyhash.fnv1_32()(value)`` of pyhash 0.9.3 without pyhash (which does not build with current
    setuptools or Python >= 3.11), on a little-endian Linux or macOS machine.

    What pyhash does, read from its source at tag 0.9.3: the hasher's seed defaults to 0 and is
    passed as the FNV ``hval`` (so the standard offset basis is not used); ``bytes`` are hashed as
    they are; a ``str`` is hashed as its UTF-16 encoding without the byte-order mark, in native
    (little-endian) order, because ``Py_UNICODE_WIDE`` is defined on Linux and macOS. Checked against
    pyhash's own test values (tests/test_fnv1.py at 0.9.3): b"test" -> 3698262380, "test" ->
    3910690890, b"test" with seed 3698262380 -> 660137056.
    """
    data = value.encode("utf-16-le") if isinstance(value, str) else bytes(value)
    return fnv1_32(data, seed)


def condition_seed(condition: dict) -> int:
    """The block-placement seed of an initial condition: ``fnv1_32(str(condition.values()))`` of a plain
    dict in CALVIN's key order (any other key order or container changes the string and the seed)."""
    if tuple(condition) != CONDITION_KEYS:
        raise ValueError(f"initial condition keys {tuple(condition)} are not CALVIN's {CONDITION_KEYS} in that order "
                         "(the order is part of the hashed string)")
    return pyhash_fnv1_32(str(dict(condition).values()))


# -- initial condition -> scene ---------------------------------------------------------------------
NEUTRAL_ROBOT_OBS = np.array([
    0.02586889, -0.2313129, 0.5712808, 3.09045411, -0.02908596, 1.50013585, 0.07999963, -1.21779124,
    1.03987629, 2.11978254, -2.34205014, -0.87015899, 1.64119093, 0.55344928, 1.0])
BLOCK_SLIDER_LEFT = np.array([-2.40851662e-01, 9.24044687e-02, 4.60990009e-01])
BLOCK_SLIDER_RIGHT = np.array([7.03416330e-02, 9.24044687e-02, 4.60990009e-01])
BLOCK_TABLE = (np.array([5.00000896e-02, -1.20000177e-01, 4.59990009e-01]),
               np.array([2.29995412e-01, -1.19995140e-01, 4.59990010e-01]))
BLOCK_YAW_RANGE = (np.pi / 2 - np.pi / 8, np.pi / 2 + np.pi / 8)
#: scene_obs layout: slider, drawer, button, switch, lightbulb, green light, then 6-DoF per block
BLOCK_SLOTS = {"red_block": 6, "blue_block": 12, "pink_block": 18}


def initial_state(condition: dict) -> tuple[np.ndarray, np.ndarray]:
    """(robot_obs [15], scene_obs [24]) of a chain's start, as calvin_agent's
    ``get_env_state_for_initial_condition``: the neutral robot pose; slider left 0.28, drawer open
    0.22, lightbulb on (switch 0.088, bulb 1), led; blocks on their slider slot, or on one of the two
    table slots in an order shuffled under the condition's seed, each with a yaw drawn from
    U(pi/2 - pi/8, pi/2 + pi/8) under the same seed. numpy's legacy generator (``RandomState``), which
    ``np.random.seed`` also sets, gives the same draws without touching the global state."""
    rng = np.random.RandomState(condition_seed(condition))
    table = list(BLOCK_TABLE)
    rng.shuffle(table)
    scene = np.zeros(24)
    if condition["slider"] == "left":
        scene[0] = 0.28
    if condition["drawer"] == "open":
        scene[1] = 0.22
    if condition["lightbulb"] == 1:
        scene[3] = 0.088
    scene[4] = condition["lightbulb"]
    scene[5] = condition["led"]
    slider = {"slider_right": BLOCK_SLIDER_RIGHT, "slider_left": BLOCK_SLIDER_LEFT}
    # the official order of draws: red's yaw, blue's yaw, pink's yaw; red takes the first table slot,
    # blue the second when red is on the table, pink always the second
    table_slot = {"red_block": table[0], "blue_block": table[1] if condition["red_block"] == "table" else table[0],
                  "pink_block": table[1]}
    for block, at in BLOCK_SLOTS.items():
        scene[at:at + 3] = slider.get(condition[block], table_slot[block])
        scene[at + 5] = rng.uniform(*BLOCK_YAW_RANGE)
    return NEUTRAL_ROBOT_OBS.copy(), scene


# -- chains and instructions ------------------------------------------------------------------------
@cache
def _sequences_bytes(path: str) -> bytes:
    raw = Path(path).read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def chains(path: str | Path | None = None) -> list[tuple[dict, list[str]]]:
    """The evaluation chains in order: (initial condition, 5 subtasks). ``path``: another chain file in
    the same JSON layout (default: VLM4VLA's 1000 chains, checked by md5)."""
    raw = _sequences_bytes(str(path or SEQUENCES))
    if path is None and hashlib.md5(raw).hexdigest() != SEQUENCES_MD5:
        raise ValueError(f"{SEQUENCES}: md5 {hashlib.md5(raw).hexdigest()} is not that of the official "
                         f"eval_sequences.json ({SEQUENCES_MD5})")
    out = []
    for i, item in enumerate(json.loads(raw)):
        condition, subtasks = item
        if tuple(condition) != CONDITION_KEYS or len(subtasks) != CHAIN_LENGTH:
            raise ValueError(f"{path or SEQUENCES}: chain {i} is not (condition with keys {CONDITION_KEYS}, "
                             f"{CHAIN_LENGTH} subtasks)")
        out.append((dict(condition), list(subtasks)))
    return out


@cache
def instructions() -> dict[str, str]:
    """Subtask -> its first validation instruction (the official evaluator's ``val_annotations[t][0]``)."""
    import yaml

    return {task: texts[0] for task, texts in yaml.safe_load(VALIDATION.read_text()).items()}


@cache
def task_definitions() -> dict[str, list]:
    """Subtask -> its oracle definition in calvin_env's ``Tasks`` (``new_playtable_tasks.yaml``)."""
    import yaml

    return yaml.safe_load(TASKS.read_text())["tasks"]


# -- metrics ------------------------------------------------------------------------------------------
def count_success(completed) -> list[float]:
    """Success rate at chain lengths 1..5: the share of chains with at least L subtasks completed."""
    done = np.asarray(list(completed), dtype=float)
    return [float((done >= length).mean()) if len(done) else 0.0 for length in range(1, CHAIN_LENGTH + 1)]


def chain_metrics(records: list[dict], n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """The CALVIN numbers of a set of chain records (each with ``completed`` and ``subtasks``), by counts:
    SR@1..5, average length (= the sum of SR@L), per-subtask successes / attempts (a subtask is attempted
    when every earlier one succeeded; the failed one ends the chain), and percentile-bootstrap intervals
    over chains (``n_boot`` resamples of the chains with replacement, numpy seed ``seed``)."""
    done = np.array([int(r["completed"]) for r in records], dtype=int)
    if len(done) == 0:
        raise ValueError("no chain records")
    if done.min() < 0 or done.max() > CHAIN_LENGTH:
        raise ValueError(f"completed must be in 0..{CHAIN_LENGTH}")
    success, attempts = Counter(), Counter()
    for r, k in zip(records, done):
        for task in r["subtasks"][:k]:
            success[task] += 1
            attempts[task] += 1
        if k < CHAIN_LENGTH:
            attempts[r["subtasks"][k]] += 1
    per_task = {t: {"success": success[t], "attempts": attempts[t], "rate": success[t] / attempts[t]}
                for t in sorted(attempts)}
    out = {"chains": int(len(done)), "avg_len": float(done.mean()),
           "success_at": {str(L): sr for L, sr in zip(range(1, CHAIN_LENGTH + 1), count_success(done))},
           "per_task": per_task}
    if n_boot:
        rng = np.random.default_rng(seed)
        samples = done[rng.integers(0, len(done), size=(n_boot, len(done)))]
        lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
        out["ci"] = {"level": level, "n_boot": n_boot, "seed": seed, "method": "percentile bootstrap over chains",
                     "avg_len": [float(x) for x in np.quantile(samples.mean(1), [lo, hi])],
                     "success_at": {str(L): [float(x) for x in np.quantile((samples >= L).mean(1), [lo, hi])]
                                    for L in range(1, CHAIN_LENGTH + 1)}}
    return out

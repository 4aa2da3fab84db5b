"""What a benchmark plug-in declares, and the one episode driver that every benchmark runs on.

A benchmark is one folder under ``vlm4vla_core/benchmarks/`` whose ``__init__`` defines a
``Benchmark`` subclass and registers it by its ``kind``. It declares everything that
differs between benchmarks:

- its config keys (checked on top of the schema, errors name the key);
- its data stage (a generator or an importer that writes the episode format);
- its episode list and protocol: ``episodes`` and ``run_episode``, a generator that
  owns the step loop (resets, wait steps, step limit, success rule) and yields an
  ``Obs`` whenever it needs the next environment action;
- its action convention (``action_to_env``: canonical action -> what the simulator takes;
  ``action_bounds``: the normalisation statistics of the arm dimensions) and its image
  transform (``image_transform``: raw simulator observation -> the policy's frame).

Canonical actions, as stored in every training set and predicted by every policy:
arm dimensions in the dataset's units, then one gripper value, +1 closed / -1 open.

This module and the plug-ins' simulator side import numpy only: they also run inside
simulator environments that have no torch (see ``vlm4vla_core.benchmarks.worker``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Generator, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlm4vla_core.config import ConfigError

@dataclass(frozen=True)
class Episode:
    """One evaluation episode. ``index`` is its position in the benchmark's full episode list:
    shards split on it and merges sort on it, so N shards give the records of one job."""

    index: int
    task: str
    instruction: str
    params: dict = field(default_factory=dict)  # benchmark-specific: init state, seed, task id

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Obs:
    """What an episode yields when it needs an action. ``render`` is called only when the
    policy re-plans (rendering is the expensive part of a step); ``reset`` asks for a fresh
    chunk and a cleared queue (a new episode, or a new subtask of a chain)."""

    instruction: str
    render: Callable[[], Any]
    reset: bool = False


class Agent:
    """The benchmark's transforms and the execution mode, applied in one place.

    ``image_fn`` turns a raw simulator observation into the policy's HxWx3 uint8 frame;
    the policy returns a chunk of K canonical actions; the first ``execute_steps`` are
    executed open-loop, each converted by ``action_fn`` into the simulator's action.
    """

    def __init__(self, execute_steps: int, image_fn: Callable[[Any], np.ndarray],
                 action_fn: Callable[[np.ndarray], np.ndarray]):
        if execute_steps < 1:
            raise ValueError(f"execute_steps must be >= 1, got {execute_steps}")
        self.execute_steps, self.image_fn, self.action_fn = execute_steps, image_fn, action_fn
        self.queue: list[np.ndarray] = []
        self.plans = 0
        self.frames: list[np.ndarray] | None = None  # a list: the policy's frames are kept (rollout video)

    def reset(self) -> None:
        self.queue = []

    def needs_plan(self, obs: Obs) -> bool:
        if obs.reset:
            self.reset()
        return not self.queue

    def request(self, obs: Obs) -> dict:
        image = np.ascontiguousarray(self.image_fn(obs.render()), dtype=np.uint8)
        if self.frames is not None:
            self.frames.append(image)
        return {"image": image, "instruction": obs.instruction}

    def set_chunk(self, chunk: np.ndarray) -> None:
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim != 2 or len(chunk) < self.execute_steps or not np.isfinite(chunk).all():
            raise ValueError(f"policy returned a chunk of shape {chunk.shape} (finite, >= {self.execute_steps} "
                             "steps expected)")
        self.queue = list(chunk[: self.execute_steps])
        self.plans += 1

    def next_action(self) -> np.ndarray:
        return np.asarray(self.action_fn(self.queue.pop(0)), dtype=np.float64)


InferFn = Callable[[list[dict]], list[np.ndarray]]

#: ``eval_workers: auto``: the evaluation sizes its simulator pool itself (``vlm4vla_core.evaluate.choose_workers``)
AUTO = "auto"


class Benchmark:
    """Base plug-in. Subclasses set the class attributes and implement the methods."""

    kind: str = ""
    #: canonical action size: arm dimensions + 1 gripper
    action_dim: int = 7
    #: config keys of this kind beyond the common ones: {key: JSON-schema fragment}
    keys: dict[str, dict] = {}
    #: keys that must be present
    required: tuple[str, ...] = ()
    #: default values of optional keys
    defaults: dict[str, Any] = {}
    #: the simulator can run inside the policy's process (same Python environment)
    in_process: bool = False
    #: environment files (under envs/) of the data stage and of the simulator
    data_env: str = "vlm4vla.yaml"
    sim_env: str = "vlm4vla.yaml"
    #: the run's metric (the aggregate stage reads it from the episode records: ``success``, or for
    #: ``avg_len`` the ``completed`` subtasks of each chain)
    metric: str = "success_rate"
    #: default ``arm_range`` of policies trained here (``vlm4vla_core.policy.ARM_RANGES``): ``official``
    #: composes VLM4VLA's percentile normalisation and norm-range clip
    arm_range: str = "official"
    #: the execution modes VLM4VLA's scripts run on this benchmark (None: none published; the study's
    #: ``evaluation.modes`` then); a benchmark entry's ``modes`` overrides them
    official_modes: tuple[str, ...] | None = None
    #: the published normalisation statistics of ``norm_stats: official`` (None: there are none)
    official_stats: Path | None = None

    # -- config -------------------------------------------------------------
    def settings(self, entry: dict) -> dict:
        """The entry with this kind's defaults filled in."""
        return {**self.defaults, **entry}

    def check(self, name: str, entry: dict) -> None:
        """Kind-specific keys: unknown, missing and out-of-range keys raise ConfigError naming them."""
        from vlm4vla_core.benchmarks import COMMON_KEYS

        allowed = [*COMMON_KEYS, *self.keys]
        for key in entry:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (allowed for kind {self.kind}: {', '.join(allowed)})"
                raise ConfigError(f"unknown key 'benchmarks.{name}.{key}'{hint}")
        for key in self.required:
            if key not in entry:
                raise ConfigError(f"missing key 'benchmarks.{name}.{key}' (required for kind {self.kind})")
        import jsonschema

        for key, schema in self.keys.items():
            if key in entry:
                err = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(entry[key]))
                if err is not None:
                    raise ConfigError(f"key 'benchmarks.{name}.{key}': {err.message}")
        self.check_norm_stats(name, self.settings(entry))
        self.check_values(name, self.settings(entry))

    def check_values(self, name: str, entry: dict) -> None:
        """Checks across keys or against the benchmark's own facts (task names, limits)."""

    def check_norm_stats(self, name: str, entry: dict) -> None:
        """``norm_stats`` other than ``data``: the file exists and holds the arm's q01/q99."""
        if entry.get("norm_stats", "data") != "data":
            self.norm_stats_file(entry, name)

    # -- data -----------------------------------------------------------------
    def build_data(self, entry: dict, out: Path, workers: int = 1) -> None:
        """Write the training set of this benchmark into ``out`` (see ``vlm4vla_core.episodes``)."""
        raise NotImplementedError

    def write_fixture(self, entry: dict, out: Path, frame_size: int | None = None) -> None:
        """``fixture: synthetic``: write a small synthetic dataset in this benchmark's native layout into ``out``
        (the entry's ``data_path``), for checking the stages end to end without the released data;
        ``frame_size``: side of its frames (None: the plug-in's)."""
        raise ConfigError(f"benchmark kind {self.kind!r} has no synthetic fixture (fixture: synthetic)")

    #: generators of VQA sets this plug-in provides: ``vqa_sets.<set>.generate`` names one, and the set's
    #: ``benchmark`` a benchmark of this kind whose scenes it is built from (``write_vqa_split``)
    vqa_generators: tuple[str, ...] = ()

    def write_vqa_split(self, generator: str, entry: dict, vqa_set: dict, out: Path, split: str) -> int:
        """Write split ``split`` (``train`` or ``heldout``) of a VQA set of ``generator`` (one of
        ``vqa_generators``; ``vqa_set``: its ``vqa_sets`` entry) from the scenes of benchmark ``entry`` into
        ``out/<split>``; returns the number of questions."""
        raise ConfigError(f"benchmark kind {self.kind!r} generates no VQA sets (asked for {generator!r})")

    def action_bounds(self, entry: dict, stats: dict) -> tuple[list[float], list[float]]:
        """Per-dimension (low, high) of the arm actions that the policy maps to [-1, 1] before its
        norm range (``vlm4vla_core.policy``): the 1st/99th percentiles, as the official code
        normalises, of the statistics ``norm_stats`` names (``data``: the training set's ``stats``;
        ``official``: the plug-in's published file; else a stats file's path)."""
        choice = entry.get("norm_stats") or "data"
        if choice != "data":
            stats = self.norm_stats_file(entry, "norm_stats")
        action = stats["action"]
        return list(action["q01"][:-1]), list(action["q99"][:-1])

    def norm_stats_file(self, entry: dict, name: str) -> dict:
        """The statistics of ``norm_stats: official`` or of a path, checked: an ``action`` block with
        ``q01`` and ``q99`` of ``action_dim`` values each. Errors name the key and the file."""
        import json

        choice = entry["norm_stats"]
        path = self.official_stats if choice == "official" else Path(choice)
        if path is None:
            raise ConfigError(f"key 'benchmarks.{name}.norm_stats': kind {self.kind} publishes no official statistics")
        try:
            stats = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"key 'benchmarks.{name}.norm_stats': cannot read {path} ({err}); give official, "
                              "data, or the path of a stats file") from None
        action = stats.get("action") if isinstance(stats, dict) else None
        for q in ("q01", "q99"):
            if not isinstance(action, dict) or len(action.get(q) or []) != self.action_dim:
                raise ConfigError(f"key 'benchmarks.{name}.norm_stats': {path} has no action.{q} of "
                                  f"{self.action_dim} values")
        return stats

    def arm_range_of(self, entry: dict) -> str:
        """The policy's ``arm_range`` on this benchmark: the entry's, else the plug-in's default."""
        return entry.get("arm_range") or self.arm_range

    # -- protocol -------------------------------------------------------------
    def episodes(self, entry: dict, seed: int) -> list[Episode]:
        """The full, ordered episode list of one evaluation (training seed ``seed``)."""
        raise NotImplementedError

    def preflight(self, entry: dict) -> None:
        """Checks the evaluation runs before any episode and before the policy loads (a missing device,
        say); raises RuntimeError with what to fix. Default: none."""

    def simulator(self, entry: dict):
        """A simulator client; one per concurrently running episode (simulator side)."""
        raise NotImplementedError

    def run_episode(self, sim, episode: Episode, entry: dict) -> Generator[Obs, np.ndarray, dict]:
        """The protocol of one episode: yields an Obs per step, receives the env action,
        returns the episode record (at least ``success`` and ``steps``)."""
        raise NotImplementedError

    def step_budget(self, entry: dict, episode: Episode) -> dict:
        """The most an episode can take, as the cost plan counts it: ``env_steps`` (wait steps included),
        ``policy_steps`` (the steps whose action the policy gives) and ``segments`` (the times the policy's
        chunk queue starts afresh: the episode, or each subtask of a chain). Default: ``max_steps`` steps."""
        return dict(env_steps=entry["max_steps"], policy_steps=entry["max_steps"], segments=1)

    def image_transform(self, entry: dict) -> Callable[[Any], np.ndarray]:
        """Raw simulator observation -> the policy's HxWx3 uint8 frame (camera, rotation, crop)."""
        return lambda frame: frame

    def action_to_env(self, entry: dict) -> Callable[[np.ndarray], np.ndarray]:
        """Canonical action (arm, gripper +1 closed / -1 open) -> the simulator's action."""
        return lambda action: action

    def simulator_command(self, entry: dict) -> list[str]:
        """The Python (a path, or a command such as ``conda run -n env python``) of the simulator's environment."""
        import shlex
        import sys

        return shlex.split(entry.get("simulator_python") or sys.executable)

    def runs_in_process(self, entry: dict) -> bool:
        """The simulator runs inside the evaluation process (no policy server): the plug-in allows it and
        the entry names no ``simulator_python`` of its own."""
        return self.in_process and not entry.get("simulator_python")

    def score(self, episodes: list[dict]) -> float:
        """The metric over episode records; the mode rule ``best`` compares execution modes by it."""
        key = "completed" if self.metric == "avg_len" else "success"
        return float(np.mean([float(e[key]) for e in episodes])) if episodes else 0.0

    def outcome(self, record: dict, entry: dict) -> str:
        """How an episode ended, for the failure breakdown (the record's ``outcome``): ``success``, ``raised``
        (the simulator or the protocol raised), ``timed out`` (the step budget ran out: ``truncated``, or
        ``steps`` reached the episode's or the entry's ``max_steps``) or ``ended early`` (the episode stopped
        before its budget without success). A plug-in may tell more (CALVIN: the subtask the chain stopped at)."""
        if record.get("error"):
            return "raised"
        if record.get("success"):
            return "success"
        limit = record.get("max_steps", entry.get("max_steps"))
        steps = record.get("steps")
        if record.get("truncated") or (limit is not None and steps is not None and steps >= limit):
            return "timed out"
        return "ended early"

    def success_step(self, record: dict) -> int | None:
        """The environment step at which a successful episode succeeded (time to success; None for a failure).
        Default: its ``steps``, the episode ending at success."""
        return record.get("steps") if record.get("success") else None

    def failure_record(self, error: str) -> dict:
        """The record of an episode that raised: a failure, with its error (``steps`` unknown)."""
        record = dict(success=False, steps=None, error=error)
        if self.metric == "avg_len":
            record["completed"] = 0
        return record

    def workers(self, entry: dict) -> int | str:
        """Simulator processes per evaluation job: ``eval_workers``, a count or ``AUTO`` (chosen at run time)."""
        setting = entry.get("eval_workers", 1)
        return AUTO if setting == AUTO else int(setting)

    def slots(self, entry: dict) -> int:
        """Episodes a simulator process runs in lockstep (one batched policy call per re-plan)."""
        return int(entry.get("eval_batch", 1))


def shard(episodes: list[Episode], index: int, count: int) -> list[Episode]:
    """Episodes of shard ``index`` of ``count`` (round robin over the ordered list)."""
    if not 0 <= index < count:
        raise ValueError(f"shard {index} is not in [0, {count})")
    return episodes[index::count]


class EpisodeFailures(RuntimeError):
    """More episodes of a shard raised than its allowed share: every error is listed."""

    def __init__(self, failed: list[dict], total: int, share: float):
        self.failed = failed
        lines = "\n".join(f"  episode {r['index']} ({r['task']}): {r['error']}" for r in failed)
        super().__init__(f"{len(failed)} of {total} episodes raised, more than max_failed_share {share:g} of them "
                         f"(a broken simulator is not a 0% policy); the errors:\n{lines}")


def check_failures(records: Iterable[dict], total: int, share: float) -> None:
    """Raise ``EpisodeFailures`` when more than ``share`` of ``total`` episodes have an ``error``."""
    failed = sorted((r for r in records if r.get("error")), key=lambda r: r["index"])
    if len(failed) > share * total:
        raise EpisodeFailures(failed, total, share)


def run_episodes(bench: Benchmark, entry: dict, episodes: Iterable[Episode], infer: InferFn, execute: int,
                 slots: int = 1, on_record: Callable[[dict], None] | None = None, progress: bool = True,
                 max_failed_share: float = 1.0, videos=None, mode: str | None = None) -> list[dict]:
    """Run ``episodes`` with up to ``slots`` of them stepping in lockstep; every re-plan that falls
    on the same tick is one ``infer`` call. Returns one record per episode, in episode order.

    An episode that raises (in the simulator, its protocol, its image or action conversion) is
    recorded as a failure with its ``error`` and the run goes on, on a fresh simulator, as OpenVLA's
    and openpi's evaluators go on; once more than ``max_failed_share`` of the episodes have raised,
    the run stops with ``EpisodeFailures`` listing every error. Errors of the policy itself
    (``infer``) stop the run at once. ``videos``: a ``video.RolloutVideos`` that films some episodes
    (their records get ``video``). ``mode``: the execution mode's name, for the progress line
    ("mode=half_chunk (executes 2 of 4)")."""
    import traceback

    from vlm4vla_core.progress import progress as counter

    todo = list(episodes)
    total = len(todo)
    sims = [bench.simulator(entry) for _ in range(max(1, min(slots, len(todo))))]
    image_fn, action_fn = bench.image_transform(entry), bench.action_to_env(entry)
    active: dict[int, list] = {}
    records: list[dict] = []
    failures: list[dict] = []
    of = f" of {entry['chunk']}" if isinstance(entry, dict) and "chunk" in entry else ""
    desc = f"{bench.kind} " + (f"mode={mode} " if mode else "") + f"(executes {execute}{of})"
    bar = counter(total=len(todo), desc=desc, unit="episodes", disable=not progress,
                  mininterval=2)

    def finish(episode: Episode, agent: Agent, record: dict) -> None:
        record = dict(index=episode.index, task=episode.task, instruction=episode.instruction, **episode.params,
                      **record, execute_steps=execute, plans=agent.plans)
        record.update(outcome=bench.outcome(record, entry), success_step=bench.success_step(record))
        if videos is not None:
            videos.offer(record, agent.frames)
        records.append(record)
        if on_record:
            on_record(record)
        bar.update(1)

    def fail(slot: int, episode: Episode, agent: Agent, err: Exception) -> None:
        active.pop(slot, None)
        error = f"{type(err).__name__}: {err}"
        finish(episode, agent, dict(bench.failure_record(error), traceback=traceback.format_exc(limit=8)))
        failures.append(records[-1])
        close = getattr(sims[slot], "close", None)
        try:
            if close:
                close()
        except Exception:  # noqa: BLE001 - the simulator is replaced whatever state it is in
            pass
        if len(failures) > max_failed_share * total:
            raise EpisodeFailures(failures, total, max_failed_share)
        sims[slot] = bench.simulator(entry)

    def start(slot: int) -> None:
        while todo:
            episode = todo.pop(0)
            agent = Agent(execute, image_fn, action_fn)
            if videos is not None and videos.wants(episode.task):
                agent.frames = []
            try:
                gen = bench.run_episode(sims[slot], episode, entry)
                active[slot] = [episode, gen, agent, next(gen)]
                return
            except StopIteration as stop:
                finish(episode, agent, stop.value)
            except Exception as err:  # noqa: BLE001 - an episode's failure, recorded
                fail(slot, episode, agent, err)

    try:
        for slot in range(len(sims)):
            start(slot)
        while active:
            need = []
            for s in list(active):
                episode, _, agent, obs = active[s]
                try:
                    if agent.needs_plan(obs):
                        need.append((s, agent.request(obs)))
                except Exception as err:  # noqa: BLE001 - rendering the episode's frame failed
                    fail(s, episode, agent, err)
                    start(s)
            if need:
                chunks = infer([request for _, request in need])
                if len(chunks) != len(need):
                    raise ValueError(f"policy answered {len(chunks)} chunks for {len(need)} requests")
                for (s, _), chunk in zip(need, chunks):
                    active[s][2].set_chunk(chunk)
            for slot in [s for s in list(active) if active[s][2].queue]:
                episode, gen, agent, _ = active[slot]
                try:
                    active[slot][3] = gen.send(agent.next_action())
                except StopIteration as stop:
                    del active[slot]
                    finish(episode, agent, stop.value)
                    start(slot)
                except Exception as err:  # noqa: BLE001 - an episode's failure, recorded
                    fail(slot, episode, agent, err)
                    start(slot)
    finally:
        bar.close()
        for sim in sims:
            close = getattr(sim, "close", None)
            if close:
                close()
    return sorted(records, key=lambda r: r["index"])


def zero_infer(chunk: int, action_dim: int) -> InferFn:
    """The zero-action baseline: every canonical action is all zeros."""
    return lambda requests: [np.zeros((chunk, action_dim), np.float32) for _ in requests]

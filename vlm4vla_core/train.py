"""Training stage: one (backbone, benchmark, ablation, seed) VLA job under DeepSpeed.

Runs as one process (``python -m vlm4vla_core train ...``) or N processes under
a standard launcher (``torchrun --nproc_per_node N -m vlm4vla_core train ...``
or ``deepspeed``); on CPU with ``DS_ACCELERATOR=cpu`` (gloo), on GPUs unchanged.

The recipe: the benchmark's training set (``vlm4vla_core.episodes``), streamed
through DataLoader workers that decode and encode the frames with the backbone's
processor; the shared VLA policy and its loss; the exported ``policy/`` folder
(``VLARecipe``). The skeleton around it (precision, DeepSpeed, resume, preemption,
metrics, export) is ``vlm4vla_core.recipe``, shared with the SFT stage.
Batches are a pure function of (seed, step, rank), so a run restarted from its
latest checkpoint continues exactly where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path

from vlm4vla_core import recipe
from vlm4vla_core.config import Study
from vlm4vla_core.training import install_stop_signals

POLICY_DIR = "policy"


class VLARecipe(recipe.Recipe):
    """The VLA stage's share of the training skeleton (``vlm4vla_core.recipe``): the shared policy on the
    benchmark's training set, its loss, and the exported ``policy/`` folder."""

    name = "train"
    shard_at_load = True

    def __init__(self, policy_cfg, settings, data_dir: Path, run_dir: Path, seed: int, vlm=None, processor=None,
                 stop_after: int | None = None):
        super().__init__(settings, run_dir, seed, stop_after)
        self.policy_cfg, self.data_dir, self.vlm, self.processor = policy_cfg, Path(data_dir), vlm, processor

    @property
    def out(self) -> Path:
        return self.run_dir / POLICY_DIR

    def configure(self, world: int) -> None:
        from vlm4vla_core.config import resolve_batch
        from vlm4vla_core.episodes.source import TrainingSet

        self.settings = resolve_batch(self.settings, world)  # the global batch whatever the process count
        self.data = TrainingSet(self.data_dir)
        if self.data.action_dim != self.policy_cfg.action_dim:
            raise ValueError(f"{self.data_dir}: actions have {self.data.action_dim} dimensions, "
                             f"the policy {self.policy_cfg.action_dim}")

    def build(self, dtype):
        from vlm4vla_core.policy import VLAPolicy

        self.policy = VLAPolicy(self.policy_cfg, vlm=self.vlm, processor=self.processor, dtype=dtype)
        return self.policy

    def backbone(self, model):
        return model.backbone

    def identity(self, weight_settings: dict, world: int) -> list:
        stats = (self.data_dir / "stats.json").read_bytes()
        return [asdict(self.policy_cfg), weight_settings, self.seed, world, hashlib.sha256(stats).hexdigest()]

    def announce(self, run, model) -> None:
        counts = model.parameter_counts()
        print(f"parameters: total {counts['total']:,}, trainable {counts['trainable']:,}, "
              f"added {counts['added']:,} ({100 * counts['added_share']:.3f}% of the backbone); "
              f"training set: {self.data.num_frames:,} frames", flush=True)
        (self.run_dir / "parameters.json").write_text(json.dumps(counts, indent=2))

    def batches(self, run, first: int):
        from vlm4vla_core.episodes import TrainStream

        s = self.settings
        yield from TrainStream(self.data, self.policy_cfg.chunk, s.micro_batch, self.seed, run.rank, first,
                               s.max_steps * s.grad_accum, self.policy.encode, num_workers=s.loader_workers,
                               world=run.world)

    def loss(self, module, inputs: dict, target):
        return module.loss(inputs, target)

    def export(self, run, module, state: dict) -> None:
        from vlm4vla_core.policy import save_policy
        from vlm4vla_core.provenance import provenance

        s = self.settings
        save_policy(module, self.out, state_dict=state, extra=dict(
            steps=run.step, seed=self.seed, training=s.as_dict(), data=str(self.data_dir),
            provenance=provenance(dict(policy=asdict(self.policy_cfg), training=s.as_dict()))))


def train(policy_cfg, settings, data_dir: Path, run_dir: Path, seed: int, vlm=None, processor=None,
          stop_after: int | None = None) -> Path | None:
    """Train and export ``run_dir/policy``. Returns its path (None when stopped early for preemption)."""
    return recipe.run(VLARecipe(policy_cfg, settings, data_dir, run_dir, seed, vlm, processor, stop_after))


def policy_config_for(config: Study, backbone: str, benchmark: str, ablation: str, seed: int, source: str, data_dir: Path):
    """The PolicyConfig of one job, from the study config and the benchmark's normalisation statistics."""
    from vlm4vla_core import benchmarks
    from vlm4vla_core.policy import PolicyConfig

    stats_file = data_dir / "stats.json"
    if not stats_file.is_file():
        raise FileNotFoundError(f"dataset has no statistics: {stats_file} is missing")
    stats = json.loads(stats_file.read_text())
    bench, entry = benchmarks.of(config, benchmark)
    try:
        low, high = bench.action_bounds(entry, stats)
    except KeyError as err:
        raise ValueError(f"{stats_file}: missing key action.{err.args[0]}") from None
    if len(low) != bench.action_dim - 1:
        raise ValueError(f"{stats_file}: {len(low) + 1}-D actions, benchmark kind {bench.kind} takes {bench.action_dim}")
    pol = config.policy
    return PolicyConfig(
        family=config.backbones[backbone].family,
        source=source,
        chunk=entry["chunk"],
        action_dim=bench.action_dim,
        image_size=entry.get("image_size", 224),
        head_hidden=pol.head_hidden,
        head_layers=pol.head_layers,
        loss=pol.loss,
        gripper_weight=pol.gripper_weight,
        arm_norm=pol.arm_norm,
        arm_range=bench.arm_range_of(entry),
        ablation=ablation,
        init_seed=seed,
        arm_low=tuple(low),
        arm_high=tuple(high),
    )


def main(argv: list[str]) -> int:
    from vlm4vla_core import study

    install_stop_signals()  # a pre-timeout signal during start-up still ends in a checkpoint and exit 75
    p = argparse.ArgumentParser(prog="python -m vlm4vla_core train", description=__doc__)
    p.add_argument("--config", required=True)
    p.add_argument("--backbone", required=True, help="key under backbones:")
    p.add_argument("--benchmark", required=True, help="key under benchmarks:")
    p.add_argument("--ablation", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--source", help="backbone checkpoint (default: the backbone's source in the config)")
    p.add_argument("--data", required=True, help="training-set folder of the benchmark (the data stage's output)")
    p.add_argument("--run-dir", required=True, help="checkpoints, metrics and the exported policy/ go here")
    p.add_argument("--stop-after", type=int, help="checkpoint and stop after this many steps (resume later)")
    args = p.parse_args(argv)
    # a ConfigError: one line 'error: ...' (vlm4vla_core.__main__.run)
    config = study.load(args.config, benchmark=args.benchmark, backbone=args.backbone, ablation=args.ablation)
    source = args.source or config.backbones[args.backbone].source
    data_dir = Path(args.data)
    try:
        policy_cfg = policy_config_for(config, args.backbone, args.benchmark, args.ablation, args.seed, source, data_dir)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    settings = config.train_settings(args.backbone, args.benchmark)
    return recipe.stage(VLARecipe(policy_cfg, settings, data_dir, Path(args.run_dir), args.seed,
                                  stop_after=args.stop_after))

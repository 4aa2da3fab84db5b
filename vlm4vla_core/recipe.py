"""One skeleton for every training stage: a ``Recipe`` supplies what differs, ``run`` does the rest.

The VLA stage (``vlm4vla_core.train``) and the SFT stage (``vlm4vla_core.sft``) are recipes. Each
supplies its model, its data, the loss of a batch and what it exports; ``run(recipe)`` does, in
this order and the same way for both:

1. the process group (``init_distributed_env``), then ``recipe.configure(world)`` (settings, data);
2. ``torch.manual_seed(recipe.seed)``; under ZeRO-3 with ``shard_at_load`` the model is built
   inside ``zero.Init`` (each rank reads only its shard); ``recipe.build(dtype)`` with the
   precision's dtype (bfloat16, float16 or float32);
3. gradient checkpointing on ``recipe.backbone(model)`` when the settings ask for it;
4. ``max_steps: 0``: ``recipe.export_base(model)`` may export the untouched weights and end here;
5. ``TrainingRun`` (``vlm4vla_core.training``: DeepSpeed, checkpoints with the fingerprint
   ``sha256(recipe.identity(weight_settings, world))``, exact resume, preemption, metrics);
6. ``recipe.announce(run, model)`` on rank 0; the step loop over ``recipe.batches(run, first)``
   (inputs moved to the device and cast to the engine's half precision, targets moved to the
   device) with ``recipe.loss(module, inputs, target)``;
7. the trained weights gathered on rank 0 (bf16 where trained in bf16, fp32 otherwise),
   ``recipe.export(run, module, state)`` on rank 0, a barrier, the checkpoints removed.

``run`` returns ``recipe.out``, or None when the run stopped early with a checkpoint (a signal or
``stop_after``); ``exit_status`` turns that into the stage's exit status (0, or ``PREEMPTED`` so
that the scheduler retries). A non-finite loss raises ``NonFiniteLoss`` from the loop for every
recipe alike; ``stage`` prints it as one ``error:`` line and returns 1.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

from vlm4vla_core.training import PREEMPTED, NonFiniteLoss, TrainingRun, deepspeed_config, init_distributed_env

#: settings that change a run's length, logging or speed, not its weights at a given step
NOT_IN_FINGERPRINT = ("max_steps", "checkpoint_every", "log_every", "num_threads", "loader_workers",
                      "gradient_checkpointing")


def weight_settings(settings) -> dict:
    """The training settings that decide the weights at a given step (the fingerprint's share of them)."""
    return {k: v for k, v in settings.as_dict().items() if k not in NOT_IN_FINGERPRINT}


def fingerprint(identity: list) -> str:
    """Short hash of what decides a run's weights; a checkpoint under another fingerprint is not resumed."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def precision_dtype(precision: str):
    """The dtype of a training precision: bfloat16, float16, else float32."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


class Recipe(ABC):
    """What one training stage supplies to ``run``: the hooks below (see the module docstring)."""

    #: the stage's word: the progress bar reads '<name> <run folder>'
    name: str = "train"
    #: under ZeRO-3, build the model inside zero.Init (each rank loads only its own shard of the weights)
    shard_at_load: bool = False

    def __init__(self, settings, run_dir: Path, seed: int, stop_after: int | None = None):
        self.settings, self.run_dir, self.seed, self.stop_after = settings, Path(run_dir), seed, stop_after

    @property
    @abstractmethod
    def out(self) -> Path:
        """The exported folder (what ``run`` returns once finished)."""

    def configure(self, world: int) -> None:
        """Called first, once the process group exists: settle ``self.settings`` for ``world`` processes,
        read and check the data. Bad input stops here, before any model is built."""

    @abstractmethod
    def build(self, dtype):
        """The model to train (an ``nn.Module`` in train mode); ``dtype`` is the precision's (bfloat16, float16,
        float32): a recipe may read its weights in float32 under fp16."""

    def backbone(self, model):
        """The Hugging Face model whose gradient checkpointing ``settings.gradient_checkpointing`` switches on."""
        return model

    @abstractmethod
    def identity(self, weight_settings: dict, world: int) -> list:
        """Everything that decides the weights at a given step (JSON-serialisable), hashed into the
        checkpoints' fingerprint; ``weight_settings`` is ``weight_settings(self.settings)``."""

    def export_base(self, model) -> bool:
        """With ``max_steps: 0``: export the untrained weights and return True, or return False to run the
        (empty) loop and export as after training."""
        return False

    def announce(self, run: TrainingRun, model) -> None:
        """Rank 0, once the engine is built: what is trained on what (printed, or written to the run folder)."""

    @abstractmethod
    def batches(self, run: TrainingRun, first: int) -> Iterator[tuple[dict, object]]:
        """(inputs dict, target) of micro-steps first, first + 1, ... of this rank: a pure function of the
        micro-step, so that a resumed run continues exactly where it stopped."""

    @abstractmethod
    def loss(self, module, inputs: dict, target) -> tuple:
        """(loss tensor, info dict of floats with a 'loss' key) of one micro-batch."""

    @abstractmethod
    def export(self, run: TrainingRun, module, state: dict) -> None:
        """Rank 0: write ``self.out`` from the trained weights ``state`` (full, in the export dtype)."""


def run(recipe: Recipe) -> Path | None:
    """Train a recipe to its settings' ``max_steps`` and export it; None when stopped early."""
    import torch

    init_distributed_env()
    world = int(os.environ["WORLD_SIZE"])
    recipe.configure(world)
    s = recipe.settings
    torch.manual_seed(recipe.seed)
    if recipe.shard_at_load and s.zero_stage == 3:  # every rank reads only its own shard of the weights
        from transformers.integrations import HfDeepSpeedConfig

        _keep_alive = HfDeepSpeedConfig(deepspeed_config(s, world))  # noqa: F841  (read while loading)
    model = recipe.build(precision_dtype(s.precision))
    if s.gradient_checkpointing:
        recipe.backbone(model).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if s.max_steps == 0 and recipe.export_base(model):
        return recipe.out
    trun = TrainingRun(model, s, recipe.run_dir, fingerprint(recipe.identity(weight_settings(s), world)),
                       recipe.stop_after)
    if trun.rank == 0:
        recipe.announce(trun, model)
    half = torch.bfloat16 if trun.engine.bfloat16_enabled() else torch.float16 if trun.engine.fp16_enabled() else None

    def batches(first: int):
        source = recipe.batches(trun, first)
        try:
            for inputs, target in source:
                inputs = {k: v.to(trun.device) for k, v in inputs.items()}
                if half is not None:
                    inputs = {k: v.to(half) if v.is_floating_point() else v for k, v in inputs.items()}
                yield inputs, target.to(trun.device)
        finally:
            close = getattr(source, "close", None)
            if close:
                close()

    finished = trun.fit(batches, lambda module, batch: recipe.loss(module, *batch),
                        desc=f"{recipe.name} {recipe.run_dir.name}")
    if not finished:
        return None
    state = trun.full_state_dict()
    if state is not None:  # bf16 where trained in bf16; fp32 otherwise (fp16 training keeps fp32 master weights)
        keep = torch.bfloat16 if s.precision == "bf16" else torch.float32
        state = {k: v.to(keep) if v.is_floating_point() else v for k, v in state.items()}
    if trun.rank == 0:
        recipe.export(trun, trun.engine.module, state)
    trun.barrier()
    trun.discard_checkpoints()  # the export holds the weights: the optimizer state is no longer needed
    return recipe.out


def exit_status(out: Path | None, stop_after: int | None) -> int:
    """0 when finished or stopped on purpose (``stop_after``); ``PREEMPTED`` when a signal stopped the run
    (non-zero, so that the scheduler retries and the run resumes)."""
    return PREEMPTED if out is None and stop_after is None else 0


def stage(recipe: Recipe) -> int:
    """Run a recipe as a command-line stage: its exit status, a non-finite loss as one ``error:`` line and 1."""
    try:
        out = run(recipe)
    except NonFiniteLoss as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    return exit_status(out, recipe.stop_after)

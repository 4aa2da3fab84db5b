"""The training skeleton (vlm4vla_core.recipe): the VLA stage and the SFT stage both run through it, and
what goes wrong in a stage's hook surfaces the same way for both."""

import numpy as np
import pytest
import torch

from vlm4vla_core import recipe, sft, train
from vlm4vla_core.backbones import get_adapter
from vlm4vla_core.config import TrainSettings
from vlm4vla_core.vqa.sets import Sample

SIZE = 56


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny Qwen2.5-VL checkpoint, a small LeRobot training set (4-D actions) and a few conversations."""
    from vlm4vla_core.episodes.lerobot import LeRobotWriter
    from vlm4vla_core.episodes.source import write_training_set

    root = tmp_path_factory.mktemp("recipe")
    get_adapter("qwen2_5_vl").make_tiny(root / "vlm", image_size=SIZE, seed=0)
    rng = np.random.default_rng(0)
    with LeRobotWriter(root / "lerobot", fps=10, action_dim=4) as w:
        for task in ("press the button", "open the drawer"):
            w.add_episode([rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(8)],
                          rng.uniform(-1, 1, (8, 4)), task)
    write_training_set(root / "data", root=root / "lerobot")
    samples = [Sample(id=str(i), image=rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8),
                      turns=[("Which task?", "press the button" if i % 2 else "open the drawer")]) for i in range(6)]
    return root, samples


def _settings(**kw):
    return TrainSettings(**{**dict(zero_stage=1, precision="fp32", micro_batch=2, grad_accum=1, grad_clip=1.0, lr=1e-3,
                                   warmup_steps=1, max_steps=3, checkpoint_every=1, log_every=1, num_threads=1), **kw})


def _recipes(tiny, run_dir):
    """One recipe of each stage on the tiny checkpoint."""
    from vlm4vla_core.policy import PolicyConfig

    root, samples = tiny
    cfg = PolicyConfig(family="qwen2_5_vl", source=str(root / "vlm"), chunk=2, action_dim=4, image_size=SIZE,
                       head_hidden=16, arm_low=(-1.0,) * 3, arm_high=(1.0,) * 3)
    return {"train": train.VLARecipe(cfg, _settings(), root / "data", run_dir / "train", seed=0),
            "sft": sft.SFTRecipe("qwen2_5_vl", str(root / "vlm"), root / "conversations", _settings(),
                                 run_dir / "sft", seed=0, samples=samples)}


def test_both_stages_hand_their_recipe_to_the_one_skeleton(tiny, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(recipe, "run", lambda r: seen.append(r) or r.out)
    recipes = _recipes(tiny, tmp_path)
    t, s = recipes["train"], recipes["sft"]
    assert train.train(t.policy_cfg, t.settings, t.data_dir, t.run_dir, 0) == tmp_path / "train" / "policy"
    assert sft.sft("qwen2_5_vl", s.source, s.data, s.settings, s.run_dir, 0, samples=s.samples) == \
        tmp_path / "sft" / "checkpoint"
    assert [type(r) for r in seen] == [train.VLARecipe, sft.SFTRecipe]
    assert all(isinstance(r, recipe.Recipe) for r in seen)


@pytest.mark.parametrize("stage", ["train", "sft"])
def test_a_non_finite_loss_in_either_stage_ends_the_same_way(tiny, tmp_path, stage, capsys):
    """The stage's loss hook turns NaN at step 2: the skeleton's loop stops both stages alike, one error line,
    exit status 1, the step-1 checkpoint kept, nothing exported."""
    r = _recipes(tiny, tmp_path)[stage]
    calls = []
    own_loss = r.loss

    def loss(module, inputs, target):
        value, info = own_loss(module, inputs, target)
        calls.append(1)
        return (value * float("nan"), info) if len(calls) == 2 else (value, info)

    r.loss = loss
    assert recipe.stage(r) == 1
    err = capsys.readouterr().err
    assert "error: non-finite loss (NaN or inf) at step 2" in err and "step1" in err
    assert (r.run_dir / "checkpoints" / "latest").read_text().strip() == "step1"
    assert not r.out.exists()


def test_a_stopped_run_exits_for_a_retry_only_when_a_signal_stopped_it(tiny, tmp_path):
    assert recipe.exit_status(None, None) == recipe.PREEMPTED  # a signal: the scheduler retries, the run resumes
    assert recipe.exit_status(None, 2) == 0  # --stop-after: stopped on purpose
    assert recipe.exit_status(tmp_path, None) == 0


def test_the_fingerprint_leaves_out_what_does_not_decide_the_weights(tiny, tmp_path):
    r = _recipes(tiny, tmp_path)["sft"]
    mark = recipe.fingerprint(r.identity(recipe.weight_settings(r.settings), 1))
    longer = recipe.weight_settings(_settings(max_steps=9, log_every=3, num_threads=2, gradient_checkpointing=True))
    assert recipe.fingerprint(r.identity(longer, 1)) == mark  # a longer run resumes the shorter one's checkpoints
    assert recipe.fingerprint(r.identity(recipe.weight_settings(_settings(lr=2e-3)), 1)) != mark
    assert recipe.fingerprint(r.identity(recipe.weight_settings(r.settings), 2)) != mark
    assert torch.bfloat16 == recipe.precision_dtype("bf16") and torch.float32 == recipe.precision_dtype("fp32")

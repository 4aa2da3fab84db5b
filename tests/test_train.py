"""The policy and its DeepSpeed training: padded batches, frozen parts, resume, two processes, evaluation."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from vlm4vla_core.backbones import get_adapter
from vlm4vla_core.config import load_study
from vlm4vla_core.policy import VLAPolicy, load_policy
from vlm4vla_core.train import policy_config_for

ROOT = Path(__file__).resolve().parents[1]
SIZE = 56
FAMILIES = {"tiny-qwen2.5-vl": "qwen2_5_vl", "tiny-paligemma": "paligemma"}
TASK = "button-press-topdown-v3"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Tiny checkpoints of both families, two real expert episodes, and a small study config."""
    root = tmp_path_factory.mktemp("study")
    for name, family in FAMILIES.items():
        get_adapter(family).make_tiny(root / name, image_size=SIZE, seed=0)
    from vlm4vla_core.benchmarks.metaworld.collect import collect

    collect([TASK], 2, root / "data", image_size=SIZE, camera="corner4", max_steps=150, workers=1, progress=False)
    raw = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    raw["benchmarks"]["metaworld"].update(tasks=[TASK], image_size=SIZE, episodes_per_task=1, max_steps=30)
    raw["training"].update(max_steps=24, checkpoint_every=4, log_every=4, micro_batch=4, warmup_steps=4, lr=1e-3)
    raw["policy"]["head_hidden"] = 32
    raw["evaluation"]["modes"] = ["whole_chunk", "half_chunk", "single_step"]  # every execution mode, whatever the demo runs
    for name in FAMILIES:
        raw["backbones"][name]["source"] = str(root / name)
    (root / "study.yaml").write_text(yaml.safe_dump(raw))
    return root


def _policy(study, backbone="tiny-qwen2.5-vl", ablation="full"):
    config = load_study(study / "study.yaml")
    policy_cfg = policy_config_for(config, backbone, "metaworld", ablation, 0, str(study / backbone), study / "data")
    return VLAPolicy(policy_cfg)


def _frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("backbone", list(FAMILIES))
def test_mixed_length_batch_gives_each_sample_its_own_actions(study, backbone):
    policy = _policy(study, backbone).eval()
    texts = ["press the button", "open the drawer by pulling its handle all the way out towards the robot"]
    images = _frames(2)
    batch = policy.encode(images, texts)
    lengths = batch["attention_mask"].sum(1)
    assert lengths[0] < lengths[1], "the test needs a padded sample"
    assert torch.equal(batch["query_index"], lengths - 1), "the ActionQuery is the last real token"
    with torch.no_grad():
        arm, grip = policy(batch)
        for i in range(2):
            arm_i, grip_i = policy(policy.encode(images[i : i + 1], texts[i : i + 1]))
            torch.testing.assert_close(arm[i], arm_i[0], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(grip[i], grip_i[0], atol=1e-5, rtol=1e-4)


def test_the_query_embedding_reaches_the_output(study):
    policy = _policy(study).eval()
    batch = policy.encode(_frames(1), ["press the button"])
    with torch.no_grad():
        before = policy(batch)[0].clone()
        policy.action_query.add_(1.0)
        after = policy(batch)[0]
    assert not torch.allclose(before, after)


def test_parameter_counts(study, capsys):
    policy = _policy(study, ablation="freeze_vision")
    counts = policy.parameter_counts()
    hidden = policy.action_query.numel()
    assert counts["added"] == hidden + sum(p.numel() for p in policy.head.parameters())
    vision = sum(p.numel() for m in policy.adapter.vision_modules(policy.backbone) for p in m.parameters())
    assert counts["trainable"] == counts["total"] - vision


def _cli(study, run_dir, *extra, backbone="tiny-qwen2.5-vl", ablation="full", launcher=(sys.executable,), env=None):
    cmd = [*launcher, "-m", "vlm4vla_core", "train", "--config", str(study / "study.yaml"), "--backbone", backbone,
           "--benchmark", "metaworld", "--ablation", ablation, "--seed", "0", "--data", str(study / "data"),
           "--run-dir", str(run_dir), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return cmd, env


def _run(study, run_dir, *extra, **kw):
    cmd, env = _cli(study, run_dir, *extra, **kw)
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    return res


def test_frozen_vision_gets_no_gradient_and_does_not_change(study, tmp_path):
    policy = _policy(study, ablation="freeze_vision")
    batch = policy.encode(_frames(2), ["press the button", "open the drawer"])
    loss, _ = policy.loss(batch, torch.zeros(2, policy.cfg.chunk, policy.cfg.action_dim))
    loss.backward()
    vision = {id(p) for m in policy.adapter.vision_modules(policy.backbone) for p in m.parameters()}
    for name, p in policy.named_parameters():
        assert (p.grad is None) == (id(p) in vision), name

    _run(study, tmp_path / "run", ablation="freeze_vision")
    trained = load_file(tmp_path / "run" / "policy" / "policy.safetensors")
    initial = {f"backbone.{k}": v for k, v in policy.backbone.state_dict().items()}
    prefixes = ("backbone.visual.", "backbone.vision_tower.", "backbone.multi_modal_projector.")
    frozen = [k for k in initial if k.startswith(prefixes)]
    moved = [k for k in initial if not k.startswith(prefixes) and not torch.equal(trained[k], initial[k])]
    assert frozen and all(torch.equal(trained[k], initial[k]) for k in frozen)
    assert moved, "the unfrozen backbone must train"
    metrics = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [4, 8, 12, 16, 20, 24]


def test_killed_run_resumes_to_the_same_weights(study, tmp_path):
    _run(study, tmp_path / "straight")

    cmd, env = _cli(study, tmp_path / "killed")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.time() + 300
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "policy").exists(), "the run must die before it finishes"
    killed_at = latest.read_text().strip()

    res = _run(study, tmp_path / "killed")
    assert "resumed from" in res.stdout and killed_at in res.stdout
    a = load_file(tmp_path / "straight" / "policy" / "policy.safetensors")
    b = load_file(tmp_path / "killed" / "policy" / "policy.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from an uninterrupted run"
    steps = [json.loads(l)["step"] for l in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 24


def test_sigterm_checkpoints_and_exits_for_a_retry(study, tmp_path):
    cmd, env = _cli(study, tmp_path / "run")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    latest = tmp_path / "run" / "checkpoints" / "latest"
    deadline = time.time() + 300
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 75, out[-2000:]
    assert "stopped at step" in out and not (tmp_path / "run" / "policy").exists()
    stopped = int(latest.read_text().strip().removeprefix("step"))
    assert 0 < stopped < 24
    res = _run(study, tmp_path / "run")
    assert f"at step {stopped}" in res.stdout and (tmp_path / "run" / "policy" / "policy.safetensors").is_file()


def test_changed_settings_start_over_instead_of_resuming(study, tmp_path):
    _run(study, tmp_path / "run", "--stop-after", "8")
    assert (tmp_path / "run" / "checkpoints" / "latest").is_file() and not (tmp_path / "run" / "policy").exists()
    raw = yaml.safe_load((study / "study.yaml").read_text())
    raw["training"]["lr"] = 3e-3
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(raw))
    cmd, env = _cli(study, tmp_path / "run")
    cmd[cmd.index("--config") + 1] = str(tmp_path / "other.yaml")
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "starting over" in res.stdout and "resumed from" not in res.stdout
    # once the policy is exported, the checkpoints (optimizer state included) are removed
    assert (tmp_path / "run" / "policy" / "policy.safetensors").is_file()
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_two_process_deepspeed_step(study, tmp_path):
    raw = yaml.safe_load((study / "study.yaml").read_text())
    raw["training"].update(max_steps=3, checkpoint_every=2, log_every=1, zero_stage=2)
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(raw))
    cmd, env = _cli(study, tmp_path / "run", "--stop-after", "2", backbone="tiny-paligemma")
    cmd[cmd.index("--config") + 1] = str(tmp_path / "two.yaml")
    torchrun = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node", "2"]
    res = subprocess.run(torchrun + cmd[1:], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    # ZeRO-2 wrote one optimizer shard per rank
    shards = sorted(p.name for p in (tmp_path / "run" / "checkpoints" / "step2").glob("*optim_states.pt"))
    assert len(shards) == 2, shards
    cmd = cmd[: cmd.index("--stop-after")] + cmd[cmd.index("--stop-after") + 2:]
    res = subprocess.run(torchrun + cmd[1:], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    policy = load_policy(tmp_path / "run" / "policy")
    assert policy.predict(_frames(1), ["press the button"]).shape == (1, 4, 4)


def test_evaluate_stage_writes_one_result_per_run(study, tmp_path):
    _run(study, tmp_path / "run")
    out = tmp_path / "eval.json"
    res = subprocess.run(
        [sys.executable, "-m", "vlm4vla_core", "evaluate", "--config", str(study / "study.yaml"), "--benchmark",
         "metaworld", "--seed", "0", "--policy", str(tmp_path / "run" / "policy"), "--backbone", "tiny-qwen2.5-vl",
         "--ablation", "full", "--threads", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    record = json.loads(out.read_text())
    assert set(record["modes"]) == {"whole_chunk", "half_chunk", "single_step"}
    assert [record["modes"][m]["execute_steps"] for m in ("whole_chunk", "half_chunk", "single_step")] == [4, 2, 1]
    for mode in record["modes"].values():
        assert [e["task"] for e in mode["episodes"]] == [TASK]
    assert record["reported_mode"] in record["modes"] and record["mode_selection"] == "best"
    for m, mode in record["modes"].items():  # videos_per_task defaults to 1: the one episode is filmed
        [episode] = mode["episodes"]
        video = tmp_path / episode["video"]
        assert episode["video"].startswith(f"videos/eval/{m}/{TASK}_") and video.stat().st_size > 1000


def test_missing_statistics_are_named(study, tmp_path):
    (tmp_path / "data").mkdir()
    cmd, env = _cli(study, tmp_path / "run")
    cmd[cmd.index("--data") + 1] = str(tmp_path / "data")
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "stats.json" in res.stderr


@pytest.mark.slow
def test_two_processes_give_the_loss_curve_of_one_with_accumulation_two(study, tmp_path):
    """Same global batch (training.global_batch 4 = micro-batch 2 x 2): 1 process accumulates 2 micro-batches,
    2 processes take one each; the batches are drawn by global micro-batch index, the logged loss is the mean
    over ranks, so the curves agree within float tolerance."""
    raw = yaml.safe_load((study / "study.yaml").read_text())
    raw["training"].update(max_steps=4, checkpoint_every=4, log_every=1, micro_batch=2, global_batch=4)
    (tmp_path / "gb.yaml").write_text(yaml.safe_dump(raw))
    curves = {}
    for n in (1, 2):
        cmd, env = _cli(study, tmp_path / f"run{n}", backbone="tiny-paligemma")
        cmd[cmd.index("--config") + 1] = str(tmp_path / "gb.yaml")
        if n == 2:
            cmd = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node", "2"] + cmd[1:]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, res.stderr[-4000:]
        curves[n] = [json.loads(l)["loss"] for l in (tmp_path / f"run{n}" / "metrics.jsonl").read_text().splitlines()]
    assert len(curves[1]) == len(curves[2]) == 4
    np.testing.assert_allclose(curves[2], curves[1], rtol=1e-4, atol=1e-6)
    a = load_file(tmp_path / "run1" / "policy" / "policy.safetensors")
    b = load_file(tmp_path / "run2" / "policy" / "policy.safetensors")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)


def test_a_global_batch_the_processes_cannot_keep_is_refused_at_start(study, tmp_path):
    raw = yaml.safe_load((study / "study.yaml").read_text())
    raw["training"].update(micro_batch=4, global_batch=6)
    (tmp_path / "gb.yaml").write_text(yaml.safe_dump(raw))
    cmd, env = _cli(study, tmp_path / "run")
    cmd[cmd.index("--config") + 1] = str(tmp_path / "gb.yaml")
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 1 and "global batch 6 is not micro_batch 4 x grad_accum x 1 processes" in res.stderr

"""Running on Slurm: the global profile, multi-node launch, the global batch, preemption, and the demo
study through the slurm executor plugin on a fake Slurm (tests/fake_slurm)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from vlm4vla_core.config import ConfigError, TrainSettings, resolve_batch
from vlm4vla_core.launch import command, first_host, rendezvous
from vlm4vla_core.training import slurm_rank_env

ROOT = Path(__file__).resolve().parents[1]
FAKE_BIN = ROOT / "tests" / "fake_slurm" / "bin"
TINY_RUN = ROOT / "tests" / "helpers" / "tiny_run.py"
BIN = Path(sys.executable).parent


def _clone(tmp_path) -> Path:
    dst = tmp_path / "wf"
    dst.mkdir()
    for name in ("Snakefile", "config.yaml", "workflow", "config", "profiles", "envs"):
        src = ROOT / name
        subprocess.run(["cp", "-r", str(src), str(dst / name)], check=True)
    return dst


def _env(**extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _snakemake(*args, cwd, env=None, timeout=600):
    return subprocess.run([str(BIN / "snakemake"), *args], cwd=cwd, env=env or _env(), capture_output=True,
                          text=True, timeout=timeout)


# -- launch and batch ---------------------------------------------------------------------------
def test_rendezvous_and_ranks_from_the_slurm_environment():
    assert first_host("gpu[003-005,007],cpu1") == "gpu003" and first_host("node7") == "node7"
    env = {"SLURM_JOB_ID": "123456", "SLURM_JOB_NODELIST": "gpu[12-13]"}
    if shutil.which("scontrol") is None:
        assert rendezvous(env) == {"MASTER_ADDR": "gpu12", "MASTER_PORT": str(20000 + 123456 % 20000)}
    assert slurm_rank_env({"SLURM_PROCID": "9", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1"}) == \
        {"RANK": "9", "WORLD_SIZE": "16", "LOCAL_RANK": "1"}
    assert slurm_rank_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "RANK": "0"}) == {}  # a launcher set them


def test_launch_uses_srun_in_an_allocation_and_torchrun_elsewhere(monkeypatch):
    cmd, extra = command(1, 2, ["train", "--x"], env={})
    assert "--standalone" in cmd and "--nproc_per_node=2" in cmd and extra == {}
    assert command(1, 1, ["train"], env={})[0][1:] == ["-m", "vlm4vla_core", "train"]
    with pytest.raises(SystemExit, match="Slurm"):
        command(2, 8, ["train"], env={})
    monkeypatch.setenv("PATH", f"{FAKE_BIN}:{os.environ['PATH']}")
    cmd, extra = command(2, 8, ["train"], env={"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "n[1-2]"}, cpus=4)
    assert cmd[:6] == ["srun", "--nodes=2", "--ntasks=16", "--ntasks-per-node=8", "--cpus-per-task=4",
                       "--kill-on-bad-exit=1"]
    assert extra["MASTER_PORT"] == "20007" and extra["MASTER_ADDR"]


def test_the_global_batch_is_kept_by_accumulation_or_refused():
    s = TrainSettings(zero_stage=2, precision="bf16", micro_batch=8, grad_accum=1, grad_clip=1.0, lr=1e-5,
                      warmup_steps=1, max_steps=1, checkpoint_every=1, global_batch=512)
    assert resolve_batch(s, 16).grad_accum == 4 and resolve_batch(s, 64).grad_accum == 1
    with pytest.raises(ConfigError, match="global batch 512 is not micro_batch 8 x grad_accum x 24 processes"):
        resolve_batch(s, 24)


# -- profiles and planning -------------------------------------------------------------------------
def _install_line() -> str:
    """The README's install line of the global profile (as `make slurm-profile` runs it)."""
    text = (ROOT / "README.md").read_text()
    line = next(l.strip() for l in text.splitlines() if l.strip().startswith("mkdir -p ~/.config/snakemake"))
    return line.split("#")[0].strip()


def test_snakemake_profile_slurm_plans_the_paper_study_without_conda_or_slurm(tmp_path):
    wf = _clone(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    env = _env(HOME=str(home), PATH=os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                                     if not (Path(p) / "conda").exists()))
    env.pop("XDG_CONFIG_HOME", None)
    subprocess.run(_install_line(), shell=True, cwd=wf, env=env, check=True)
    assert (home / ".config" / "snakemake" / "slurm" / "config.yaml").is_file()
    res = _snakemake("--profile", "slurm", "-n", "results/paper/runs/qwen3-vl-30b-a3b/libero10/full/seed0/policy",
                     "results/paper/runs/kosmos-2/calvin/full/seed0/policy", cwd=wf, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    jobs = [block for block in out.split("rule train:")[1:]]
    big = next(b for b in jobs if "qwen3-vl-30b-a3b" in b.split("resources:")[0])
    small = next(b for b in jobs if "kosmos-2" in b.split("resources:")[0])
    for text, nodes in ((big, 2), (small, 1)):
        res_line = text.split("resources:")[1].splitlines()[0]
        for item in (f"nodes={nodes}", "gres=gpu:8", "tasks_per_node=8", "cpus_per_task=8", "mem_mb=512000",
                     "runtime=2880", "mpi=srun", "--signal=USR1@900"):
            assert item in res_line, (item, res_line)
    # the whole study plans through the same profile
    res = _snakemake("--profile", "slurm", "-n", "--quiet", "rules", cwd=wf, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    counts = dict(l.split()[:2] for l in (res.stdout + res.stderr).splitlines()
                  if len(l.split()) == 2 and l.split()[1].isdigit())
    assert counts["train"] == "423"  # 360, and the embodied-SFT variants: 21 full fine-tuning runs per seed


def test_planning_reports_a_missing_local_source_and_a_broken_global_batch(tmp_path):
    wf = _clone(tmp_path)
    raw = yaml.safe_load((wf / "config.yaml").read_text())
    raw["backbones"]["kosmos-2"]["source"] = "./checkpoints/kosmos-2-missing"
    (wf / "bad.yaml").write_text(yaml.safe_dump(raw))
    res = _snakemake("-n", "--configfile", "bad.yaml", cwd=wf)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "backbones.kosmos-2.source" in out and "kosmos-2-missing does not exist" in out
    raw = yaml.safe_load((wf / "config.yaml").read_text())
    raw["backbones"]["qwen3-vl-30b-a3b"]["train_resources"]["nodes"] = 3
    (wf / "bad.yaml").write_text(yaml.safe_dump(raw))
    res = _snakemake("-n", "--configfile", "bad.yaml", cwd=wf)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "qwen3-vl-30b-a3b" in out and "3 nodes x 8" in out, out[-2000:]
    assert not (wf / "results" / "paper" / "runs").exists()


# -- training runs: non-finite loss, random kills ----------------------------------------------------
def _tiny(run_dir, *args, **kw):
    return subprocess.Popen([sys.executable, str(TINY_RUN), str(run_dir), *args], env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    proc = _tiny(tmp_path / "run", "--max-steps", "12", "--checkpoint-every", "3", "--nan-at", "8")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err[-2000:]
    assert "non-finite loss (NaN or inf) at step 8" in err and "step6" in err
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step6"
    assert not (tmp_path / "run" / "checkpoints" / "step8").exists()


def _kill_and_resume(tmp_path, kills: int, seed: int = 0):
    """An uninterrupted run, and one killed `kills` times at random moments (SIGKILL or the pre-timeout
    SIGUSR1, drawn from a seeded generator), each followed by a resume: the final weights must be equal."""
    steps = str(40 + 10 * kills)
    args = ["--max-steps", steps, "--checkpoint-every", "3", "--step-sleep", "0.02"]
    proc = _tiny(tmp_path / "straight", *args)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    rng = np.random.default_rng(seed)
    run, metrics, done = tmp_path / "killed", tmp_path / "killed" / "metrics.jsonl", 0
    tally = {"SIGKILL": 0, "SIGUSR1": 0}
    while done < kills:
        lines = len(metrics.read_text().splitlines()) if metrics.exists() else 0
        proc = _tiny(run, *args)
        deadline = time.time() + 600
        while proc.poll() is None and time.time() < deadline:  # training has taken a step past the resume point
            if metrics.exists() and len(metrics.read_text().splitlines()) > lines:
                break
            time.sleep(0.01)
        time.sleep(float(rng.uniform(0.0, 0.3)))
        sig = signal.SIGKILL if rng.random() < 0.5 else signal.SIGUSR1
        if proc.poll() is None:
            proc.send_signal(sig)
            done += 1
            tally[sig.name] += 1
        proc.communicate(timeout=600)
        if sig == signal.SIGUSR1 and proc.returncode not in (0, 75):
            pytest.fail(f"SIGUSR1 must end in a checkpoint and exit 75, got {proc.returncode}")
        assert not (run / "final.pt").exists() or done == kills, f"ran to the end after {done} of {kills} kills"
        if (run / "final.pt").exists():
            break
    proc = _tiny(run, *args)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    a, b = torch.load(tmp_path / "straight" / "final.pt"), torch.load(run / "final.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "weights differ after the kills"
    return done, tally


@pytest.mark.reliability
def test_random_kills_resume_to_the_same_weights(tmp_path):
    done, _ = _kill_and_resume(tmp_path, kills=3)
    assert done == 3


@pytest.mark.reliability
def test_twenty_random_kills_resume_to_the_same_weights(tmp_path):
    done, tally = _kill_and_resume(tmp_path, kills=20)
    print(f"kills: {done} ({tally})")
    assert done >= 20


# -- the test study (and the demo) through the slurm executor on a fake Slurm -------------------------
# The demo study, shrunk by overrides only: one task, one seed, one regime, short runs, small VQA sets.
SMALL_DEMO = """\
seeds: [0]
ablations: [full]
benchmarks:
  metaworld:
    tasks: [button-press-topdown-v3]
    image_size: 56
    demos_per_task: 2
    episodes_per_task: 1
    max_steps: 120
policy: {head_hidden: 32}
training: {max_steps: 64, checkpoint_every: 4, log_every: 4, micro_batch: 4, warmup_steps: 4}
vqa_sets:
  shapes: {train_scenes: 8, heldout_scenes: 2}
  metaworld-vqa: {train_episodes_per_task: 1, heldout_episodes_per_task: 1, frames_per_episode: 1}
pretraining:
  tiny-qwen2.5-vl-gen300: {training: {max_steps: 2, checkpoint_every: 2, micro_batch: 2}}
  tiny-qwen2.5-vl-gen800: {training: {max_steps: 2, checkpoint_every: 2, micro_batch: 2}}
  tiny-paligemma-gen300: {training: {max_steps: 2, checkpoint_every: 2, micro_batch: 2}}
  tiny-paligemma-gen800: {training: {max_steps: 2, checkpoint_every: 2, micro_batch: 2}}
embodied_sft:
  tiny-qwen2.5-vl-gen800-mwvqa: {training: {max_steps: 2, checkpoint_every: 2, micro_batch: 2}}
  tiny-paligemma-gen800-mwvqa: {training: {max_steps: 2, checkpoint_every: 2, micro_batch: 2}}
"""


def _through_fake_slurm(tmp_path, configfiles: list[str], study: str):
    """Every job of a study submitted by the slurm executor plugin to the fake Slurm, with the pre-timeout
    signal sent to the training job of tiny-qwen2.5-vl (full fine-tuning, seed 0) once its first checkpoint
    is written: that job must checkpoint, exit 75, be submitted again and resume."""
    wf = _clone(tmp_path)
    (wf / "small.yaml").write_text(SMALL_DEMO)
    run = f"results/{study}/runs/tiny-qwen2.5-vl/metaworld/full/seed0"
    env = _env(PATH=f"{FAKE_BIN}:{BIN}:{os.environ['PATH']}", FAKE_SLURM_DIR=str(tmp_path / "slurm"),
               FAKE_SLURM_PYTHON=sys.executable, FAKE_SLURM_KILL_WAIT="5",
               FAKE_SLURM_SIGNAL_WHEN=f"rule_train_.*_tiny-qwen2.5-vl_metaworld::{run}/checkpoints/latest")
    res = _snakemake("--executor", "slurm", "--configfile", *configfiles, "--jobs", "4",
                     "--default-resources", "slurm_account=fake", "slurm_partition=fake",
                     "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "2",
                     "--retries", "2", "--latency-wait", "5", cwd=wf, env=env, timeout=1500)
    assert res.returncode == 0, res.stderr[-5000:]
    out = wf / "results" / study
    assert (out / "main_table.md").is_file() and (out / "index.md").is_file() and (out / "findings.rst").is_file()
    jobs = [json.loads(p.read_text()) for p in (tmp_path / "slurm" / "jobs").glob("*/meta.json")]
    assert all(j["state"] in ("COMPLETED", "FAILED") for j in jobs)
    rules = {j["comment"].split("_")[1] for j in jobs if j["comment"].startswith("rule_")}
    trains = [j for j in jobs if j["comment"].startswith("rule_train")]
    assert any("--signal=USR1@" in " ".join(j["argv"]) for j in trains)
    # the signalled job checkpointed, exited 75 and was submitted again; the rerun resumed
    signalled = [j for j in trains if (tmp_path / "slurm" / "jobs" / str(j["id"]) / "events").exists()]
    assert len(signalled) == 1 and signalled[0]["state"] == "FAILED"
    # (Snakemake clears a failed job's log before its rerun: the exit status is in the Slurm log the plugin keeps)
    assert "non-zero exit status 75" in Path(signalled[0]["output"]).read_text()
    log = (wf / run / "train.log").read_text()
    assert "resumed from" in log and "at step 0" not in log
    assert (wf / run / "policy" / "policy.safetensors").is_file()
    assert len([j for j in trains if "_tiny-qwen2.5-vl_metaworld" in j["comment"]]) == 2  # not its SFT variants
    return rules


@pytest.mark.slow
def test_the_test_study_runs_through_the_slurm_executor_on_a_fake_slurm(tmp_path):
    """config/test.yaml: every kind of rule (tiny backbone, VQA data, two chained SFT variants, data, training,
    evaluation and the baseline, VQA evaluation, aggregation) as a Slurm job, with a preempted training job."""
    rules = _through_fake_slurm(tmp_path, ["config/test.yaml"], "test")
    assert {"make", "vqa", "sft", "data", "train", "evaluate", "backbone", "aggregate"} <= rules, rules  # merge_eval runs locally


@pytest.mark.e2e
def test_demo_study_runs_through_the_slurm_executor_on_a_fake_slurm(tmp_path):
    """The demo's own DAG (both families, every pretraining level, the embodied-SFT variants), shrunk by
    overrides only: make test-e2e."""
    _through_fake_slurm(tmp_path, ["config/demo.yaml", "small.yaml"], "demo")


def test_a_corrupt_checkpoint_is_named(tmp_path):
    proc = _tiny(tmp_path / "run", "--max-steps", "6", "--checkpoint-every", "3", "--nan-at", "5")
    proc.communicate(timeout=600)
    step = tmp_path / "run" / "checkpoints" / "step3"
    for f in step.glob("*model_states.pt"):
        f.write_bytes(b"garbage")
    proc = _tiny(tmp_path / "run", "--max-steps", "6")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode != 0 and f"{step}: checkpoint cannot be read" in err, err[-2000:]


def test_a_corrupt_policy_folder_is_named(tmp_path):
    from vlm4vla_core.policy import load_policy

    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "policy.json").write_text("{not json")
    (tmp_path / "policy" / "policy.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="policy.json: corrupt policy file"):
        load_policy(tmp_path / "policy")

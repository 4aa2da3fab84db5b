"""The SFT stage and the VQA evaluation: answer-token masking, the exported checkpoint as a VLA
backbone, the scorers, and the Meta-World VQA answers against the simulator state."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vlm4vla_core.backbones import get_adapter
from vlm4vla_core.config import Study, TrainSettings
from vlm4vla_core.sft import IGNORE, build_example, collate, lm_loss, sample_order
from vlm4vla_core.vqa import scoring
from vlm4vla_core.vqa.sets import Sample, load

SIZE = 56
FAMILIES = ("qwen2_5_vl", "paligemma")
TASKS = ["button-press-topdown-v3", "drawer-open-v3"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    for family in FAMILIES:
        get_adapter(family).make_tiny(root / family, image_size=SIZE, seed=0)
    return root


@pytest.fixture(scope="module")
def mwvqa(tmp_path_factory):
    from vlm4vla_core.benchmarks.metaworld.vqa import generate

    root = tmp_path_factory.mktemp("mwvqa")
    generate(TASKS, root, "train", 2, 2, image_size=SIZE, max_steps=100)
    generate(TASKS, root, "heldout", 1, 2, image_size=SIZE, max_steps=100)
    return root


def _image(seed=0):
    return np.random.default_rng(seed).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)


@pytest.mark.parametrize("family", FAMILIES)
def test_loss_masks_everything_but_answer_tokens(tiny, family):
    adapter = get_adapter(family)
    _, proc = adapter.load(tiny / family)
    tok = proc.tokenizer
    turns = [("What is on the table?", "a red drawer"), ("Is it open?", "yes")]
    ids, labels, n_prompt = build_example(adapter, proc, turns)
    end = adapter.placeholder_id(proc)
    # the sequence, built here piece by piece: prompt | answer 1, end | question 2 | answer 2, end
    prompt = adapter.vqa_prompt_ids(proc, turns[0][0])
    a1 = tok("a red drawer", add_special_tokens=False)["input_ids"] + [end]
    q2 = tok("\nIs it open?\n", add_special_tokens=False)["input_ids"]
    a2 = tok("yes", add_special_tokens=False)["input_ids"] + [end]
    assert ids == prompt + a1 + q2 + a2
    assert n_prompt == len(prompt)
    answer = [False] * len(prompt) + [True] * len(a1) + [False] * len(q2) + [True] * len(a2)
    for i, (token, label, is_answer) in enumerate(zip(ids, labels, answer)):
        assert label == (token if is_answer else IGNORE), f"position {i}: token {token}, label {label}"
    # the question never names the action request of the VLA prompt
    assert "What action" not in tok.decode(prompt)
    assert turns[0][0] in tok.decode(prompt)


@pytest.mark.parametrize("family", FAMILIES)
def test_loss_is_the_answer_tokens_cross_entropy(tiny, family):
    adapter = get_adapter(family)
    vlm, proc = adapter.load(tiny / family)
    examples = [build_example(adapter, proc, [("Which task?", "B")]),
                build_example(adapter, proc, [("Point to the gripper.", "(40, 55)")])]
    inputs, labels = collate(adapter, proc, [_image(0), _image(1)], examples)
    loss, info = lm_loss(vlm, inputs, labels)
    logits = vlm(**inputs).logits.float()
    terms = []
    for b, (ids, lab, _) in enumerate(examples):
        for t in range(1, len(ids)):
            if lab[t] != IGNORE:
                terms.append(-torch.log_softmax(logits[b, t - 1], -1)[ids[t]])
    assert info["answer_tokens"] == len(terms)
    torch.testing.assert_close(loss, torch.stack(terms).mean())
    if family == "paligemma":  # the answer is PaliGemma's suffix (causal), the prompt its prefix
        assert inputs["token_type_ids"][0, examples[0][2]] == 1 and inputs["token_type_ids"][0, examples[0][2] - 1] == 0


def test_batches_are_a_pure_function_of_the_step():
    a = [sample_order(10, 3, step, 4, 0, 1) for step in range(5)]
    assert a == [sample_order(10, 3, step, 4, 0, 1) for step in range(5)]
    assert sorted(a[0] + a[1] + a[2][:2]) == list(range(10))  # one epoch visits every sample once
    r0, r1 = sample_order(10, 3, 0, 2, 0, 2), sample_order(10, 3, 0, 2, 1, 2)
    assert not set(r0) & set(r1)


def test_sft_checkpoint_loads_as_a_vla_backbone(tiny, mwvqa, tmp_path):
    from vlm4vla_core.policy import PolicyConfig, VLAPolicy
    from vlm4vla_core.sft import sft

    settings = TrainSettings(zero_stage=1, precision="fp32", micro_batch=4, grad_accum=1, grad_clip=1.0, lr=1e-3,
                             warmup_steps=1, max_steps=4, checkpoint_every=2, log_every=2, num_threads=1)
    out = sft("qwen2_5_vl", str(tiny / "qwen2_5_vl"), mwvqa / "train", settings, tmp_path / "run", seed=0)
    assert (out / "config.json").is_file() and json.loads((out / "sft.json").read_text())["steps"] == 4
    assert not (tmp_path / "run" / "checkpoints").exists()  # the optimizer state is gone once exported
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    cfg = PolicyConfig(family="qwen2_5_vl", source=str(out), chunk=2, action_dim=4, image_size=SIZE, head_hidden=16,
                       arm_low=(-1.0,) * 3, arm_high=(1.0,) * 3)
    sft_policy, base_policy = VLAPolicy(cfg), VLAPolicy(PolicyConfig(**{**cfg.__dict__, "source": str(tiny / "qwen2_5_vl")}))
    name, weight = next((n, p) for n, p in sft_policy.backbone.named_parameters() if "layers.0.mlp" in n)
    assert not torch.equal(weight, dict(base_policy.backbone.named_parameters())[name])  # the SFT weights, not the base
    actions = sft_policy.eval().predict([_image(0)], ["press the button"])
    assert actions.shape == (1, 2, 4) and np.isfinite(actions).all()


def test_sft_resumes_exactly_after_a_stop(tiny, mwvqa, tmp_path, capsys):
    """Stopped after its step-2 checkpoint (as a preempted job is) and run again, an SFT run exports the
    same weights as one that ran straight through."""
    from safetensors.torch import load_file

    from vlm4vla_core.sft import sft

    settings = TrainSettings(zero_stage=1, precision="fp32", micro_batch=4, grad_accum=1, grad_clip=1.0, lr=1e-3,
                             warmup_steps=1, max_steps=4, checkpoint_every=2, log_every=1, num_threads=1)
    straight = sft("paligemma", str(tiny / "paligemma"), mwvqa / "train", settings, tmp_path / "a", seed=3)
    assert sft("paligemma", str(tiny / "paligemma"), mwvqa / "train", settings, tmp_path / "b", seed=3,
               stop_after=2) is None
    assert not (tmp_path / "b" / "checkpoint").exists() and (tmp_path / "b" / "checkpoints").is_dir()
    capsys.readouterr()
    resumed = sft("paligemma", str(tiny / "paligemma"), mwvqa / "train", settings, tmp_path / "b", seed=3)
    assert "at step 2" in capsys.readouterr().out  # it went on from the checkpoint, not from the base
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # nothing logged twice


def test_zero_steps_exports_the_base_weights(tiny, mwvqa, tmp_path):
    from safetensors.torch import load_file

    from vlm4vla_core.sft import sft

    settings = TrainSettings(zero_stage=1, precision="fp32", micro_batch=4, grad_accum=1, grad_clip=1.0, lr=1e-3,
                             warmup_steps=1, max_steps=0, checkpoint_every=2)
    out = sft("paligemma", str(tiny / "paligemma"), mwvqa / "train", settings, tmp_path / "run", seed=0)
    a, b = load_file(out / "model.safetensors"), load_file(tiny / "paligemma" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_scorers_on_hand_made_answers():
    assert scoring.exact_match("Yes.", "yes") == 1.0
    assert scoring.exact_match("The drawer", "drawer") == 1.0
    assert scoring.exact_match("no", "yes") == 0.0
    choices = {"A": "press the button", "B": "open the drawer", "C": "open the window"}
    assert scoring.multiple_choice("B", "B", choices) == 1.0
    assert scoring.multiple_choice("(b)", "B", choices) == 1.0
    assert scoring.multiple_choice("B. open the drawer", "B", choices) == 1.0
    assert scoring.multiple_choice("open the drawer", "B", choices) == 1.0
    assert scoring.multiple_choice("open the window", "B", choices) == 0.0
    assert scoring.multiple_choice("D", "B", choices) == 0.0
    assert scoring.multiple_choice("", "B", choices) == 0.0
    assert scoring.point("(40, 55)", "(40, 55)", 8) == 1.0
    assert scoring.point("(45, 60)", "(40, 55)", 8) == 1.0  # 7.07 away
    assert scoring.point("(46, 61)", "(40, 55)", 8) == 0.0  # 8.49 away
    assert scoring.point("forty", "(40, 55)", 8) == 0.0
    item = dict(answer="left", choices=None, tolerance=None)
    assert scoring.score("exact", " Left ", item) == 1.0
    with pytest.raises(ValueError, match="unknown scoring rule"):
        scoring.score("bleu", "x", item)


def test_conversation_formats(tmp_path):
    from PIL import Image

    Image.fromarray(_image()).save(tmp_path / "a.png")
    llava = [{"id": "1", "image": "a.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "a cube"},
        {"from": "human", "value": "Colour?"}, {"from": "gpt", "value": "red"}]}]
    (tmp_path / "d.json").write_text(json.dumps(llava))
    qwen = [{"image": "a.png", "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]},
                                            {"role": "assistant", "content": "A"}]}]
    (tmp_path / "q.jsonl").write_text(json.dumps(qwen[0]) + "\n")
    import pandas as pd

    png = (tmp_path / "a.png").read_bytes()
    pd.DataFrame([{"image": {"bytes": png, "path": None}, "question": "Open?", "answer": "no"}]).to_parquet(tmp_path / "t.parquet")
    (s,) = load(tmp_path / "d.json")
    assert s.turns == [("What is it?", "a cube"), ("Colour?", "red")] and s.pixels().shape == (SIZE, SIZE, 3)
    assert load(tmp_path / "q.jsonl")[0].turns == [("Q?", "A")]
    (p,) = load(tmp_path / "t.parquet")
    assert p.turns == [("Open?", "no")] and np.array_equal(p.pixels(), s.pixels())


def test_metaworld_vqa_answers_match_the_simulator_state(mwvqa):
    from vlm4vla_core.benchmarks.metaworld import EVAL_SEED_START
    from vlm4vla_core.benchmarks.metaworld.env import MetaWorldEnv
    from vlm4vla_core.benchmarks.metaworld.vqa import LETTERS, POINT_TOLERANCE, project

    train, held = load(mwvqa / "train"), load(mwvqa / "heldout")
    assert {s.extra["state"]["seed"] for s in train} < set(range(EVAL_SEED_START))
    assert min(s.extra["state"]["seed"] for s in held) >= EVAL_SEED_START
    assert {s.type for s in train} >= {"task", "point"}
    envs = {t: MetaWorldEnv(t, SIZE, "corner4", 100) for t in TASKS}
    starts = {}
    for s in train + held:
        st = s.extra["state"]
        env = envs[st["task"]]
        env.reset(st["seed"])  # replay the scripted expert to the frame's step and read the state afresh
        start = env.state[4:7].copy()
        for _ in range(st["step"]):
            env.step(env.expert_action())
        hand, obj = env.state[0:3], env.state[4:7]
        np.testing.assert_allclose(st["hand"], hand, atol=1e-3)
        np.testing.assert_allclose(st["object"], obj, atol=1e-3)
        u, v = project(env, hand)
        if s.type == "task":
            assert s.answer == LETTERS[TASKS.index(st["task"])] and s.rule == "multiple_choice"
        elif s.type == "state":
            moved = float(np.linalg.norm(obj - start))
            assert s.answer == ("yes" if st["progress"] >= 2 / 3 else "no")
            if s.answer == "yes":  # the object has moved away from where the episode started it
                assert moved > 0.01
        elif s.type == "relation":
            gripper_left = u < project(env, obj)[0]
            left = gripper_left if s.extra["subject"] == "gripper" else not gripper_left
            assert s.answer == ("left" if left else "right")
            assert s.turns[0][0].startswith("Is the gripper" if s.extra["subject"] == "gripper" else f"Is the {st['task'].split('-')[0]}")
        elif s.type == "point":
            assert scoring.point(f"({100 * u:.1f}, {100 * v:.1f})", s.answer, 1.0) == 1.0
            assert s.tolerance == POINT_TOLERANCE
        starts[st["task"], st["seed"]] = start
    # the camera model: a point straight ahead of the camera projects to the image centre
    env = envs[TASKS[0]]
    import mujoco

    cam = mujoco.mj_name2id(env._env.model, mujoco.mjtObj.mjOBJ_CAMERA, env.camera)
    ahead = env._env.data.cam_xpos[cam] - env._env.data.cam_xmat[cam].reshape(3, 3)[:, 2]
    np.testing.assert_allclose(project(env, ahead), (0.5, 0.5), atol=1e-6)


def test_relation_questions_are_asked_both_ways():
    """With the gripper left of the drawer in every scene, "always left" still answers only half the
    relation questions: scenes of odd seed + step ask where the drawer is relative to the gripper."""
    from vlm4vla_core.benchmarks.metaworld.vqa import questions

    tasks = ["drawer-open-v3"]
    answers = {}
    for step in (0, 1, 2, 3):
        facts = dict(task=tasks[0], hand_uv=[0.3, 0.5], object_uv=[0.6, 0.5], progress=0.0, seed=7, step=step)
        (rel,) = [q for q in questions(facts, tasks) if q["type"] == "relation"]
        answers[step] = (rel["question"].split(" left")[0], rel["answer"])
    assert answers[1] == answers[3] == ("Is the gripper", "left")
    assert answers[0] == answers[2] == ("Is the drawer", "right")
    facts = dict(task=tasks[0], hand_uv=[0.6, 0.5], object_uv=[0.58, 0.5], progress=0.0, seed=7, step=0)
    assert not [q for q in questions(facts, tasks) if q["type"] == "relation"]  # within the margin: not asked


def test_vqa_eval_stage(tiny, mwvqa, tmp_path):
    from vlm4vla_core.vqa.eval_stage import main

    out = tmp_path / "vqa.json"
    assert main(["--family", "paligemma", "--source", str(tiny / "paligemma"), "--data", str(mwvqa / "heldout"),
                 "--limit", "4", "--max-new-tokens", "3", "--set-name", "mw", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["n"] == 4 and r["source"].startswith("measured: mw") and len(r["predictions"]) == 4
    # the score and each type's score are the share of questions its rule marked correct, from the predictions
    correct = [float(p["correct"]) for p in r["predictions"]]
    assert r["score"] == round(100 * sum(correct) / 4, 2)
    for kind, v in r["by_type"].items():
        hits = [float(p["correct"]) for p in r["predictions"] if p["type"] == kind]
        assert v["n"] == len(hits) and v["score"] == round(100 * sum(hits) / len(hits), 2)
    assert sum(v["n"] for v in r["by_type"].values()) == 4


def test_vqa_eval_progress_in_a_log_file_is_lines_with_totals(tiny, mwvqa, tmp_path, monkeypatch):
    """Output redirected to a file (as in a cluster job's log): progress comes as separate lines, each
    with the count and its total, no carriage returns."""
    import contextlib

    from vlm4vla_core.vqa.eval_stage import main

    monkeypatch.setenv("VLM4VLA_PROGRESS_SECONDS", "0")
    log = tmp_path / "vqa.log"
    with log.open("w") as f, contextlib.redirect_stderr(f), contextlib.redirect_stdout(f):
        assert main(["--family", "qwen2_5_vl", "--source", str(tiny / "qwen2_5_vl"), "--data",
                     str(mwvqa / "heldout"), "--limit", "3", "--max-new-tokens", "2", "--set-name", "mw",
                     "--out", str(tmp_path / "vqa.json")]) == 0
    text = log.read_text()
    assert "\r" not in text
    lines = [ln for ln in text.splitlines() if ln.startswith("vqa-eval qwen2_5_vl:")]
    assert [ln.split()[2] for ln in lines] == ["0/3", "1/3", "2/3", "3/3"], text
    assert all("questions [" in ln and "<" in ln for ln in lines)  # elapsed<remaining: the ETA


def test_the_vqa_stage_finds_a_plugin_generator_without_naming_the_benchmark(tmp_path):
    """``generate: metaworld`` reaches the Meta-World plug-in's generator through the plug-in registry: the
    stage's split equals the plug-in module's own, the schema's enum lists exactly the generators, and no
    module of the VQA stage names a benchmark kind."""
    import ast

    import yaml

    from vlm4vla_core import benchmarks
    from vlm4vla_core.benchmarks.metaworld.vqa import generate
    from vlm4vla_core.vqa.generate import generators, write_set

    assert benchmarks.vqa_generators() == {"metaworld": benchmarks.get("metaworld")}
    root = Path(__file__).resolve().parents[1]
    schema = yaml.safe_load((root / "vlm4vla_core" / "schemas" / "config.schema.yaml").read_text())
    assert sorted(schema["properties"]["vqa_sets"]["additionalProperties"]["properties"]["generate"]["enum"]) == \
        sorted(generators())
    kinds = set(benchmarks.registry())
    for path in sorted((root / "vlm4vla_core" / "vqa").glob("*.py")):
        named = {n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)
                 and isinstance(n.value, str) and n.value in kinds}
        assert not named, f"{path.name} names the benchmark kinds {sorted(named)}"

    bench = dict(kind="metaworld", tasks=TASKS[:1], image_size=SIZE, camera="corner4", max_steps=30)
    vqa_set = dict(generate="metaworld", benchmark="mw", train_episodes_per_task=1, heldout_episodes_per_task=1,
                   frames_per_episode=1)
    counts = write_set(Study.from_dict({"benchmarks": {"mw": bench}, "vqa_sets": {"mwq": vqa_set}}), "mwq", tmp_path / "stage")
    assert counts["train"] == generate(TASKS[:1], tmp_path / "direct", "train", 1, 1, SIZE, "corner4", 30) > 0
    assert set(counts) == {"train", "heldout"}
    assert (tmp_path / "stage" / "train" / "data.json").read_text() == \
        (tmp_path / "direct" / "train" / "data.json").read_text()
    shapes = dict(generate="shapes", train_scenes=2, heldout_scenes=1, image_size=32, questions_per_scene=1)
    counts = write_set(Study.from_dict({"benchmarks": {}, "vqa_sets": {"s": shapes}}), "s", tmp_path / "shapes")
    from vlm4vla_core.vqa import shapes as shapes_corpus

    assert counts["train"] == shapes_corpus.generate(tmp_path / "shapes_direct", "train", 2, 32, 1) > 0
    assert (tmp_path / "shapes" / "train" / "data.json").read_text() == \
        (tmp_path / "shapes_direct" / "train" / "data.json").read_text()
    assert counts["heldout"] > 0
    with pytest.raises(ValueError, match="generates no VQA sets"):
        benchmarks.get("calvin").write_vqa_split("metaworld", {}, vqa_set, tmp_path / "x", "train")

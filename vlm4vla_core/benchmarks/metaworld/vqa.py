"""Embodied VQA from Meta-World scenes, every answer read from the simulator state.

A scene is a frame of a scripted-expert episode (``(task, episode seed, step)``); its questions:

- ``task``: which task is shown (multiple choice over the set's tasks, answered with a letter);
- ``state``: is the task's object in its goal state (drawer open, window open, button pressed):
  the object's displacement from its initial position as a fraction of the expert's full
  displacement, "yes" above 2/3, "no" below 1/3 (frames in between are not asked about);
- ``relation``: is the gripper left or right of the object in the image (the projections of the
  end-effector and the object position through the camera; asked when they differ by >= 6% of the width).
  Half the scenes (by the parity of seed + step) ask it the other way round, "is the object left or
  right of the gripper?", so that both answers occur whichever side the camera usually sees the
  gripper on (with the corner camera it is mostly left of the object);
- ``point``: where the gripper is, as "(x, y)" in percent of the image width and height from the
  top-left corner (scored within ``POINT_TOLERANCE`` = 8 units).

Training scenes come from demonstration seeds, held-out scenes from evaluation seeds
(``env.demo_seeds`` / ``env.eval_seeds``), so the two splits never share a scene. Each split is a
folder ``<split>/data.json`` (the LLaVA conversation form, ``vlm4vla_core.vqa.sets``) with PNG frames
under ``<split>/images/``; the simulator facts behind every answer are kept in its ``state`` field.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

OBJECTS = {  # task -> (object noun, goal-state adjective)
    "drawer-open-v3": ("drawer", "open"), "drawer-close-v3": ("drawer", "closed"),
    "window-open-v3": ("window", "open"), "window-close-v3": ("window", "closed"),
    "door-open-v3": ("door", "open"), "door-close-v3": ("door", "closed"),
}
POINT_TOLERANCE = 8.0
RELATION_MARGIN = 0.06
LETTERS = "ABCDEFGHIJ"


def object_words(task: str) -> tuple[str, str]:
    if task in OBJECTS:
        return OBJECTS[task]
    if task.startswith("button-press"):
        return "button", "pressed"
    noun = task.rsplit("-v", 1)[0].split("-")[0]
    return noun, "done"


def task_phrase(task: str) -> str:
    from vlm4vla_core.benchmarks.metaworld.instructions import instruction

    return instruction(task, 0)


def project(env, point: np.ndarray) -> tuple[float, float]:
    """(u, v) of a world point in the env's camera image, in [0, 1] from the top-left corner."""
    import mujoco

    model, data = env._env.model, env._env.data
    cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, env.camera)
    rot = data.cam_xmat[cam].reshape(3, 3)
    d = rot.T @ (np.asarray(point, dtype=np.float64) - data.cam_xpos[cam])  # camera frame: x right, y up, -z forward
    f = 0.5 / np.tan(np.deg2rad(model.cam_fovy[cam]) / 2)
    return float(0.5 + f * d[0] / -d[2]), float(0.5 - f * d[1] / -d[2])


def scene_facts(env, progress: float) -> dict:
    """The simulator facts of the current frame that the answers are read from."""
    obs = env.state
    hand, obj = obs[0:3], obs[4:7]
    hu, hv = project(env, hand)
    ou, ov = project(env, obj)
    return dict(task=env.task, hand=[round(float(x), 4) for x in hand], object=[round(float(x), 4) for x in obj],
                hand_uv=[round(hu, 4), round(hv, 4)], object_uv=[round(ou, 4), round(ov, 4)],
                progress=round(float(progress), 4), step=env.steps, seed=env.episode_seed)


def questions(facts: dict, tasks: list[str]) -> list[dict]:
    """The questions of one scene with their answers and scoring rules (only those the state decides)."""
    out = []
    choices = {LETTERS[i]: task_phrase(t) for i, t in enumerate(tasks)}
    listing = " ".join(f"{k}. {v}" for k, v in choices.items())
    out.append(dict(type="task", rule="multiple_choice", choices=choices,
                    question=f"Which task is the robot doing? {listing} Answer with the letter.",
                    answer=LETTERS[tasks.index(facts["task"])]))
    noun, adjective = object_words(facts["task"])
    if facts["progress"] >= 2 / 3 or facts["progress"] <= 1 / 3:
        out.append(dict(type="state", rule="exact", question=f"Is the {noun} {adjective}? Answer yes or no.",
                        answer="yes" if facts["progress"] >= 2 / 3 else "no"))
    du = facts["hand_uv"][0] - facts["object_uv"][0]
    if abs(du) >= RELATION_MARGIN:
        gripper_first = (facts["seed"] + facts["step"]) % 2 == 0
        subject, other = ("gripper", noun) if gripper_first else (noun, "gripper")
        out.append(dict(type="relation", rule="exact", subject="gripper" if gripper_first else "object",
                        question=f"Is the {subject} left or right of the {other}? Answer left or right.",
                        answer="left" if (du < 0) == gripper_first else "right"))
    u, v = facts["hand_uv"]
    if 0 <= u <= 1 and 0 <= v <= 1:
        out.append(dict(type="point", rule="point", tolerance=POINT_TOLERANCE,
                        question="Point to the gripper. Answer with (x, y) in percent of the image.",
                        answer=f"({round(100 * u)}, {round(100 * v)})"))
    return out


def episode_scenes(env, seed: int, frames_per_episode: int, rng: np.random.Generator):
    """Frames of one expert episode at random steps, each with its facts: yields (image, facts)."""
    env.reset(seed)
    start = env.state[4:7].copy()
    states = []
    while not env.success and env.steps < env.max_steps:
        states.append(env.steps)
        env.step(env.expert_action())
    end = env.state[4:7].copy()
    travel = float(np.linalg.norm(end - start)) or 1.0
    picks = sorted(rng.choice(len(states), size=min(frames_per_episode, len(states)), replace=False))
    for i in picks:
        env.reset(seed)
        for _ in range(states[i]):  # replay: the expert is deterministic given the seed
            env.step(env.expert_action())
        progress = float(np.linalg.norm(env.state[4:7] - start)) / travel
        yield env.render(), scene_facts(env, min(progress, 1.0))


def generate(tasks: list[str], out: Path, split: str, episodes_per_task: int, frames_per_episode: int = 2,
             image_size: int = 112, camera: str = "corner4", max_steps: int = 150, seed_offset: int = 0) -> int:
    """Write one split (``train``: demonstration seeds, ``heldout``: evaluation seeds). Returns the
    number of questions."""
    from PIL import Image

    from vlm4vla_core.benchmarks.metaworld.env import MetaWorldEnv, demo_seeds, eval_seeds
    from vlm4vla_core.io import atomic_dir
    from vlm4vla_core.progress import progress

    if split not in ("train", "heldout"):
        raise ValueError(f"split must be train or heldout, got {split!r}")
    seeds = (demo_seeds if split == "train" else eval_seeds)(episodes_per_task, seed_offset)
    records = []
    with atomic_dir(Path(out) / split) as tmp:
        (tmp / "images").mkdir()
        bar = progress(total=len(tasks) * len(seeds), desc=f"vqa data {split}", unit="episodes")
        for task in tasks:
            env = MetaWorldEnv(task, image_size, camera, max_steps)
            for seed in seeds:
                bar.update(1)
                rng = np.random.default_rng([seed, len(task)])
                for k, (image, facts) in enumerate(episode_scenes(env, seed, frames_per_episode, rng)):
                    name = f"images/{task}_{seed}_{facts['step']}.png"
                    Image.fromarray(image).save(tmp / name)
                    for q in questions(facts, tasks):
                        rec = dict(id=f"{task}/{seed}/{facts['step']}/{q['type']}", image=name,
                                   conversations=[{"from": "human", "value": "<image>\n" + q["question"]},
                                                  {"from": "gpt", "value": q["answer"]}],
                                   type=q["type"], rule=q["rule"], state=facts)
                        for key in ("choices", "tolerance", "subject"):
                            if key in q:
                                rec[key] = q[key]
                        records.append(rec)
            env.close()
        bar.close()
        (tmp / "data.json").write_text(json.dumps(records, indent=1))
    return len(records)


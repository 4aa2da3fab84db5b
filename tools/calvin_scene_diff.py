"""Compare the dataset's scene D configuration with the one composed from calvin_env's conf.

    .venv-calvin/bin/python tools/calvin_scene_diff.py TASK_ABC_D/validation [--json diff.json]

The evaluator builds scene D from ``<task_ABC_D>/validation/.hydra/merged_config.yaml`` when the
dataset is there (the official way) and from calvin_env's ``config_data_collection`` with
``cameras=static_and_gripper`` otherwise. This prints every leaf of the parts that build the env
(``env``, ``robot``, ``scene``, ``cameras.static``) that differs between the two, after resolving
interpolations; exit status 0 when they agree, 1 when some value differs. Keys of the data-collection
setup that do not reach the env (recorder, VR input, paths, hydra) are not compared. Run it with the
CALVIN environment's Python, outside any folder named calvin_env.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PARTS = ("env", "robot", "scene", "cameras.static")
IGNORED = {"env.use_vr", "env.show_gui", "env.use_scene_info", "env.cameras", "env.robot_cfg", "env.scene_cfg"}


def leaves(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def part(scene: dict, dotted: str):
    for key in dotted.split("."):
        scene = scene.get(key, {}) if isinstance(scene, dict) else {}
    return scene


def diff(a: dict, b: dict) -> list[dict]:
    rows = []
    for name in PARTS:
        la, lb = leaves(part(a, name), name), leaves(part(b, name), name)
        for key in sorted(set(la) | set(lb)):
            if key in IGNORED or any(key.startswith(i + ".") for i in IGNORED):
                continue
            if la.get(key, "<missing>") != lb.get(key, "<missing>"):
                rows.append({"key": key, "dataset": la.get(key, "<missing>"), "calvin_env": lb.get(key, "<missing>")})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("validation", type=Path, help="task_ABC_D/validation (holds .hydra/merged_config.yaml)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    from omegaconf import OmegaConf

    from vlm4vla_core.benchmarks.calvin.sim import composed_config, dataset_config

    dataset = OmegaConf.to_container(dataset_config(args.validation), resolve=True)
    composed = OmegaConf.to_container(composed_config(), resolve=True)
    rows = diff(dataset, composed)
    for r in rows:
        print(f"{r['key']}: dataset {r['dataset']!r} | calvin_env conf {r['calvin_env']!r}")
    print(f"{len(rows)} differing value(s) in {', '.join(PARTS)}" if rows else f"agree on {', '.join(PARTS)}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    return 1 if rows else 0


if __name__ == "__main__":
    sys.exit(main())

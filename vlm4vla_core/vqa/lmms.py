"""Standard VQA benchmarks through lmms-eval, called as a library in its own environment.

``python -m vlm4vla_core vqa-lmms --family F --source CKPT --task mmmu_val [--data-path LOCAL]
[--limit N] --set-name NAME --out R.json`` runs one lmms-eval task on a checkpoint (hub id or local
folder) on the CPU, or on the GPU with ``--device cuda``, and writes the same JSON as ``vqa-eval``
(``score`` in percent, ``n``, ``set``, a ``source`` starting "measured: ..."), so the aggregate
stage regresses control on it unchanged; the raw lmms-eval results are kept under ``lmms_eval``.

It runs in the lmms-eval environment (``make lmms-env``: ``envs/setup-lmms-venv.sh``, or
``envs/lmms-eval.yaml`` on a cluster), never in the project's core one: lmms-eval needs
torchvision. The project family picks lmms-eval's model backend (``BACKENDS``); a family without
one is scored by the project's own scorer (``vqa-eval``, a set with ``heldout_path``).

``--data-path`` replaces the task's hub dataset by a local copy, in one of three forms: a folder
written by ``datasets.Dataset(Dict).save_to_disk``, a folder of the hub repository's files (its
parquet files, as ``huggingface-cli download --repo-type dataset`` writes them), or one parquet
file of the task's evaluation split. The task's own prompts, answer extraction and metric are used
unchanged: only where the rows come from differs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

#: lmms-eval's release the environment pins (envs/lmms-eval-requirements.txt)
LMMS_EVAL_VERSION = "0.7.3"
FRAMEWORK = "lmms-eval"

#: project family -> lmms-eval model backend (its chat-template model class)
BACKENDS = {
    "qwen2_5_vl": "qwen2_5_vl",
    "qwen3_vl": "qwen3_vl",
    "qwen3_vl_moe": "qwen3_vl",  # the backend loads the MoE class when the checkpoint's name has "A<n>B"
    "internvl": "internvl_hf",  # the transformers-native InternVL checkpoints (..._HF)
}


class LmmsError(Exception):
    """A run that cannot start: the message says why and what to do."""


def backend_of(family: str) -> str:
    """lmms-eval's model backend of a project family; LmmsError names a family that has none."""
    from vlm4vla_core.backbones import FAMILY_NAMES

    if family in BACKENDS:
        return BACKENDS[family]
    if family not in FAMILY_NAMES:
        raise LmmsError(f"unknown backbone family {family!r} (known: {', '.join(sorted(FAMILY_NAMES))})")
    raise LmmsError(f"family {family!r} has no lmms-eval {LMMS_EVAL_VERSION} model backend here (covered: "
                    f"{', '.join(sorted(BACKENDS))}); the project's own scorer covers it: give the set a local copy "
                    f"of the benchmark as heldout_path (vqa-eval stage)")


def uses_lmms(entry: dict | None) -> bool:
    """Whether a vqa_sets entry is measured through lmms-eval."""
    return (entry or {}).get("framework") == FRAMEWORK


def measures(entry: dict | None, family: str) -> bool:
    """Whether a vqa_sets entry measures a backbone of ``family``: every family for the project's scorer,
    the families with an lmms-eval backend for a framework lmms-eval set."""
    return not uses_lmms(entry) or family in BACKENDS


def stage_options(entry: dict) -> list[str]:
    """The vqa-lmms options a vqa_sets entry sets (task, local data, limit)."""
    out = ["--task", str(entry["task"])]
    if entry.get("data_path"):
        out += ["--data-path", str(entry["data_path"])]
    if entry.get("limit"):
        out += ["--limit", str(entry["limit"])]
    return out


def dataset_override(data_path: str | Path, split: str) -> dict:
    """The task-config keys that make a task read ``data_path`` instead of its hub dataset."""
    path = Path(data_path).expanduser().resolve()
    if path.is_file():
        if path.suffix != ".parquet":
            raise LmmsError(f"{data_path}: a local file must be a parquet file of the task's {split!r} split")
        return dict(dataset_path="parquet", dataset_name=None, dataset_kwargs={"data_files": {split: str(path)}})
    if not path.is_dir():
        raise LmmsError(f"{data_path}: no such file or folder (the local copy of the task's dataset)")
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():  # save_to_disk
        return dict(dataset_path=str(path), dataset_kwargs={"load_from_disk": True})
    if not any(path.rglob("*.parquet")) and not any(path.rglob("*.arrow")):
        raise LmmsError(f"{data_path}: neither a save_to_disk folder nor a copy of the hub repository (no parquet "
                        "or arrow files)")
    return dict(dataset_path=str(path), dataset_kwargs={})


def local_task_dir(task: str, yaml_path: str, override: dict, out: Path) -> Path:
    """A task folder for lmms-eval's TaskManager: the task under its own name, its YAML included
    whole, with the dataset keys of ``override``."""
    import yaml

    config = {"task": task, "include": str(Path(yaml_path).resolve()), **override}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{task}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def _task_split(manager, task: str) -> tuple[str, str]:
    """(YAML path, evaluation split) of a registered task; LmmsError for a group or an unknown name."""
    from lmms_eval import utils

    entry = manager.task_index.get(task)
    if entry is None:
        raise LmmsError(f"lmms-eval has no task {task!r}")
    if entry["type"] != "task":
        raise LmmsError(f"{task!r} is an lmms-eval {entry['type']}, not a single task: name one of its tasks "
                        "(e.g. mmmu_val) so that one local dataset can replace its data")
    task_config = utils.load_yaml_config(entry["yaml_path"], mode="simple")
    split = task_config.get("test_split") or task_config.get("validation_split")
    if not split:
        raise LmmsError(f"task {task!r} names no test_split or validation_split")
    return entry["yaml_path"], split


def primary_metric(results: dict, task: str) -> tuple[str, str]:
    """(metric, results key) of a task's first metric, e.g. ("mmmu_acc", "mmmu_acc,none")."""
    metrics = [m["metric"] for m in results["configs"][task].get("metric_list", [])]
    scores = {k: v for k, v in results["results"][task].items() if "," in k and "_stderr" not in k}
    for metric in metrics:
        for key in scores:
            if key.split(",")[0] == metric:
                return metric, key
    raise LmmsError(f"task {task!r}: no score among its results {sorted(results['results'][task])}")


def summarise(results: dict, task: str, name: str, source: str, family: str, backend: str, data_path,
              elapsed_s: float) -> dict:
    """The vqa-eval JSON of one lmms-eval run: percent score, n, set, source; the raw results kept."""
    metric, key = primary_metric(results, task)
    value = results["results"][task][key]
    if not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise LmmsError(f"task {task!r}: metric {metric} = {value!r} is not a fraction in [0, 1], so it cannot be "
                        "read as a percentage of questions answered correctly")
    predictions = [dict(doc_id=s.get("doc_id"), target=s.get("target"),
                        prediction=(s.get("filtered_resps") or [None])[0], **{metric: s.get(metric)})
                   for s in (results.get("samples") or {}).get(task, [])]
    raw = {k: results[k] for k in ("results", "n-samples", "versions", "n-shot", "higher_is_better", "config")
           if k in results}
    data = str(data_path) if data_path else results["configs"][task].get("dataset_path")
    return dict(
        score=round(100 * float(value), 2),
        n=int(results["n-samples"][task]["effective"]),
        set=name,
        task=task,
        metric=metric,
        data=data,
        checkpoint=str(source),
        family=family,
        backend=backend,
        framework=f"{FRAMEWORK} {LMMS_EVAL_VERSION}",
        elapsed_s=round(elapsed_s, 1),
        source=f"measured: {name}, {FRAMEWORK} {LMMS_EVAL_VERSION} task {task}, metric {metric} "
               f"(model backend {backend}, the task's own prompt and answer extraction)",
        predictions=predictions,
        lmms_eval=json.loads(json.dumps(raw, default=repr)),
    )


def run(family: str, source: str, task: str, name: str, data_path=None, limit: int | None = None,
        device: str = "cpu") -> dict:
    """Evaluate ``source`` on lmms-eval ``task``; the vqa-eval JSON as a dict."""
    backend = backend_of(family)
    if family == "qwen3_vl_moe":
        if not re.search(r"A\d+B", str(source)):
            raise LmmsError(f"{source}: lmms-eval's qwen3_vl backend loads the MoE model class only when the "
                            "checkpoint's name has its active size (e.g. Qwen3-VL-30B-A3B-Instruct); name the folder so")
    try:
        import lmms_eval  # noqa: F401
    except ImportError:
        raise LmmsError(f"lmms-eval is not installed in {sys.executable}: run `make lmms-env` (a .venv-lmms) and "
                        "run this stage with its Python (the set's `python:` key)") from None
    from importlib.metadata import version

    if version("lmms-eval") != LMMS_EVAL_VERSION:
        raise LmmsError(f"lmms-eval {version('lmms-eval')} is installed in {sys.executable}; this stage is pinned to "
                        f"{LMMS_EVAL_VERSION} (envs/lmms-eval-requirements.txt)")
    from lmms_eval import evaluator
    from lmms_eval.models import get_model
    from lmms_eval.tasks import TaskManager

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="vlm4vla-lmms-") as tmp:
        if data_path:
            yaml_path, split = _task_split(TaskManager("WARNING", model_name=backend), task)
            folder = local_task_dir(task, yaml_path, dataset_override(data_path, split), Path(tmp) / "tasks")
            manager = TaskManager("WARNING", include_path=str(folder), include_defaults=False, model_name=backend)
        else:
            manager = TaskManager("WARNING", model_name=backend)
            if task not in manager.task_index:
                raise LmmsError(f"lmms-eval has no task {task!r}")
        lm = get_model(backend)(pretrained=str(source), device=device, device_map=device, batch_size=1)
        results = evaluator.simple_evaluate(model=lm, tasks=[task], task_manager=manager, limit=limit,
                                            batch_size=1, device=device, log_samples=True, bootstrap_iters=0,
                                            verbosity="WARNING")
    if results is None:
        raise LmmsError("lmms-eval returned no results (not the main process)")
    return summarise(results, task, name, source, family, backend, data_path, time.time() - started)


def main(argv: list[str] | None = None) -> int:
    from vlm4vla_core.io import write_json

    p = argparse.ArgumentParser(prog="python -m vlm4vla_core vqa-lmms", description=__doc__.splitlines()[0])
    p.add_argument("--family", required=True, help=f"a project family with an lmms-eval backend: {', '.join(BACKENDS)}")
    p.add_argument("--source", required=True, help="checkpoint folder or hub id")
    p.add_argument("--task", required=True, help="an lmms-eval task, e.g. mmmu_val")
    p.add_argument("--data-path", help="a local copy of the task's dataset (save_to_disk folder, hub repository "
                   "files, or a parquet file of its split); default: the task's hub dataset")
    p.add_argument("--set-name", required=True, help="the set's name in the study config (for the label)")
    p.add_argument("--limit", type=int, help="only the first N questions")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--num-threads", type=int, default=0)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    if args.data_path:  # the rows come from disk: datasets never asks the hub
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if args.num_threads:
        import torch

        torch.set_num_threads(args.num_threads)
    try:
        result = run(args.family, args.source, args.task, args.set_name, args.data_path, args.limit, args.device)
    except LmmsError as err:
        print(f"vqa-lmms: {err}", file=sys.stderr)
        return 2
    write_json(args.out, result)
    print(f"{args.out}: {result['score']}% of {result['n']} questions ({result['task']}, {result['metric']}, "
          f"{result['framework']}, {result['elapsed_s']} s)", flush=True)
    return 0

"""``python -m vlm4vla_core architectures``: every image-text-to-text architecture through ``family: generic``.

For each architecture the installed transformers registers for
``AutoModelForImageTextToText``: the refusal check on its default config (meta
device, no weights); then a tiny checkpoint (``zoo.make_tiny_any``), the backbone
report, two training steps of the policy and a predicted action chunk, with the
image positions the adapter reports checked against the mask the model itself
builds to place the image features (``get_placeholder_mask``), where it has one.

Each row: ``works``, ``refused`` (the adapter's reason, before any weight) or
``fails`` (the first error of the tiny build or run; nothing was skipped silently).
Writes a JSON file (``{"transformers": version, "architectures": rows}``: the table holds for
that transformers version) and a Markdown table: into the table markers of the documentation page
``--docs`` names (docs/architectures.md), or else next to the JSON file (.md). ``--compare TABLE`` also prints the drift from an
earlier table: the architectures added and removed, and those whose status changed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from vlm4vla_core.io import write_json, write_text

INSTRUCTIONS = ["push the button", "open the top drawer"]


def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(n)]


def model_mask_agrees(policy, enc: dict) -> bool | None:
    """Whether the adapter's image positions are where the model puts the image features (None: the model
    builds no placeholder mask to compare with)."""
    base = policy.backbone
    original = getattr(base, "get_placeholder_mask", None)
    if original is None:
        return None
    seen = []

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append(out[0] if isinstance(out, tuple) else out)
        return out

    base.get_placeholder_mask = spy
    try:
        with torch.no_grad():
            policy({k: v for k, v in enc.items()})
    finally:
        del base.get_placeholder_mask
    if not seen:
        return None
    mask = seen[0]
    mask = mask.reshape(mask.shape[0], mask.shape[1], -1)[..., 0].bool()
    return bool(torch.equal(mask, policy.adapter.image_positions(policy.processor, enc)))


def run_one(model_type: str, root: Path, steps: int = 2, raise_errors: bool = False) -> dict:
    """One architecture end to end; the row of the table (``raise_errors``: raise the first error instead)."""
    from vlm4vla_core.backbones import get_adapter
    from vlm4vla_core.backbones.base import UnsupportedBackbone
    from vlm4vla_core.backbones.generic import config_problems
    from vlm4vla_core.backbones.card import backbone_report
    from vlm4vla_core.backbones.zoo import make_tiny_any, tiny_config
    from vlm4vla_core.policy import PolicyConfig, VLAPolicy

    row = dict(model_type=model_type)
    started = time.time()
    stage = "refusal check"
    try:
        # the architecture's own config classes, shrunk: some defaults only build once a hub config fills them
        config = tiny_config(model_type)
        problems = config_problems(config)
        if problems:
            return dict(row, status="refused", reason="; ".join(problems))
        stage = "tiny checkpoint"
        folder = root / model_type
        make_tiny_any(model_type, folder)
        stage = "load"
        adapter = get_adapter("generic")
        vlm, processor = adapter.load(folder)
        row["architecture"] = type(vlm).__name__
        stage = "backbone report"
        report = backbone_report(adapter, vlm, processor)
        row.update(image_tokens=report["image_tokens_per_frame"], prompt_length=report["prompt_length"])
        if not report["image_tokens_per_frame"]:
            raise ValueError("the encoded prompt holds no image token")
        stage = "training"
        cfg = PolicyConfig(family="generic", source=str(folder), chunk=3, action_dim=4, head_hidden=32,
                           init_seed=1, arm_low=(-1.0,) * 3, arm_high=(1.0,) * 3)
        torch.manual_seed(0)
        policy = VLAPolicy(cfg, vlm, processor)
        enc = policy.encode(_frames(2), INSTRUCTIONS)
        row["model_mask_agrees"] = model_mask_agrees(policy.eval(), enc)
        if row["model_mask_agrees"] is False:
            raise ValueError("the adapter's image positions differ from the model's placeholder mask")
        actions = torch.rand(2, 3, 4) * 2 - 1
        opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-3)
        policy.train()
        losses = []
        for _ in range(steps):
            loss, _ = policy.loss(enc, actions)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
        if not all(np.isfinite(losses)):
            raise ValueError(f"non-finite loss {losses}")
        stage = "predict"
        chunk = policy.eval().predict(_frames(1, seed=1), INSTRUCTIONS[:1])
        if chunk.shape != (1, 3, 4) or not np.isfinite(chunk).all():
            raise ValueError(f"bad action chunk of shape {chunk.shape}")
        return dict(row, status="works", seconds=round(time.time() - started, 1))
    except UnsupportedBackbone as err:
        if raise_errors:
            raise
        return dict(row, status="refused" if stage == "refusal check" else "fails", stage=stage, reason=str(err))
    except Exception as err:  # noqa: BLE001 -- the table records every failure with its stage
        if raise_errors:
            raise
        return dict(row, status="fails", stage=stage, reason=_first_line(err))


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:300]


def load_table(path: str | Path) -> tuple[str, list[dict]]:
    """(transformers version, rows) of a table this module wrote."""
    from vlm4vla_core.io import read_json

    table = read_json(path, "architecture table")
    if not isinstance(table, dict) or not isinstance(table.get("transformers"), str) \
            or not isinstance(table.get("architectures"), list):
        raise ValueError(f"{path}: not an architecture table ({{'transformers': version, 'architectures': rows}}); "
                         "write it with python -m vlm4vla_core architectures --out PATH")
    return table["transformers"], table["architectures"]


def drift(old: list[dict], new: list[dict]) -> dict:
    """What changed from the rows ``old`` to ``new``: architectures added (with their status), removed,
    and those whose status changed (old, new)."""
    before = {r["model_type"]: r["status"] for r in old}
    after = {r["model_type"]: r["status"] for r in new}
    return {"added": {m: after[m] for m in sorted(set(after) - set(before))},
            "removed": sorted(set(before) - set(after)),
            "changed": {m: (before[m], after[m]) for m in sorted(set(before) & set(after)) if before[m] != after[m]}}


def drift_text(old_version: str, new_version: str, changes: dict) -> str:
    lines = [f"architecture drift, transformers {old_version} (table) -> {new_version} (installed): "
             f"{len(changes['added'])} added, {len(changes['removed'])} removed, {len(changes['changed'])} changed status"]
    lines += [f"  added    {m:28s} {status}" for m, status in changes["added"].items()]
    lines += [f"  removed  {m}" for m in changes["removed"]]
    lines += [f"  changed  {m:28s} {a} -> {b}" for m, (a, b) in changes["changed"].items()]
    return "\n".join(lines)


def markdown(rows: list[dict], version: str) -> str:
    counts = {s: sum(r["status"] == s for r in rows) for s in ("works", "refused", "fails")}
    lines = [f"**{len(rows)} architectures of transformers {version}: {counts['works']} work, "
             f"{counts['refused']} refused, {counts['fails']} fail.**", "",
             "| model_type | status | image tokens | why (refused / fails) |", "|---|---|---|---|"]
    for r in rows:
        why = r.get("reason", "")
        if r["status"] == "fails":
            why = f"{r['stage']}: {why}"
        why = why.replace("|", "\\|").replace(str(Path(tempfile.gettempdir())), "<tmp>")
        lines.append(f"| `{r['model_type']}` | {r['status']} | {r.get('image_tokens') or ''} | {why[:220]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlm4vla_core architectures", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="model_types to run (default: every registered one)")
    parser.add_argument("--raise", dest="raise_errors", action="store_true",
                        help="stop at the first error with its traceback (debugging one architecture)")
    parser.add_argument("--docs", type=Path, help="also replace the table between the architecture-table "
                        "markers of this documentation page (docs/architectures.md)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file; without --docs the Markdown table goes next to it (.md)")
    parser.add_argument("--compare", type=Path, help="an earlier table: print the architectures added, removed "
                        "and changed since (e.g. docs/architectures.json)")
    args = parser.parse_args(argv)
    if args.docs is not None:
        check_docs_page(args.docs)
    elif (beside := args.out.with_suffix(".md")).is_file() and START in beside.read_text():
        raise SystemExit(f"architectures: {beside} is a documentation page; pass --docs {beside} to write its table")
    import transformers

    from vlm4vla_core.backbones.zoo import architectures

    old = load_table(args.compare) if args.compare else None

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    todo = args.only or list(architectures())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model_type in todo:
            row = run_one(model_type, Path(tmp), raise_errors=args.raise_errors)
            rows.append(row)
            print(f"{model_type:28s} {row['status']:8s} {row.get('reason', '')[:120]}", flush=True)
    version = transformers.__version__
    write_json(args.out, {"transformers": version, "architectures": rows})
    if not args.docs:
        write_text(args.out.with_suffix(".md"), markdown(rows, version))
    else:
        write_text(args.docs, page_with_table(args.docs.read_text(), markdown(rows, version)))
    if old is not None:  # with --only: the drift of those architectures alone
        before = [r for r in old[1] if not args.only or r["model_type"] in todo]
        print(drift_text(old[0], version, drift(before, rows)))
    return 0


START, END = "<!-- architectures:start -->", "<!-- architectures:end -->"


def check_docs_page(page: Path) -> None:
    """The table goes to a documentation page under docs/ that has the markers, never to the README."""
    if page.name.lower() == "readme.md" or "docs" not in page.resolve().parent.parts:
        raise SystemExit(f"architectures: --docs {page}: the table goes to a page under docs/ "
                         "(docs/architectures.md), not to the README")
    if not page.is_file():
        raise SystemExit(f"architectures: --docs {page}: no such file")
    text = page.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"architectures: --docs {page}: no {START} ... {END} section")


def page_with_table(text: str, table: str) -> str:
    """``text`` with the part between the architecture-table markers replaced by ``table``."""
    if START not in text or END not in text:
        raise ValueError(f"the page has no {START} ... {END} section")
    head, rest = text.split(START, 1)
    return f"{head}{START}\n{table}{END}{rest.split(END, 1)[1]}"


if __name__ == "__main__":
    sys.exit(main())

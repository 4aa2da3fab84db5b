"""The VLA policy shared by every backbone family.

    [image tokens][instruction][ActionQuery] -> VLM -> h[ActionQuery] -> MLP -> K x (arm deltas, gripper logit)

The family adapter lays out the prompt and ends every sample with one
placeholder token; a forward hook on the word embeddings swaps that token's
embedding for the learnable ActionQuery vector, so the VLM's own forward (its
attention masks, its rotary or multimodal-rotary positions) runs unchanged over
a sequence that includes the query. The head reads the final hidden state at
the query position.

Actions: the last dimension is the gripper (closed when > 0), the others are
arm deltas. The arm is normalised per dimension as VLM4VLA's code composes it
(``arm_range: official``, docs/fidelity.md): the data's 1st/99th percentiles map to
[-1, 1] (clipped there), that value is clipped to [-arm_norm, arm_norm] (0.65) and
rescaled to [-1, 1], the training label; at evaluation the head's output, clamped to
[-1, 1], goes back through both steps, so executed actions stay inside the middle
``arm_norm`` share of the percentile range. ``arm_range: full`` is the other choice:
the percentile value times ``arm_norm`` is the label, and executed actions span the
whole percentile range.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlm4vla_core.backbones import get_adapter
from vlm4vla_core.config import ABLATIONS
from vlm4vla_core.io import atomic_dir

#: how the arm's percentile value meets the norm range: ``official`` clips it to [-arm_norm, arm_norm] and
#: rescales to [-1, 1] (VLM4VLA's composition); ``full`` scales [-1, 1] into [-arm_norm, arm_norm]
ARM_RANGES = ("official", "full")
SCRATCH_SEED_SALT = 7_919_000
POLICY_FILE, WEIGHTS_FILE = "policy.json", "policy.safetensors"
BACKBONE_DIR = "backbone"  # the backbone's config, tokenizer and processor (its weights are in WEIGHTS_FILE)


@dataclass(frozen=True)
class PolicyConfig:
    family: str
    source: str  # hub id or folder of the backbone checkpoint
    chunk: int  # K action steps per prediction
    action_dim: int  # arm dims + 1 gripper
    image_size: int = 224
    head_hidden: int = 1024
    head_layers: int = 2
    loss: str = "huber"  # or "mse" (the paper's statement)
    gripper_weight: float = 0.01
    arm_norm: float = 0.65
    arm_range: str = "official"
    ablation: str = "full"
    init_seed: int = 0
    # per-dimension 1st/99th percentiles of the arm actions in the training data
    arm_low: tuple[float, ...] = field(default_factory=tuple)
    arm_high: tuple[float, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.ablation not in ABLATIONS:
            raise ValueError(f"ablation: unknown {self.ablation!r} (choose from {', '.join(ABLATIONS)})")
        if self.arm_range not in ARM_RANGES:
            raise ValueError(f"arm_range: unknown {self.arm_range!r} (choose from {', '.join(ARM_RANGES)})")
        if not 0 < self.arm_norm <= 1:
            raise ValueError(f"arm_norm: {self.arm_norm} is not in (0, 1]")
        if self.loss not in ("huber", "mse"):
            raise ValueError(f"loss: unknown {self.loss!r} (choose huber or mse)")
        if len(self.arm_low) != self.action_dim - 1 or len(self.arm_high) != self.action_dim - 1:
            raise ValueError(f"arm_low/arm_high: need {self.action_dim - 1} values each (action_dim - 1)")


def _embedding_std(weight: torch.Tensor) -> float:
    """Standard deviation of the word embeddings, without an fp32 copy of a half-precision matrix."""
    if weight.device.type == "meta" or weight.numel() == 0:  # no values (meta device, or a ZeRO-3 partition)
        return 0.02
    if weight.dtype == torch.float32:
        return float(weight.detach().std())
    w = weight.detach().reshape(-1)
    total = sq = 0.0
    for part in w.split(1 << 22):
        part = part.double()
        total, sq = total + float(part.sum()), sq + float((part * part).sum())
    n = w.numel()
    return float(((sq - total * total / n) / max(n - 1, 1)) ** 0.5)


class VLAPolicy(nn.Module):
    def __init__(self, cfg: PolicyConfig, vlm: nn.Module | None = None, processor=None,
                 dtype: torch.dtype | None = None):
        """``dtype``: the precision the backbone is read in when it is loaded here (from ``cfg.source``);
        training loads it in its own precision, so no fp32 copy of a half-precision model is made."""
        super().__init__()
        self.cfg = cfg
        self.adapter = get_adapter(cfg.family)
        if vlm is None:
            vlm, processor = self.adapter.load(cfg.source, dtype=dtype or torch.float32)
        if processor is not None:
            processor.image_size = cfg.image_size
        if cfg.ablation == "from_scratch":  # same architecture, random initialisation
            # salted: a checkpoint itself drawn with a small seed is not re-drawn
            torch.manual_seed(SCRATCH_SEED_SALT + cfg.init_seed)
            vlm = type(vlm)._from_config(vlm.config, dtype=next(vlm.parameters()).dtype)
        self.processor = processor
        self.backbone = self.adapter.backbone(vlm)
        hidden = self.adapter.hidden_size(vlm)
        embed = self.adapter.input_embeddings(self.backbone)

        gen = torch.Generator().manual_seed(cfg.init_seed)
        std = _embedding_std(embed.weight)
        self.action_query = nn.Parameter(torch.randn(hidden, generator=gen) * std)
        layers, width = [], hidden
        for _ in range(cfg.head_layers - 1):
            layers += [nn.Linear(width, cfg.head_hidden), nn.GELU()]
            width = cfg.head_hidden
        layers.append(nn.Linear(width, cfg.chunk * cfg.action_dim))
        self.head = nn.Sequential(*layers)

        self._query_index: torch.Tensor | None = None
        embed.register_forward_hook(self._insert_query)
        self._freeze(embed)

    # -- ablations -------------------------------------------------------
    def _freeze(self, embed: nn.Embedding) -> None:
        frozen: list[nn.Module] = []
        if self.cfg.ablation == "freeze_vision":
            frozen = self.adapter.vision_modules(self.backbone)
        elif self.cfg.ablation == "freeze_embeddings":
            frozen = [embed]
        for module in frozen:
            module.requires_grad_(False)

    def parameter_counts(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())
        added = self.action_query.numel() + sum(p.numel() for p in self.head.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        backbone = total - added
        return dict(total=total, backbone=backbone, trainable=trainable, added=added, added_share=added / backbone)

    # -- forward ---------------------------------------------------------
    def _insert_query(self, module, args, out):
        if self._query_index is None:
            return out
        mask = torch.zeros(out.shape[:2], dtype=torch.bool, device=out.device)
        mask[torch.arange(out.shape[0], device=out.device), self._query_index] = True
        return torch.where(mask[..., None], self.action_query.to(out.dtype), out)

    def encode(self, images: list[np.ndarray], instructions: list[str]) -> dict[str, torch.Tensor]:
        return self.adapter.encode(self.processor, images, instructions)

    def forward(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns normalised arm actions [B, K, A-1] and gripper logits [B, K]."""
        inputs = dict(inputs)
        query_index = inputs.pop("query_index")
        self._query_index = query_index
        try:
            hidden = self.backbone(**inputs).last_hidden_state
        finally:
            self._query_index = None
        h = hidden[torch.arange(hidden.shape[0], device=hidden.device), query_index]
        out = self.head(h.to(self.head[0].weight.dtype)).view(-1, self.cfg.chunk, self.cfg.action_dim)
        return out[..., :-1], out[..., -1]

    def loss(self, inputs: dict[str, torch.Tensor], actions: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """actions: env-scale [B, K, A]. Arm regression + gripper_weight * gripper BCE."""
        arm, grip = (x.float() for x in self(inputs))  # losses in fp32 under bf16/fp16 training
        arm_t = self.normalize_arm(actions[..., :-1])
        grip_t = (actions[..., -1] > 0).float()
        arm_loss = F.huber_loss(arm, arm_t) if self.cfg.loss == "huber" else F.mse_loss(arm, arm_t)
        grip_loss = F.binary_cross_entropy_with_logits(grip, grip_t)
        total = arm_loss + self.cfg.gripper_weight * grip_loss
        grip_acc = ((grip > 0) == (grip_t > 0.5)).float().mean()
        return total, dict(loss=total.item(), arm=arm_loss.item(), gripper=grip_loss.item(), gripper_acc=grip_acc.item())

    # -- action scaling --------------------------------------------------
    def _bounds(self, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = torch.tensor(self.cfg.arm_low, dtype=torch.float32, device=ref.device)
        high = torch.tensor(self.cfg.arm_high, dtype=torch.float32, device=ref.device)
        return low, torch.maximum(high, low + 1e-6)

    def normalize_arm(self, arm: torch.Tensor) -> torch.Tensor:
        low, high = self._bounds(arm)
        return arm_to_label(arm.float(), low, high, self.cfg.arm_norm, self.cfg.arm_range)

    def denormalize_arm(self, arm: torch.Tensor) -> torch.Tensor:
        low, high = self._bounds(arm)
        return label_to_arm(arm.float(), low, high, self.cfg.arm_norm, self.cfg.arm_range)

    @torch.no_grad()
    def predict(self, images: list[np.ndarray], instructions: list[str]) -> np.ndarray:
        """Env-scale action chunks [B, K, A]; gripper as -1 (open) / +1 (closed)."""
        device = self.action_query.device
        inputs = {k: v.to(device) for k, v in self.encode(list(images), list(instructions)).items()}
        arm, grip = self(inputs)
        grip = torch.where(grip > 0, 1.0, -1.0)
        return torch.cat([self.denormalize_arm(arm), grip[..., None]], dim=-1).cpu().numpy()


# -- arm normalisation -------------------------------------------------------
def arm_to_label(arm, low, high, norm: float, arm_range: str):
    """Env-scale arm actions -> training labels: the percentile normalisation (``low``/``high`` -> [-1, 1],
    clipped there), then ``official``: clip to [-norm, norm] and rescale to [-1, 1]; ``full``: times ``norm``.
    Works on torch tensors and numpy arrays alike."""
    lib = torch if isinstance(arm, torch.Tensor) else np
    unit = lib.clip(2 * (arm - low) / (high - low) - 1, -1, 1)
    if arm_range == "official":
        return lib.clip(unit, -norm, norm) / norm
    return unit * norm


def label_to_arm(out, low, high, norm: float, arm_range: str):
    """The head's arm output -> env-scale actions, the inverse of ``arm_to_label`` on its range: the output is
    clamped to the label range first (the official head ends in a tanh), so executed actions lie in
    ``low + (1 -+ norm) / 2 * (high - low)`` (``official``) or in [low, high] (``full``)."""
    lib = torch if isinstance(out, torch.Tensor) else np
    if arm_range == "official":
        unit = lib.clip(out, -1, 1) * norm  # [-1, 1] -> [norm_min, norm_max]
    else:
        unit = lib.clip(out / norm, -1, 1)
    return (unit + 1) / 2 * (high - low) + low


# -- checkpoints -------------------------------------------------------------
def save_policy(policy: VLAPolicy, out: str | Path, state_dict: dict | None = None, extra: dict | None = None) -> None:
    """Write policy.json + policy.safetensors into ``out`` atomically (temp folder, then rename)."""
    from safetensors.torch import save_file

    state = state_dict if state_dict is not None else policy.state_dict()
    with atomic_dir(Path(out)) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, tmp / WEIGHTS_FILE)
        meta = dict(config=asdict(policy.cfg), parameters=policy.parameter_counts(), **(extra or {}))
        (tmp / POLICY_FILE).write_text(json.dumps(meta, indent=2))
        save_backbone_files(policy, tmp / BACKBONE_DIR)


def save_backbone_files(policy: VLAPolicy, folder: Path) -> None:
    """The backbone's config.json and its tokenizer / processor files (no weights): what ``load_policy``
    needs besides the policy's own weights, so that the folder does not depend on the backbone's source."""
    folder.mkdir(parents=True, exist_ok=True)
    policy.backbone.config.save_pretrained(folder)
    proc = policy.processor
    full = (proc.extra or {}).get("processor") if proc is not None else None
    if full is not None:
        full.save_pretrained(folder)
    elif proc is not None:
        proc.tokenizer.save_pretrained(folder)
        proc.image_processor.save_pretrained(folder)


def _backbone_from_folder(cfg: PolicyConfig, folder: Path, dtype: torch.dtype):
    """The VLM architecture from the policy's own backbone files, its weights left unset (they come from the
    policy's weights file), and its processor."""
    from transformers import AutoModelForImageTextToText
    from transformers.initialization import no_init_weights

    adapter = get_adapter(cfg.family)
    config = adapter.check_config(folder)
    with no_init_weights():
        vlm = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    adapter.prepare(vlm)
    return vlm, adapter.load_processor(folder, config, cfg.image_size)


def load_policy(path: str | Path, device: str = "cpu") -> VLAPolicy:
    """Rebuild a trained policy from its folder: the backbone's architecture and processor from
    ``backbone/``, every weight from ``policy.safetensors`` (a folder without ``backbone/``, written by an
    earlier version, re-reads the backbone from ``config.source``)."""
    from dataclasses import replace

    from safetensors.torch import load_file

    path = Path(path)
    for name in (POLICY_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"not a policy checkpoint: {path / name} is missing")
    try:
        meta = json.loads((path / POLICY_FILE).read_text())
        raw = meta["config"]
        # a policy written before arm_range existed was trained with the full range
        cfg = PolicyConfig(**{"arm_range": "full", **raw, "arm_low": tuple(raw["arm_low"]),
                              "arm_high": tuple(raw["arm_high"])})
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path / POLICY_FILE}: corrupt policy file ({type(err).__name__}: {err})") from None
    try:
        state = load_file(path / WEIGHTS_FILE)
    except Exception as err:  # safetensors raises its own error types on a truncated or garbled file
        raise ValueError(f"{path / WEIGHTS_FILE}: corrupt weights file ({type(err).__name__}: {err})") from None
    if (path / BACKBONE_DIR / "config.json").is_file():
        vlm, processor = _backbone_from_folder(cfg, path / BACKBONE_DIR, state["action_query"].dtype)
        policy = VLAPolicy(replace(cfg, ablation="full"), vlm, processor)  # every weight is overwritten below
        policy.cfg = cfg
        policy.to(state["action_query"].dtype)
    else:
        policy = VLAPolicy(cfg)
    missing, unexpected = policy.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path / WEIGHTS_FILE}: does not match the policy (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return policy.to(device).eval()

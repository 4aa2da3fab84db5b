"""Small offline tokenizers for the tiny checkpoints.

A byte-pair vocabulary is trained with the ``tokenizers`` library on English
robot-instruction text generated here, using the same normaliser and
pre-tokeniser as the family's real tokenizer class; the family then wraps the
vocabulary and merges in that class (``Qwen2Tokenizer``, ``GemmaTokenizer``,
``LlamaTokenizer``, ``GPT2Tokenizer``; a scored unigram vocabulary for ``XLMRobertaTokenizer``),
adds its real special tokens and saves it with ``save_pretrained``.
"""

from __future__ import annotations

import itertools
import json
import random

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

VERBS = ["pick up", "put", "place", "push", "pull", "open", "close", "turn", "press", "slide", "lift", "move",
         "grasp", "stack", "insert", "rotate", "reach", "drop", "sweep", "hang", "unplug", "plug", "wipe", "take"]
ADJECTIVES = ["red", "blue", "green", "yellow", "pink", "purple", "black", "white", "small", "large", "wooden",
              "metal", "left", "right", "top", "bottom", "front", "back", "round", "square"]
OBJECTS = ["block", "cube", "drawer", "door", "window", "button", "handle", "lever", "faucet", "peg", "puck",
           "cup", "mug", "bowl", "plate", "spoon", "towel", "carrot", "eggplant", "basket", "box", "lid", "bin",
           "hammer", "nail", "knob", "switch", "shelf", "ball", "hoop", "stick", "coffee machine", "soccer ball",
           "light", "stove", "dial", "sponge", "cabinet", "microwave", "pot", "book", "bottle", "cloth", "plug"]
PLACES = ["on the table", "in the drawer", "into the bin", "on the shelf", "into the basket", "on the plate",
          "to the left", "to the right", "into the hole", "on the towel", "onto the cube", "off the table",
          "towards the robot", "away from the robot", "into the goal", "under the faucet", "next to the bowl"]
PHRASES = ["What action should the robotic arm take to", "You are a helpful assistant.", "system", "user",
           "assistant", "the robot arm", "the gripper", "slowly", "carefully", "and then", "until it clicks"]


def robot_corpus(seed: int = 0, n: int = 4000) -> list[str]:
    """``n`` English robot instructions, deterministic given ``seed`` (one per line, ending in a newline)."""
    rng = random.Random(seed)
    lines = list(PHRASES)
    for _ in range(n):
        verb, obj = rng.choice(VERBS), rng.choice(OBJECTS)
        adj = rng.choice(ADJECTIVES) + " " if rng.random() < 0.6 else ""
        place = " " + rng.choice(PLACES) if rng.random() < 0.5 else ""
        text = f"{verb} the {adj}{obj}{place}"
        if rng.random() < 0.2:
            text = f"{rng.choice(PHRASES[:1])} {text}?"
        elif rng.random() < 0.3:
            text = text[0].upper() + text[1:] + "."
        lines.append(text + "\n")
    return lines


def _train(tok: Tokenizer, trainer: trainers.BpeTrainer, corpus: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    tok.train_from_iterator(corpus, trainer)
    model = json.loads(tok.to_str())["model"]
    return dict(model["vocab"]), [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]


def byte_level_bpe(vocab_size: int, seed: int = 0) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE with the Qwen2 pre-tokeniser (GPT-2 style bytes, Qwen's split regex)."""
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    return _train(tok, trainer, robot_corpus(seed))


def sentencepiece_bpe(vocab_size: int, leading: list[str], seed: int = 0) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Gemma-style BPE: spaces become "▁", byte fallback tokens <0x00>..<0xFF>, ``leading`` tokens first."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    # words keep their leading "▁" (as SentencePiece pieces do); merges never cross a word boundary
    tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    special = leading + [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  max_token_length=16)
    return _train(tok, trainer, robot_corpus(seed))


def sentencepiece_unigram(vocab_size: int, leading: list[str], seed: int = 0) -> list[tuple[str, float]]:
    """SentencePiece-style unigram vocabulary (XLM-R / Kosmos-2): pieces with log-probabilities,
    words split on whitespace with a leading "▁", ``leading`` tokens first (score 0)."""
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=leading, unk_token="<unk>",
                                      show_progress=False, max_piece_length=16)
    tok.train_from_iterator(robot_corpus(seed), trainer)
    return [(piece, float(score)) for piece, score in json.loads(tok.to_str())["model"]["vocab"]]


def append_tokens(vocab: dict[str, int], tokens: list[str]) -> dict[str, int]:
    """``vocab`` with ``tokens`` appended after its last id (as the real checkpoints place their special tokens)."""
    out = dict(vocab)
    for token in itertools.filterfalse(out.__contains__, tokens):
        out[token] = len(out)
    return out


def qwen_chat_tokenizer(seed: int, special_tokens: list[str], chat_template: str):
    """A tiny ``Qwen2Tokenizer`` (byte-level BPE) with the given special tokens and chat template:
    the tokenizer class of Qwen2.5-VL, Qwen3-VL and InternVL (Qwen3 language model)."""
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    vocab, merges = byte_level_bpe(vocab_size=1024, seed=seed)
    vocab = append_tokens(vocab, special_tokens)
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None, eos_token="<|im_end|>",
                         pad_token="<|endoftext|>", extra_special_tokens=special_tokens)
    tok.chat_template = chat_template
    return tok

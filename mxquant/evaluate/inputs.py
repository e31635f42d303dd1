"""What both models read: token-id batches.

- default, data-free: one batch of `batch` rows of `seq_len` token ids drawn uniformly from
  [0, vocab_size) by `torch.randint(0, vocab_size, (batch, seq_len),
  generator=torch.Generator().manual_seed(seed))`, so anyone can reproduce it;
- `--text F`: F tokenized with SRC's tokenizer (its default special tokens), cut into
  consecutive windows of `seq_len` tokens (the last one shorter), all of them, `batch` windows
  a forward pass;
- `--input-ids F`: a JSON list of token-id lists, each one sequence exactly as given (no
  special token added, nothing cut); sequences of one length share a forward pass, `batch` at
  a time.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..checkpoint.stio import CheckpointError


@dataclass
class Inputs:
    kind: str
    """"random", "text" or "input-ids"."""
    batches: list
    """int64 tensors [rows, length], on the CPU."""
    user_data: bool
    """Real text (perplexity means something), not random tokens."""

    @property
    def sequences(self) -> int:
        return sum(b.shape[0] for b in self.batches)

    @property
    def tokens(self) -> int:
        return sum(b.numel() for b in self.batches)


def random_tokens(vocab_size: int, batch: int, seq_len: int, seed: int) -> Inputs:
    import torch

    ids = torch.randint(0, vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(seed))
    return Inputs("random", [ids], False)


def _batched(seqs: list[list[int]], batch: int) -> list:
    import torch

    by_len: dict[int, list[list[int]]] = {}
    for s in seqs:
        by_len.setdefault(len(s), []).append(s)
    out = []
    for group in by_len.values():
        for i in range(0, len(group), batch):
            out.append(torch.tensor(group[i:i + batch], dtype=torch.int64))
    return out


def _in_vocab(seqs: list[list[int]], vocab_size: int, what: str) -> None:
    for i, s in enumerate(seqs):
        bad = [t for t in s if not 0 <= t < vocab_size]
        if bad:
            raise CheckpointError(f"{what}: sequence {i} has token id {bad[0]}, outside the model's vocabulary "
                                  f"[0, {vocab_size})")


def from_input_ids(path: str, vocab_size: int, batch: int) -> Inputs:
    from ..checkpoint.srcfiles import load_json

    if not os.path.isfile(path):
        raise CheckpointError(f"--input-ids {path}: no such file")
    seqs = load_json(path, f"--input-ids {path}")
    if (not isinstance(seqs, list) or not seqs
            or not all(isinstance(s, list) and s and all(type(t) is int for t in s) for s in seqs)):
        raise CheckpointError(f"--input-ids {path}: must be a non-empty JSON list of non-empty lists of "
                              "integer token ids, e.g. [[1, 15, 27], [1, 99]]")
    _in_vocab(seqs, vocab_size, f"--input-ids {path}")
    return Inputs("input-ids", _batched(seqs, batch), True)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")
"""A checkpoint has a tokenizer when it holds one of these (transformers 5 otherwise builds an
empty one from the model_type, which tokenizes any text to nothing)."""


def _tokenizer(src: str):
    from transformers import AutoTokenizer

    if not any(os.path.isfile(os.path.join(src, f)) for f in TOKENIZER_FILES):
        raise CheckpointError(f"--text needs SRC's tokenizer, and SRC {src} has none "
                              f"(no {', '.join(TOKENIZER_FILES)}); "
                              "tokenize the text yourself and pass --input-ids")
    try:
        return AutoTokenizer.from_pretrained(src)
    except Exception as e:  # noqa: BLE001 - any failure to find or build one: refused, with the reason
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"--text needs SRC's tokenizer, and SRC {src} has none that transformers can "
                              f"load ({first[:200]}); tokenize the text yourself and pass --input-ids") from None


def from_text(path: str, src: str, vocab_size: int, batch: int, seq_len: int) -> Inputs:
    if not os.path.isfile(path):
        raise CheckpointError(f"--text {path}: no such file")
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            text = f.read()
        except UnicodeDecodeError as e:
            raise CheckpointError(f"--text {path}: not UTF-8 text ({e})") from None
    ids = list(_tokenizer(src)(text)["input_ids"])
    if len(ids) < 2:
        raise CheckpointError(f"--text {path}: {len(ids)} token(s); perplexity needs at least 2")
    windows = [ids[i:i + seq_len] for i in range(0, len(ids), seq_len)]
    _in_vocab(windows, vocab_size, f"--text {path} (tokenized)")
    return Inputs("text", _batched(windows, batch), True)


def choose(args_text, args_ids, src: str, vocab: int, batch: int, seq_len: int, seed: int) -> Inputs:
    if batch < 1 or seq_len < 1:
        raise CheckpointError(f"--batch and --seq-len must be at least 1 (got {batch}, {seq_len})")
    if args_text and args_ids:
        raise CheckpointError("give --text or --input-ids, not both")
    if args_ids:
        return from_input_ids(args_ids, vocab, batch)
    if args_text:
        return from_text(args_text, src, vocab, batch, seq_len)
    return random_tokens(vocab, batch, seq_len, seed)

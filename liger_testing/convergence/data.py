"""The shipped dataset: BPE token ids of CPython standard-library docstrings, and batches drawn from it.

The files live in ``liger_testing/convergence/data/`` (package data: found from a source checkout, an
editable install and an installed wheel alike, through :mod:`importlib.resources`). They are built by
``fixtures/build_dataset.py``; ``meta.json`` says what they hold. Nothing is downloaded.

Batches are windows of ``seq_len`` consecutive tokens at positions drawn from a seeded generator. The
last ``HOLDOUT_FRACTION`` of the token stream is held back: training batches never come from it, the
evaluation batch always does.
"""

from __future__ import annotations

import array
import functools
import hashlib
import json
import sys
from dataclasses import dataclass
from importlib import resources

import torch

__all__ = ["Dataset", "load_dataset", "HOLDOUT_FRACTION"]

HOLDOUT_FRACTION = 0.1
_PACKAGE = "liger_testing.convergence"


@dataclass(frozen=True)
class Dataset:
    """Token ids (int64, CPU) and the metadata of the tokenizer that made them."""

    tokens: torch.Tensor
    vocab_size: int
    pad_token_id: int
    bos_token_id: int
    eos_token_id: int
    meta: dict

    @property
    def split(self) -> int:
        """Index of the first held-back token."""
        return int(len(self.tokens) * (1.0 - HOLDOUT_FRACTION))

    def _windows(self, lo: int, hi: int, batch_size: int, seq_len: int, generator: torch.Generator):
        if seq_len < 2:
            raise ValueError(f"seq_len must be at least 2 (a causal LM needs a next token), got {seq_len}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if hi - lo <= seq_len:
            raise ValueError(
                f"seq_len={seq_len} does not fit in the dataset's {hi - lo} tokens of this split"
            )
        starts = torch.randint(lo, hi - seq_len, (batch_size,), generator=generator)
        offsets = torch.arange(seq_len)
        return self.tokens[starts[:, None] + offsets[None, :]]

    def train_batches(self, steps: int, batch_size: int, seq_len: int, seed: int) -> list[torch.Tensor]:
        """``steps`` batches of shape (batch_size, seq_len) from the training part, fixed by ``seed``."""
        generator = torch.Generator().manual_seed(seed)
        return [self._windows(0, self.split, batch_size, seq_len, generator) for _ in range(steps)]

    def eval_batch(self, batch_size: int, seq_len: int, seed: int) -> torch.Tensor:
        """One batch from the held-back part (never seen in training)."""
        generator = torch.Generator().manual_seed(seed + 0x5EED)
        return self._windows(self.split, len(self.tokens), batch_size, seq_len, generator)


def _read(name: str) -> bytes:
    try:
        return resources.files(_PACKAGE).joinpath("data", name).read_bytes()
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"liger_testing.convergence: the shipped dataset file data/{name} is missing from the "
            f"installed package (rebuild it with `python fixtures/build_dataset.py` in a checkout, and "
            f"make sure package data is installed)"
        ) from exc


@functools.cache
def load_dataset() -> Dataset:
    """The shipped dataset (read once per process; the SHA-256 recorded at build time is checked)."""
    meta = json.loads(_read("meta.json"))
    raw = _read("tokens.bin")
    digest = hashlib.sha256(raw).hexdigest()
    expected = meta.get("sha256", {}).get("tokens.bin")
    if expected is not None and digest != expected:
        raise ValueError(
            f"liger_testing.convergence: data/tokens.bin has SHA-256 {digest}, meta.json records {expected}; "
            f"the dataset is corrupt or out of date (rebuild with fixtures/build_dataset.py)"
        )
    ids = array.array("H")
    ids.frombytes(raw)
    if sys.byteorder != "little":  # stored little-endian
        ids.byteswap()
    tokens = torch.tensor(ids, dtype=torch.int64)
    return Dataset(
        tokens=tokens,
        vocab_size=int(meta["vocab_size"]),
        pad_token_id=int(meta["pad_token_id"]),
        bos_token_id=int(meta["bos_token_id"]),
        eos_token_id=int(meta["eos_token_id"]),
        meta=meta,
    )

"""The shipped dataset: found as package data, consistent with its metadata, rebuilt byte for byte."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import torch

from liger_testing.convergence import load_dataset

REPO = Path(__file__).resolve().parents[2]


def test_dataset_is_package_data_and_matches_its_metadata():
    data = resources.files("liger_testing.convergence").joinpath("data")
    for name in ("tokens.bin", "tokenizer.json", "meta.json", "LICENSE-CPython.txt"):
        assert data.joinpath(name).is_file(), name
    assert "Python Software Foundation" in data.joinpath("LICENSE-CPython.txt").read_text()
    ds = load_dataset()
    meta = ds.meta
    assert ds.tokens.dtype == torch.int64 and ds.tokens.numel() == meta["num_tokens"]
    assert 256 <= ds.vocab_size <= 512
    assert int(ds.tokens.min()) >= 0 and int(ds.tokens.max()) < ds.vocab_size
    assert (ds.pad_token_id, ds.bos_token_id, ds.eos_token_id) == (0, 1, 2)
    assert int((ds.tokens == ds.eos_token_id).sum()) == meta["num_documents"]
    size = sum(
        data.joinpath(n).stat().st_size if hasattr(data.joinpath(n), "stat") else 0 for n in ("tokens.bin",)
    )
    assert size < 4 * 2**20


def test_tokenizer_decodes_the_tokens_to_docstring_text():
    tokenizers = pytest.importorskip("tokenizers")
    path = resources.files("liger_testing.convergence").joinpath("data", "tokenizer.json")
    tok = tokenizers.Tokenizer.from_str(path.read_text())
    assert tok.get_vocab_size() == load_dataset().vocab_size
    text = tok.decode(load_dataset().tokens[:400].tolist())
    assert text.isascii() and len(text) > 400  # more than one character per token


def test_batches_are_seeded_and_held_back_batch_is_unseen():
    ds = load_dataset()
    a = ds.train_batches(3, 2, 16, seed=0)
    b = ds.train_batches(3, 2, 16, seed=0)
    c = ds.train_batches(3, 2, 16, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    assert a[0].shape == (2, 16)
    # Windows are consecutive tokens of the stream; the held-back part starts at ds.split.
    held = ds.eval_batch(2, 16, seed=0)
    stream = ds.tokens.tolist()
    for row in held.tolist():
        starts = [i for i in range(ds.split, len(stream) - 15) if stream[i : i + 16] == row]
        assert starts, "eval window not found in the held-back part"


def test_build_script_reproduces_the_shipped_files():
    meta = json.loads(resources.files("liger_testing.convergence").joinpath("data", "meta.json").read_text())
    tokenizers = pytest.importorskip("tokenizers")
    import platform

    if platform.python_version() != meta["python"] or tokenizers.__version__ != meta["tokenizers"]:
        pytest.skip(
            f"built with Python {meta['python']} and tokenizers {meta['tokenizers']}; this is Python "
            f"{platform.python_version()} and tokenizers {tokenizers.__version__}, whose docstrings/merges differ"
        )
    proc = subprocess.run(
        [sys.executable, str(REPO / "fixtures" / "build_dataset.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

"""The per-token metrics the cross-entropy losses return on request (``return_predicted_tokens``,
``return_token_accuracy``, as Liger Kernel 0.8's do) against the argmax written out here: ignored rows,
ties broken as ``torch.argmax`` does, every reduction, and the fused loss's chunks of rows."""

import pytest
import torch

from liger_kernel.transformers.functional import liger_cross_entropy, liger_fused_linear_cross_entropy

IGNORE = -100


def expected_stats(logits: torch.Tensor, target: torch.Tensor, reduction: str):
    predicted = torch.tensor(
        [-1 if t == IGNORE else int(torch.argmax(row)) for row, t in zip(logits, target.tolist())],
        dtype=torch.int64,
    )
    hits = torch.tensor([float(p == t and t != IGNORE) for p, t in zip(predicted.tolist(), target.tolist())])
    kept = int((target != IGNORE).sum())
    accuracy = hits if reduction == "none" else hits.sum() / max(kept, 1)
    return predicted, accuracy


def _case(rows=11, vocab=9, hidden=6):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, hidden, generator=g)
    weight = torch.randn(vocab, hidden, generator=g)
    logits = x @ weight.T
    target = logits.argmax(-1).clone()  # right, except where changed below
    target[::3] = (target[::3] + 1) % vocab  # wrong
    target[1] = IGNORE
    target[-1] = IGNORE
    return x, weight, logits, target


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_returns_the_argmax_and_the_accuracy(device, reduction):
    _x, _w, logits, target = _case()
    logits[4, :] = 0.5  # a tie: the first of the tied classes, as torch.argmax
    target[4] = 0
    out = liger_cross_entropy(
        logits.to(device), target.to(device), reduction=reduction, return_token_accuracy=True,
        return_predicted_tokens=True,
    )  # fmt: skip
    predicted, accuracy = expected_stats(logits, target, reduction)
    assert torch.equal(out.predicted_tokens.cpu(), predicted)
    torch.testing.assert_close(out.token_accuracy.cpu(), accuracy)


@pytest.mark.parametrize("chunk_size", [1, 4, 11, 64])
def test_fused_loss_predicts_chunk_by_chunk(device, chunk_size):
    """Chunks of 4 rows over 11 (a partial last chunk), one row each, all rows at once, or more."""
    x, weight, logits, target = _case()
    out = liger_fused_linear_cross_entropy(
        x.to(device), weight.to(device), target.to(device), reduction="none", return_token_accuracy=True,
        return_predicted_tokens=True, chunk_size=chunk_size,
    )  # fmt: skip
    predicted, accuracy = expected_stats(logits, target, "none")
    assert torch.equal(out.predicted_tokens.cpu(), predicted)
    torch.testing.assert_close(out.token_accuracy.cpu(), accuracy)


def test_every_token_ignored(device):
    logits = torch.randn(3, 5, device=device)
    target = torch.full((3,), IGNORE, device=device)
    out = liger_cross_entropy(logits, target, return_token_accuracy=True, return_predicted_tokens=True)
    assert torch.equal(out.predicted_tokens.cpu(), torch.full((3,), -1))
    assert out.token_accuracy.item() == 0.0

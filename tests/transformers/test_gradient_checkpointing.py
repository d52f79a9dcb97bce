"""Patched models under Hugging Face gradient checkpointing (decoder layers recomputed in backward).

The recomputed forward runs the kernels a second time (under a saved-tensor hook, and for the
non-reentrant flavour possibly a dispatch mode, so both of LigerOp's paths can be taken), and the
fused MLP's backward writes its gradients over the recomputed activations. Loss and every gradient
must equal the patched model trained without checkpointing.
"""

from __future__ import annotations

import _hf_tiny as T
import pytest

from liger_kernel.transformers.monkey_patch import apply_liger_kernel
from liger_testing import assert_close


@pytest.mark.parametrize("use_reentrant", [False, True])
@pytest.mark.parametrize("model_type", ["llama", "gemma2"])
def test_gradient_checkpointing_matches_plain_training(model_type, use_reentrant):
    reference = T.build(model_type)
    apply_liger_kernel(model_type, model=reference)
    checkpointed = T.build(model_type, state_dict=reference.state_dict())
    apply_liger_kernel(model_type, model=checkpointed)
    checkpointed.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    assert checkpointed.is_gradient_checkpointing

    ids, mask, labels = T.batch(seed=3)
    out_ref, grads_ref = T.train_step(reference, ids, mask, labels)
    out, grads = T.train_step(checkpointed, ids, mask, labels)
    assert set(grads) == set(grads_ref) and len(grads) > 0
    assert_close(out.loss, out_ref.loss, msg="loss")
    assert_close(grads, grads_ref, msg="gradients")

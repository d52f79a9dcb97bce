"""Causal-LM pieces shared by every patched model: the forward with the fused loss and the loss functions."""

from liger_kernel.transformers.model.causal_lm import liger_causal_lm_forward
from liger_kernel.transformers.model.loss_utils import (
    liger_for_causal_lm_loss,
    liger_fused_linear_causal_lm_loss,
)

__all__ = ["liger_causal_lm_forward", "liger_fused_linear_causal_lm_loss", "liger_for_causal_lm_loss"]

"""Losses that take hidden states and an lm_head weight and never materialize the (tokens x vocab) logits of
either the trained model or its reference/teacher: preference (DPO, ORPO, CPO, SimPO, KTO), RL (GRPO and its
variants) and distillation (JSD). Names and arguments as liger-kernel 0.8.5's ``liger_kernel.chunked_loss``."""

from liger_kernel.chunked_loss.cosine_similarity_loss import LigerFusedLinearCosineSimilarityLoss
from liger_kernel.chunked_loss.cpo_loss import LigerFusedLinearCPOLoss, LigerFusedLinearSimPOLoss
from liger_kernel.chunked_loss.dpo_loss import LigerFusedLinearDPOLoss
from liger_kernel.chunked_loss.grpo_loss import LigerFusedLinearGRPOLoss
from liger_kernel.chunked_loss.jsd_loss import LigerFusedLinearJSDLoss
from liger_kernel.chunked_loss.kto_loss import LigerFusedLinearKTOLoss
from liger_kernel.chunked_loss.orpo_loss import LigerFusedLinearORPOLoss

__all__ = [
    "LigerFusedLinearCosineSimilarityLoss",
    "LigerFusedLinearCPOLoss",
    "LigerFusedLinearDPOLoss",
    "LigerFusedLinearGRPOLoss",
    "LigerFusedLinearJSDLoss",
    "LigerFusedLinearKTOLoss",
    "LigerFusedLinearORPOLoss",
    "LigerFusedLinearSimPOLoss",
]

"""SimPO lives with CPO in ``cpo_loss`` (the same margin loss on length-averaged log-probs with a margin gamma);
this module keeps liger-kernel 0.8.5's import path."""

from liger_kernel.chunked_loss.cpo_loss import LigerFusedLinearSimPOFunction, LigerFusedLinearSimPOLoss

__all__ = ["LigerFusedLinearSimPOFunction", "LigerFusedLinearSimPOLoss"]

"""Convergence specs of a downstream project: ``python -m liger_testing.converge --import
my_convergence_specs --model my-qwen3`` (run from this directory, or with it on ``PYTHONPATH``)."""

from __future__ import annotations

from transformers import AutoConfig

from liger_testing.convergence import register_spec


def tiny_qwen3(vocab_size: int):  # the runner passes the shipped dataset's vocabulary size
    return AutoConfig.for_model(
        "qwen3",
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=120,  # not a power of two: kernels take their masked paths
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


# The project's own patch (my_patching.py), named as "module:function": imported when a run uses it.
register_spec(
    "my-qwen3",
    tiny_qwen3,
    patch="my_patching:patch_model",
    undo=None,  # the patch changes nothing outside the model instance
    patch_kwargs={"norms": True},
    description="Qwen3 with my_patching's F.rms_norm norms",
    replace=True,  # importing the module twice (a test, then the command line) is harmless
)

# Liger Kernel's patch with some options off: any callable works, an undo restores module-level changes.
register_spec(
    "my-qwen3-liger-no-rope",
    tiny_qwen3,
    patch="liger_kernel.transformers:apply_liger_kernel_to_qwen3",
    undo="liger_kernel.transformers:revert_liger_kernel_to_qwen3",
    patch_kwargs={"rope": False},
    description="Qwen3 with Liger Kernel, RoPE left to the model",
    replace=True,
)

"""Kernel benchmarks: Liger kernels against the eager PyTorch / Hugging Face code they replace and
against ``torch.compile`` of that same code.  Entry points: ``python -m benchmark.run`` (measure,
write a CSV) and ``python -m benchmark.plot`` (CSV -> PNG charts).  See benchmark/README.md.

Nothing is imported here on purpose: ``benchmark.run`` must switch Triton's interpreter on (when there
is no GPU) before ``liger_kernel`` or ``triton`` is imported.
"""

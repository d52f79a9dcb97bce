"""Root conftest. Device selection, seeds, markers and Hypothesis profiles come from the
liger_testing pytest plugin, which this project opts into with ``-p liger_testing.pytest_plugin`` in
pyproject's ``addopts`` (loaded before this file, so Triton's interpreter is switched on before any
test module imports a kernel)."""

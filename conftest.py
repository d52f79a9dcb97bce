"""Root conftest. Device selection, seeds, markers and Hypothesis profiles come from the
liger_testing pytest plugin (registered as a pytest11 entry point, loaded once the package is
installed), which switches Triton's interpreter on before any test module imports a kernel."""

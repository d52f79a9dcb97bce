"""Test configuration for the liger_testing toolkit's own tests."""

# pytester runs inner pytest sessions to test the liger_testing pytest plugin.
pytest_plugins = ["pytester"]

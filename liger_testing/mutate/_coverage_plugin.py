"""pytest plugin the mutation tool loads (``-p``) into its baseline run under ``--select coverage``: which
lines of the mutated files each test executes.

Coverage starts when the plugin is imported (before conftest files import the code under test, so lines
run at import get the empty context), measures only the files in ``LIGER_MUTATE_COVERAGE_INCLUDE``, and
switches its context to the test's node id (relative to the invocation folder, as the tool passes node ids
back) for the test's setup, call and teardown. Each process (xdist's workers too) saves its own data file
under ``LIGER_MUTATE_COVERAGE_DIR``; the tool combines them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import coverage
import pytest

_DIR = Path(os.environ["LIGER_MUTATE_COVERAGE_DIR"])
_INCLUDE = [p for p in os.environ["LIGER_MUTATE_COVERAGE_INCLUDE"].split(os.pathsep) if p]

_cov = coverage.Coverage(
    data_file=str(_DIR / "coverage"), data_suffix=True, include=_INCLUDE, config_file=False
)
_cov.start()


def _node_id(item: pytest.Item) -> str:
    """The node id with its file part relative to the invocation folder (the rootdir may be elsewhere)."""
    _, sep, rest = item.nodeid.partition("::")
    return Path(os.path.relpath(item.path, item.config.invocation_params.dir)).as_posix() + sep + rest


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    # Every xdist worker collects the whole suite in the same order; any one's list will do.
    (_DIR / "order.json").write_text(json.dumps([_node_id(item) for item in items]))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    _cov.switch_context(_node_id(item))
    yield
    _cov.switch_context("")


def pytest_unconfigure(config: pytest.Config) -> None:
    _cov.stop()
    _cov.save()

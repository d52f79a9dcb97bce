"""pytest plugin of liger_testing. Inert until a project opts in; installing the package changes
nothing in anyone's test run. Opt in with ``-p liger_testing.pytest_plugin`` in the project's pytest
``addopts`` (recommended: it loads before any conftest, so kernels that a conftest imports already run
in the interpreter) or ``pytest_plugins = ["liger_testing.pytest_plugin"]`` in the rootdir conftest
(then that conftest must not import kernels itself: the interpreter switch comes after it).

Provides:

* options ``--liger-device`` (``auto`` | ``cpu`` | ``cuda`` | any torch device string; default
  ``$LIGER_DEVICE`` or ``auto``) and ``--liger-seed`` (int; default ``$LIGER_SEED`` or 0); a seed given
  either way also seeds Hypothesis (as ``--hypothesis-seed``, unless that is given too), so one number
  reproduces a run's examples (profiles with ``derandomize``, such as ``ci``, keep their fixed examples);
* the Triton interpreter switch: when the resolved device is the CPU, ``TRITON_INTERPRET=1`` is set
  in ``pytest_load_initial_conftests`` -- before the rootdir/initial ``conftest.py`` files and any
  test module are imported, so kernels decorated at import time run in the interpreter;
* fixtures ``device`` (session) and ``seed`` (per test, derived from the global seed and the test's
  node id with SHA-256, so it does not depend on xdist scheduling);
* markers ``gpu`` (skipped unless the resolved device is CUDA), ``slow``, ``convergence``, ``nightly``;
* a "liger_testing reproduce" report section on failures;
* loading the Hypothesis profile from :func:`liger_testing.profiles.load_default_profile` unless
  ``--hypothesis-profile`` is given (when Hypothesis is installed; the rest works without it).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import random
from collections.abc import Generator

import pytest
import torch

from liger_testing.device import resolve_device, set_interpreter_if_no_gpu

# Register liger_testing's Hypothesis profiles now, at plugin import: Hypothesis's own plugin loads
# --hypothesis-profile=gpu in its pytest_configure, which runs before ours.
try:
    import liger_testing.profiles  # noqa: F401
except ModuleNotFoundError as _exc:  # Hypothesis is optional
    if _exc.name != "hypothesis":
        raise

__all__ = ["set_interpreter_if_no_gpu", "test_seed", "SEED_ENV_VAR", "DEVICE_ENV_VAR"]

SEED_ENV_VAR = "LIGER_SEED"
DEVICE_ENV_VAR = "LIGER_DEVICE"
REPORT_SECTION = "liger_testing reproduce"

_device_key = pytest.StashKey[str]()
_seed_key = pytest.StashKey[int]()
_profile_key = pytest.StashKey[str]()

_MARKERS = (
    "gpu: the test needs a CUDA GPU; skipped when liger_testing's resolved device is not cuda",
    "slow: a slow test (deselect with -m 'not slow')",
    "convergence: an end-to-end training convergence test",
    "nightly: runs only in the nightly job",
)


def _env_seed() -> int:
    raw = os.environ.get(SEED_ENV_VAR, "").strip()
    if not raw:
        return 0
    try:
        return int(raw)
    except ValueError as exc:
        raise pytest.UsageError(f"${SEED_ENV_VAR} must be an integer, got {raw!r}") from exc


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("liger_testing", "liger_testing kernel test toolkit")
    group.addoption(
        "--liger-device",
        dest="liger_device",
        default=os.environ.get(DEVICE_ENV_VAR, "auto"),
        help="device for kernel tests: auto (cuda if available, else cpu), cpu, cuda, or any torch "
        "device string (default: $LIGER_DEVICE or auto). On cpu, TRITON_INTERPRET=1 is set.",
    )
    group.addoption(
        "--liger-seed",
        dest="liger_seed",
        type=int,
        default=None,
        help="global seed mixed with each test's node id for the seed fixture (default: $LIGER_SEED or 0)",
    )


def _device_option(config: pytest.Config, namespace: object | None = None) -> str:
    src = namespace if namespace is not None else config.option
    return getattr(src, "liger_device", None) or "auto"


def _global_seed(config: pytest.Config) -> int:
    value = getattr(config.option, "liger_seed", None)
    return _env_seed() if value is None else int(value)


def test_seed(global_seed: int, nodeid: str) -> int:
    """The per-test seed: SHA-256 of ``"<global_seed>:<nodeid>"`` reduced mod ``2**31``."""
    digest = hashlib.sha256(f"{global_seed}:{nodeid}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**31)


test_seed.__test__ = False  # type: ignore[attr-defined]  # not a test despite its name


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> None:
    # Runs before the initial conftest.py files (rootdir, test paths) are imported; pytest_configure
    # runs after them, too late for kernels decorated at conftest import time.
    try:
        set_interpreter_if_no_gpu(_device_option(early_config, early_config.known_args_namespace))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from exc


def _explicit_seed(config: pytest.Config) -> int | None:
    """The global seed when the run gave one (``--liger-seed`` or ``$LIGER_SEED``), else None."""
    value = getattr(config.option, "liger_seed", None)
    if value is not None:
        return int(value)
    return _env_seed() if os.environ.get(SEED_ENV_VAR, "").strip() else None


@pytest.hookimpl(tryfirst=True)  # before Hypothesis's own pytest_configure reads --hypothesis-seed
def pytest_configure(config: pytest.Config) -> None:
    explicit_seed = _explicit_seed(config)
    if explicit_seed is not None and getattr(config.option, "hypothesis_seed", "absent") is None:
        config.option.hypothesis_seed = str(explicit_seed)
    for marker in _MARKERS:
        config.addinivalue_line("markers", marker)
    try:
        device = set_interpreter_if_no_gpu(_device_option(config))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from exc
    config.stash[_device_key] = device
    config.stash[_seed_key] = _global_seed(config)
    explicit_profile = config.getoption("hypothesis_profile", None)
    if explicit_profile:
        config.stash[_profile_key] = str(explicit_profile)
    else:
        config.stash[_profile_key] = _load_default_profile()


def _load_default_profile() -> str:
    try:
        from liger_testing import profiles
    except ModuleNotFoundError as exc:
        if exc.name != "hypothesis":
            raise
        return "none (Hypothesis is not installed)"
    return profiles.load_default_profile()


def _resolved_device(config: pytest.Config) -> str:
    try:
        return config.stash[_device_key]
    except KeyError:
        return resolve_device(_device_option(config))


def pytest_report_header(config: pytest.Config) -> str:
    return (
        f"liger_testing: device={_resolved_device(config)}, "
        f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '')!r}, "
        f"global seed={config.stash.get(_seed_key, 0)}, "
        f"hypothesis profile={config.stash.get(_profile_key, '?')}"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") is not None:
        device = _resolved_device(item.config)
        if torch.device(device).type != "cuda":
            pytest.skip(
                f"needs a CUDA GPU (marked gpu): liger_testing device is {device!r} "
                f"(torch.cuda.is_available()={torch.cuda.is_available()}; use --liger-device)"
            )


@pytest.fixture(scope="session")
def device(pytestconfig: pytest.Config) -> str:
    """The torch device string kernel tests should use (``--liger-device``, resolved)."""
    return _resolved_device(pytestconfig)


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """A per-test seed, stable for a node id and global seed; seeds torch (CPU and CUDA), random, numpy."""
    value = test_seed(_global_seed(request.config), request.node.nodeid)
    random.seed(value)
    torch.manual_seed(value)  # also seeds every CUDA device
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(value)
    try:
        import numpy as np
    except ImportError:
        pass
    else:
        np.random.seed(value)
    return value


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _shell_quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"


def reproduce_text(config: pytest.Config, nodeid: str) -> str:
    """The body of the "liger_testing reproduce" report section for the test ``nodeid``."""
    global_seed = _global_seed(config)
    device = _resolved_device(config)
    versions = [f"python {platform.python_version()}", f"torch {torch.__version__}"]
    for dist in ("triton", "transformers", "hypothesis"):
        v = _version(dist)
        if v is not None:
            versions.append(f"{dist} {v}")
    lines = [
        f"seed: {test_seed(global_seed, nodeid)} (global seed {global_seed})",
        f"device: {device}",
        f"TRITON_INTERPRET: {os.environ.get('TRITON_INTERPRET', '<unset>')}",
        f"hypothesis profile: {config.stash.get(_profile_key, '?')}",
        f"versions: {', '.join(versions)}",
    ]
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        try:
            lines.append(f"gpu: {torch.cuda.get_device_name(torch.device(device))}")
        except Exception as exc:  # pragma: no cover - depends on the driver
            lines.append(f"gpu: <unknown: {exc}>")
    lines.append(
        f"rerun (from {config.rootpath}): "
        f"pytest {_shell_quote(nodeid)} --liger-seed={global_seed} --liger-device={device}"
    )
    return "\n".join(lines)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, object, object]:
    report = yield
    if isinstance(report, pytest.TestReport) and report.when == "call" and report.failed:
        report.sections.append((REPORT_SECTION, reproduce_text(item.config, item.nodeid)))
    return report

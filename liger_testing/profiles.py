"""Hypothesis settings profiles for kernel tests.

Importing this module registers four profiles:

* ``dev``: 20 examples -- quick local runs (the default outside CI).
* ``ci``: built on Hypothesis's own built-in ``ci`` profile (derandomized, no example database,
  ``print_blob``), with 25 examples so CPU-interpreter runs stay fast. Hypothesis loads ``ci``
  by itself when the ``CI`` environment variable is set; re-registering it under the same name
  keeps that behaviour and applies our changes.
* ``gpu``: 100 examples, for runs on a real GPU where examples are cheap.
* ``nightly``: 1000 examples.
* ``mutation``: what ``python -m liger_testing.mutate`` runs the tests under: ``dev``'s 20 examples,
  derandomized (every mutant sees the same examples), no example database (one mutant's failure must
  not be replayed against the next) and no shrinking (a killed mutant needs one failing example, not the
  smallest; shrinking through an interpreted kernel can take minutes).

All use ``deadline=None`` (the first example of a test compiles its kernels) and ``print_blob=True``,
and suppress the ``too_slow`` and ``data_too_large`` health checks (tensor inputs are large and slow
to generate by Hypothesis' standards).
"""

from __future__ import annotations

import os

from liger_testing._optional import require_hypothesis

require_hypothesis("liger_testing.profiles")

from hypothesis import HealthCheck, Phase, settings  # noqa: E402

__all__ = ["PROFILE_ENV_VAR", "PROFILES", "load_default_profile", "default_profile_name", "scaled"]

PROFILE_ENV_VAR = "LIGER_HYPOTHESIS_PROFILE"
PROFILES: tuple[str, ...] = ("dev", "ci", "gpu", "nightly", "mutation")

_COMMON = dict(
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _builtin_ci() -> settings | None:
    try:
        return settings.get_profile("ci")
    except Exception:  # older Hypothesis without a built-in "ci" profile
        return None


settings.register_profile("dev", max_examples=20, **_COMMON)
settings.register_profile("ci", parent=_builtin_ci(), max_examples=25, **_COMMON)
settings.register_profile("gpu", max_examples=100, **_COMMON)
settings.register_profile("nightly", max_examples=1000, **_COMMON)
settings.register_profile(
    "mutation",
    max_examples=20,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    **_COMMON,
)


def default_profile_name() -> str:
    """``$LIGER_HYPOTHESIS_PROFILE`` if set, else ``"ci"`` when ``$CI`` is set, else ``"dev"``."""
    explicit = os.environ.get(PROFILE_ENV_VAR, "").strip()
    if explicit:
        return explicit
    if os.environ.get("CI"):
        return "ci"
    return "dev"


def load_default_profile() -> str:
    """Load :func:`default_profile_name`'s profile into Hypothesis and return its name.

    The pytest plugin calls this in ``pytest_configure`` unless ``--hypothesis-profile`` was given
    on the command line (an explicit choice always wins). Projects not using the plugin may call it
    from their ``conftest.py``.
    """
    name = default_profile_name()
    settings.load_profile(name)
    return name


def scaled(weight: float) -> settings:
    """Settings for a property test that runs ``weight`` times the loaded profile's ``max_examples``
    (at least one), so every profile scales every test: ``@scaled(0.32)`` is 8 examples under ``ci``
    (25), 6 under ``dev``, 32 under ``gpu`` and 320 under ``nightly``. Use it instead of a pinned
    ``@settings(max_examples=N)`` for a test whose examples cost more (or less) than most.

    The other settings come from the loaded profile. The profile must be loaded before the test module
    is imported: the pytest plugin (and Hypothesis' ``--hypothesis-profile``) load it at configure time.
    """
    if not weight > 0:
        raise ValueError(f"weight must be positive, got {weight!r}")
    return settings(max_examples=max(1, round(weight * settings.default.max_examples)))

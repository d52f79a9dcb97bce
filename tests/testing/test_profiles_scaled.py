"""liger_testing.profiles.scaled: a per-test weight that every Hypothesis profile scales."""

import pytest
from hypothesis import settings

from liger_testing.profiles import scaled


@pytest.fixture
def restore_profile():
    getter = getattr(settings, "get_current_profile_name", None)  # newer Hypothesis
    current = getter() if getter else settings._current_profile
    yield
    settings.load_profile(current)


@pytest.mark.parametrize("profile, expected", [("ci", 8), ("dev", 6), ("gpu", 32), ("nightly", 320)])
def test_weight_scales_with_the_profile(restore_profile, profile, expected):
    settings.load_profile(profile)
    chosen = scaled(0.32)
    assert chosen.max_examples == expected
    assert chosen.deadline is None  # everything else comes from the profile


def test_at_least_one_example_and_positive_weight(restore_profile):
    settings.load_profile("ci")
    assert scaled(0.001).max_examples == 1
    with pytest.raises(ValueError, match="weight must be positive"):
        scaled(0)

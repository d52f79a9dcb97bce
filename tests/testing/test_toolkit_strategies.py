"""Tests of liger_testing.strategies and liger_testing.profiles."""

import pytest
import torch
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from liger_testing import profiles
from liger_testing import strategies as lst

_FIND = settings(max_examples=3000, database=None, suppress_health_check=list(HealthCheck))


@settings(max_examples=40)
@given(data=st.data())
def test_tensor_values_are_exactly_representable(device, data):
    dtype = data.draw(lst.dtypes(torch.float32, torch.bfloat16, torch.float16, torch.float64))
    shape = data.draw(lst.shapes(min_dims=1, max_dims=3, max_side=40, max_numel=4096))
    t = data.draw(lst.tensors(shape, dtype, device=device, special=True, low=-8.0, high=8.0))
    assert t.dtype == dtype and tuple(t.shape) == shape and t.device.type == torch.device(device).type
    as64 = t.to(torch.float64)
    assert torch.equal(t.to(dtype).to(torch.float64), as64)
    # the same values survive a round trip through float32 (inputs come from float32 draws)
    assert torch.equal(t.to(torch.float32).to(dtype), t)
    assert torch.isfinite(as64).all()
    assert bool((as64.abs() <= 8.0 * 2**6).all())


@settings(max_examples=25)
@given(data=st.data())
def test_non_contiguous_tensors_hold_the_same_values(device, data):
    shape = data.draw(lst.shapes(min_dims=1, max_dims=3, max_side=20, max_numel=2048))
    dtype = data.draw(lst.dtypes())
    t = data.draw(lst.tensors(shape, dtype, device=device, contiguous=False, requires_grad=True))
    assert tuple(t.shape) == shape and t.requires_grad and t.is_leaf
    if t.numel() > 1:
        assert not t.is_contiguous()
    assert torch.isfinite(t.detach()).all()  # the NaN-filled gaps are not part of the view


def test_same_seed_same_tensor_for_contiguous_and_strided(device):
    # Generate both layouts from the same drawn seed: the values must be identical.
    @settings(max_examples=10, database=None)
    @given(seed=lst.seeds())
    def check(seed):
        from liger_testing.strategies import _non_contiguous_like, _values

        v = _values((5, 7), torch.bfloat16, seed, -4.0, 4.0, "none", 0)
        assert torch.equal(_non_contiguous_like(v, device).cpu(), v)

    check()


@settings(max_examples=30)
@given(data=st.data())
def test_labels_have_exact_ignore_fraction(device, data):
    n = data.draw(st.integers(1, 500))
    frac = data.draw(st.floats(0.0, 1.0))
    y = data.draw(lst.labels(n, 97, device=device, ignore_fraction=frac))
    assert y.dtype == torch.int64 and y.shape == (n,)
    ignored = int((y == -100).sum())
    assert ignored == round(frac * n)
    kept = y[y != -100]
    assert bool(((kept >= 0) & (kept < 97)).all())


@settings(max_examples=10)
@given(
    y=lst.labels(
        st.integers(10, 50), 10, device="cpu", ignore_index=-1, ignore_fraction=st.sampled_from([0.0, 0.5])
    )
)
def test_labels_accept_strategies(y):
    assert int((y == -1).sum()) in (0, round(0.5 * y.numel()))


@pytest.mark.parametrize("target", [1, 15, 16, 17, 63, 64, 65, 127, 129, 1023, 1024, 1025, 7, 509])
def test_dims_cover_block_edges_and_primes(target):
    assert find(lst.dims(1, 2048), lambda v: v == target, settings=_FIND) == target


def test_dims_respect_range():
    @settings(max_examples=200, database=None)
    @given(v=lst.dims(100, 300))
    def check(v):
        assert 100 <= v <= 300

    check()


@settings(max_examples=50)
@given(s=lst.shapes(min_dims=2, max_dims=3, max_side=512, last_dim=st.just(4097), max_numel=1 << 14))
def test_shapes_last_dim_and_budget(s):
    assert s[-1] == 4097 and 2 <= len(s) <= 3
    assert all(side >= 1 for side in s)
    # leading sides are capped by the budget (min_side=1 always fits)
    lead = 1
    for side in s[:-1]:
        lead *= side
    assert lead * 4097 <= max(1 << 14, 4097)


def test_profiles_registered():
    for name in profiles.PROFILES:
        p = settings.get_profile(name)
        assert p.deadline is None and p.print_blob
        assert HealthCheck.too_slow in p.suppress_health_check
    assert settings.get_profile("dev").max_examples <= 25
    assert settings.get_profile("ci").max_examples <= 25
    assert settings.get_profile("ci").derandomize  # inherited from Hypothesis' built-in ci profile
    assert settings.get_profile("gpu").max_examples >= 100
    assert settings.get_profile("nightly").max_examples >= 1000


def test_default_profile_name(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv(profiles.PROFILE_ENV_VAR, raising=False)
    assert profiles.default_profile_name() == "dev"
    monkeypatch.setenv("CI", "true")
    assert profiles.default_profile_name() == "ci"
    monkeypatch.setenv(profiles.PROFILE_ENV_VAR, "nightly")
    assert profiles.default_profile_name() == "nightly"

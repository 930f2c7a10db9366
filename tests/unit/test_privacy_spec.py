"""A privacy block without noise promises nothing: the spec refuses it, naming the field."""

import pytest

from red_runtime.spec import SpecError, parse_spec

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("privacy", [{"clip": 1}, {"clip": 1, "noiseMultiplier": 0}])
def test_privacy_without_noise_is_refused(privacy):
    with pytest.raises(SpecError, match=r"spec\.algorithm\.privacy\.noiseMultiplier: 0(\.0)?: must be greater than 0"):
        parse_spec({"algorithm": {"privacy": privacy}})


def test_privacy_with_noise_is_accepted():
    spec = parse_spec({"algorithm": {"privacy": {"clip": 1, "noiseMultiplier": 0.8}}})
    assert spec.algorithm.privacy.noiseMultiplier == 0.8

"""A privacy block without noise promises nothing: the spec refuses it, naming the field."""

import pytest

from red_api.spec import SpecError, parse_spec

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "privacy, reason",
    [
        ({"clip": 1}, r"None: is required \(Gaussian noise per round"),
        ({"clip": 1, "noiseMultiplier": 0}, r"0(\.0)?: must be greater than 0"),
    ],
)
def test_privacy_without_noise_is_refused(privacy, reason):
    with pytest.raises(SpecError, match=r"spec\.algorithm\.privacy\.noiseMultiplier: " + reason):
        parse_spec({"algorithm": {"privacy": privacy}})


def test_privacy_with_noise_is_accepted():
    spec = parse_spec({"algorithm": {"privacy": {"clip": 1, "noiseMultiplier": 0.8}}})
    assert spec.algorithm.privacy.noiseMultiplier == 0.8

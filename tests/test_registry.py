"""The one registry behind create_detector and create_encoder."""

import pytest

from siamface._registry import Registry
from siamface.detection import create_detector, detector_names
from siamface.embedding import create_encoder, model_names
from siamface.errors import ConfigError


def test_register_create_and_names_sorted():
    reg = Registry("widget")

    @reg.register("b")
    def _b(size=1):
        return ("b", size)

    reg.register("a")(lambda: "a")
    assert reg.names() == ["a", "b"]
    assert reg.create("b", size=3) == ("b", 3)
    assert "a" in reg and "c" not in reg


def test_unknown_name_lists_the_valid_ones():
    reg = Registry("widget")
    reg.register("x")(lambda: 1)
    with pytest.raises(ConfigError, match=r"unknown widget 'y'; choose one of: x$"):
        reg.create("y")


@pytest.mark.parametrize(
    ("create", "names", "kind"), [(create_detector, detector_names, "detector"), (create_encoder, model_names, "model")]
)
def test_detectors_and_encoders_share_it(create, names, kind):
    with pytest.raises(ConfigError) as err:
        create("no-such-thing")
    assert str(err.value).startswith(f"unknown {kind} 'no-such-thing'; choose one of: {', '.join(names())}")

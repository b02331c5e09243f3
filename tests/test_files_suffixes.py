"""One set of image suffixes and one of video suffixes, used by every folder reader."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siamface._files import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from siamface.evaluation.protocols import folder_identities
from siamface.gallery.enroll import image_files
from siamface.image import load_image
from siamface.video import FolderSource


@pytest.mark.parametrize("suffix", sorted(IMAGE_SUFFIXES - {".jpeg", ".tiff"}))
def test_every_image_suffix_is_decoded(tmp_path, suffix):
    """Each suffix in the set names a format load_image reads (GIF: first frame, PBM: black and white)."""
    path = tmp_path / f"x{suffix}"
    pixels = np.full((20, 24, 3), 255, np.uint8)
    mode = "1" if suffix == ".pbm" else ("L" if suffix == ".pgm" else "RGB")
    Image.fromarray(pixels).convert(mode).save(path)
    assert load_image(path).shape == (20, 24, 3)


def test_folder_readers_agree(tmp_path):
    person = tmp_path / "ann"
    person.mkdir()
    for name in ("a.JPG", "b.gif", "c.pbm", "d.txt", ".hidden.png", "e.mp4"):
        (person / name).write_bytes(b"")
    expected = [person / "a.JPG", person / "b.gif", person / "c.pbm"]
    assert image_files(person) == expected
    assert folder_identities(tmp_path) == {"ann": expected}
    (person / ".hidden.png").unlink()  # a folder of frames takes hidden files too (it always has)
    assert FolderSource(person).files == expected


def test_video_and_image_sets_are_disjoint():
    assert not IMAGE_SUFFIXES & VIDEO_SUFFIXES
    assert all(s == s.lower() and s.startswith(".") for s in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
    assert Path("clip.WEBM").suffix.lower() in VIDEO_SUFFIXES

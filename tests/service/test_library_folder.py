"""The service's library folder reader (`siamface.service.library`), below the HTTP layer: a folder swapped for
a link after it was listed is not followed when the photo is read; a photo whose reading takes the whole time
budget is set aside and the next scan goes on with the others. Real AT&T photos, a stub pipeline (the chain
itself is tested through the server in test_service_library.py)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import att

from siamface.errors import ImageError, OverBudgetError
from siamface.service.library import PhotoLibrary, list_photos, read_inside
from siamface.types import Faces


class OneFace:
    """Embeds every image as one face covering it, with a unit vector; `slow`: the images of this size take
    the request's time budget (OverBudgetError, as the real chain raises between its steps)."""

    def __init__(self, slow_shape=None) -> None:
        self.slow_shape = slow_shape

    def embed(self, image):
        if image.shape[:2] == self.slow_shape:
            raise OverBudgetError("embedding", 30.0)
        h, w = image.shape[:2]
        return Faces(
            boxes=np.array([[0, 0, w, h]], np.float32),
            scores=np.ones(1, np.float32),
            embeddings=np.eye(1, 128, dtype=np.float32),
        )


def test_a_folder_swapped_for_a_link_after_listing_is_not_followed(tmp_path):
    root, outside = tmp_path / "photos", tmp_path / "elsewhere"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    shutil.copy(att(3, 1), root / "a" / "x.pgm")
    shutil.copy(att(6, 1), outside / "x.pgm")
    assert list(list_photos(root)[0]) == ["a/x.pgm"]
    assert read_inside(root, "a/x.pgm") == att(3, 1).read_bytes()
    shutil.rmtree(root / "a")
    (root / "a").symlink_to(outside)  # the folder swapped for a link between listing and reading
    with pytest.raises(ImageError, match="a link"):
        read_inside(root, "a/x.pgm")
    for bad in ("../elsewhere/x.pgm", "a/../../elsewhere/x.pgm", "/etc/passwd", ".hidden"):
        with pytest.raises(ImageError, match="not a path inside"):
            read_inside(root, bad)


def test_a_photo_that_takes_the_whole_budget_is_set_aside_and_the_scan_goes_on(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    shutil.copy(att(3, 1), root / "1.pgm")
    big = np.zeros((300, 200), np.uint8)  # another size than the AT&T photos: the stub's slow one
    import cv2

    cv2.imwrite(str(root / "2.pgm"), big)
    shutil.copy(att(4, 1), root / "3.pgm")
    library = PhotoLibrary(root)
    pipeline = OneFace(slow_shape=(300, 200))
    first = library.scan(pipeline, 10**7, stop=lambda: False)
    assert first["done"] is False and first["read"] == 2 and first["left"] == 1 and first["faces"] == 1
    assert [e["file"] for e in first["errors"]] == ["2.pgm"] and "time budget" in first["errors"][0]["error"]
    second = library.scan(pipeline, 10**7, stop=lambda: False)
    assert second["done"] is True and second["read"] == 1 and second["faces"] == 2

"""The page's photo library over `siamface serve --library DIR` (in a thread of the test process), on real faces
(AT&T s3-s5, three photos each, shuffled into sub-folders): the folder comes back as three groups; links out of
the folder are not followed; thumbnails go to enrol keys only and are never cached; naming a group enrolls it
through the gates (identify then names the person, a second name for the same face is refused, a stale
version is refused); an uploaded photo joins its group; the routes are in the OpenAPI document."""

from __future__ import annotations

import os
import shutil
import urllib.request

import cv2
import numpy as np
import pytest
from service_support import require_service

require_service()

from conftest import att  # noqa: E402
from service_support import Server, probe  # noqa: E402

PEOPLE = (3, 4, 5)
OUTSIDE = 6  # a person whose photos lie outside the folder, reachable only through links


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("library")
    folder = root / "photos"
    owners = {}
    order = np.random.default_rng(3).permutation([(s, i) for s in PEOPLE for i in (1, 2, 3)])
    for k, (s, i) in enumerate(order):
        relative = f"{'ab'[k % 2]}/{k:02d}.pgm"
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(att(int(s), int(i)), folder / relative)
        owners[relative] = int(s)
    outside = root / "elsewhere"
    outside.mkdir()
    for i in (1, 2, 3):
        shutil.copy(att(OUTSIDE, i), outside / f"{i}.pgm")
    (folder / "a" / "link.pgm").symlink_to(outside / "1.pgm")  # a file link out of the folder
    (folder / "linked").symlink_to(outside)  # a folder link out of the folder
    (folder / ".hidden.pgm").symlink_to(outside / "2.pgm")
    (folder / "b" / "broken.jpg").write_bytes(b"not a photo")
    os.mkfifo(folder / "b" / "pipe.jpg")  # never opened for reading: it would block the scan for ever
    srv = Server(root / "people.db", "--liveness", "off", "--min-size", "40", "--library", str(folder))
    srv.enrol = srv.new_key("enrol", "desk")
    srv.recognise = srv.new_key("recognise", "door")
    yield srv, folder, owners
    srv.stop()


def scan(srv, key) -> dict:
    while True:
        answer = srv.request("POST", "/v1/library/scan", key=key)
        assert answer.status == 200, answer.body
        if answer.body["done"]:
            return answer.body


def groups(view: dict, owners: dict) -> list[set[int]]:
    return [{owners.get(f["file"], f["file"]) for f in c["faces"]} for c in view["clusters"]]


def test_the_folder_comes_back_as_three_groups_and_no_link_is_followed(library):
    srv, folder, owners = library
    done = scan(srv, srv.enrol)
    assert done["faces"] == 9 and done["files"] == 9
    errors = {e["file"]: e["error"] for e in done["errors"]}
    assert errors.pop("a/link.pgm") == errors.pop("linked") == "a link (not followed)"
    assert errors.pop("b/pipe.jpg") == "not a regular file" and list(errors) == ["b/broken.jpg"]
    view = srv.request("GET", "/v1/library", key=srv.enrol).body
    assert sorted(map(sorted, groups(view, owners))) == [[3], [4], [5]]
    assert [len(c["faces"]) for c in view["clusters"]] == [3, 3, 3] and view["unclustered"] == []
    assert view["folder"] is True and str(folder) not in str(view)  # paths inside the folder only
    again = srv.request("POST", "/v1/library/scan", key=srv.enrol).body  # nothing new: nothing read
    assert again["read"] == 0 and again["version"] == view["version"]
    broken = folder / "b" / "broken.jpg"
    shutil.copy(att(5, 4), broken)  # the unreadable photo replaced: read again, and it joins s5's group
    owners["b/broken.jpg"] = 5
    assert scan(srv, srv.enrol)["read"] == 1
    view = srv.request("GET", "/v1/library", key=srv.enrol).body
    assert sorted(map(sorted, groups(view, owners))) == [[3], [4], [5]] and len(view["clusters"][0]["faces"]) == 4
    broken.unlink()
    assert scan(srv, srv.enrol)["faces"] == 9  # a removed photo is forgotten


def test_thumbnails_are_for_enrol_keys_only_and_never_cached(library):
    srv, _, owners = library
    scan(srv, srv.enrol)
    face = srv.request("GET", "/v1/library", key=srv.enrol).body["clusters"][0]["faces"][0]
    path = f"/v1/library/faces/{face['id']}/thumbnail"
    answer = srv.request("GET", path, key=srv.enrol)
    assert answer.status == 200 and answer.headers["content-type"] == "image/jpeg"
    assert "no-store" in answer.headers["cache-control"]
    request = urllib.request.Request(srv.url + path, headers={"Authorization": f"Bearer {srv.enrol}"})
    with urllib.request.urlopen(request) as raw:
        thumb = cv2.imdecode(np.frombuffer(raw.read(), np.uint8), cv2.IMREAD_COLOR)
    assert thumb.shape == (96, 96, 3)  # a JPEG thumbnail
    for method, route in [("GET", path), ("GET", "/v1/library"), ("POST", "/v1/library/scan")]:
        refused = srv.request(method, route, key=srv.recognise)
        assert refused.status == 403 and refused.error == "forbidden-role"
        assert srv.request(method, route, key=None).status == 401
    assert srv.request("GET", "/v1/library/faces/999999/thumbnail", key=srv.enrol).status == 404


def test_naming_a_group_enrolls_it_through_the_gates(library):
    srv, _, owners = library
    scan(srv, srv.enrol)
    view = srv.request("GET", "/v1/library", key=srv.enrol).body
    k = next(i for i, g in enumerate(groups(view, owners)) if g == {3})
    stale = srv.request(
        "POST",
        f"/v1/library/groups/{k}/enroll",
        key=srv.enrol,
        fields={"name": "alice", "version": view["version"] - 1},
    )
    assert stale.status == 409 and stale.error == "library-changed"
    answer = srv.request(
        "POST", f"/v1/library/groups/{k}/enroll", key=srv.enrol, fields={"name": "alice", "version": view["version"]}
    )
    assert answer.status == 201, answer.body
    assert answer.body["person"] == "alice" and len(answer.body["added"]) == 3
    who = srv.request("POST", "/v1/identify", files=probe(3, 4))  # a photo of s3 the library does not hold
    assert who.status == 200 and who.body["faces"][0]["person"] == "alice"
    again = srv.request(
        "POST", f"/v1/library/groups/{k}/enroll", key=srv.enrol, fields={"name": "bob", "version": view["version"]}
    )
    assert again.status == 409 and again.error == "already-enrolled"  # a face belongs to one person
    taken = next(i for i, g in enumerate(groups(view, owners)) if g == {4})
    answer = srv.request(
        "POST",
        f"/v1/library/groups/{taken}/enroll",
        key=srv.enrol,
        fields={"name": "ALICE", "version": view["version"]},
    )
    assert answer.status == 409 and answer.error == "person-exists"
    assert (
        srv.request(
            "POST", "/v1/library/groups/99/enroll", key=srv.enrol, fields={"name": "carol", "version": view["version"]}
        ).status
        == 404
    )


def test_an_uploaded_photo_joins_its_group_and_its_name_is_only_a_label(library):
    srv, _, owners = library
    scan(srv, srv.enrol)
    before = srv.request("GET", "/v1/library", key=srv.enrol).body
    name = '<img src=x onerror=alert(1)>.pgm'
    answer = srv.request("POST", "/v1/library/photos", key=srv.enrol, files=[("images", name, att(4, 4).read_bytes())])
    assert answer.status == 200, answer.body
    assert answer.body["photos"][0]["faces"] == 1 and answer.body["version"] > before["version"]
    view = srv.request("GET", "/v1/library", key=srv.enrol).body
    group = next(c for c in view["clusters"] if any(f["file"].startswith("upload 0") for f in c["faces"]))
    assert {owners[f["file"]] for f in group["faces"] if f["file"] in owners} == {4} and len(group["faces"]) == 4
    assert "<" not in str(view) and ">" not in str(view)  # the upload's label keeps no markup
    assert srv.request("DELETE", "/v1/library", key=srv.enrol).body["faces"] == 0


def test_the_library_routes_are_in_the_openapi_document(library):
    srv, _, _ = library
    paths = srv.request("GET", "/openapi.json", key=None).body["paths"]
    for route in (
        "/v1/library",
        "/v1/library/scan",
        "/v1/library/photos",
        "/v1/library/faces/{face_id}/thumbnail",
        "/v1/library/groups/{group}/enroll",
    ):
        assert route in paths


def test_a_server_without_a_library_folder_reads_none(tmp_path):
    srv = Server(tmp_path / "g.db", "--liveness", "off")
    try:
        answer = srv.request("POST", "/v1/library/scan")
        assert answer.status == 404 and answer.error == "no-library-folder"
        assert srv.request("GET", "/v1/library").body["folder"] is False
    finally:
        srv.stop()


def test_one_photo_under_many_names_hard_links_counts_once(tmp_path):
    """A photo hard-linked under 30 more names (in the folder and a sub-folder) is read once: one face, not 31
    (nor a group of one person's copies filling the library); the other names are reported as not read."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(att(3, 1), folder / "a.pgm")
    shutil.copy(att(3, 2), folder / "b.pgm")
    for k in range(30):
        os.link(folder / "a.pgm", folder / ("sub" if k % 2 else ".") / f"copy{k:02d}.pgm")
    srv = Server(tmp_path / "g.db", "--liveness", "off", "--min-size", "40", "--library", str(folder))
    try:
        key = srv.new_key("enrol", "desk")
        done = scan(srv, key)
        assert done["files"] == 2 and done["faces"] == 2
        errors = {e["file"]: e["error"] for e in done["errors"]}
        assert len(errors) == 30 and set(errors.values()) == {"the same file as a.pgm (a hard link): read once"}
        view = srv.request("GET", "/v1/library", key=key).body
        assert [sorted(f["file"] for f in c["faces"]) for c in view["clusters"]] == [["a.pgm", "b.pgm"]]
    finally:
        srv.stop()

"""The gallery's verbs on real faces: 1:1 against a claimed identity under each rule, 1:N on a group scene and
on a stranger, the audit trail, model binding, re-embedding, deletion, and threads enrolling at once."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import threading

import numpy as np
import pytest
from conftest import att, att_rgb, faceless, planted_gallery
from gallery_support import (  # noqa: F401
    PEOPLE,
    PROBE,
    STRANGER,
    backend,
    base_gallery,
    check_consistent,
    cli,
    gallery,
    gallery_file,
    is_url,
    name,
    new_gallery,
    rows,
)

from siamface import Pipeline
from siamface.decision import CALLER, Threshold, identity
from siamface.errors import ConfigError, GalleryError, ModelMismatchError, NoFaceError
from siamface.gallery import RULES, Gallery, NewTemplate, UnknownPersonError, calibration_file_for
from siamface.pipeline import DEFAULT_MODEL
from siamface.thresholds import Calibration, save_calibration


@pytest.mark.parametrize("rule", RULES)
def test_the_right_claim_is_accepted_and_wrong_ones_denied(gallery, rule):
    for s in PEOPLE:
        right = gallery.verify(name(s), att(s, PROBE), rule=rule)
        assert right.accepted and right.score >= right.threshold, (s, rule, right.score)
        assert right.rule == rule and len(right.templates) == gallery.store.person(name(s)).n_templates
        wrong_claim = name(PEOPLE[(PEOPLE.index(s) + 1) % len(PEOPLE)])
        wrong = gallery.verify(wrong_claim, att(s, PROBE), rule=rule)
        assert not wrong.accepted and wrong.score < wrong.threshold, (s, wrong_claim, rule, wrong.score)


def test_rule_scores_follow_their_definitions(gallery):
    results = {rule: gallery.verify("s7", att(7, PROBE), rule=rule, fraction=1.0) for rule in RULES}
    sims = np.array([t.similarity for t in results["best"].templates])
    assert list(sims) == sorted(sims, reverse=True)  # evidence, best first
    assert results["best"].score == pytest.approx(sims.max())
    assert results["mean"].score == pytest.approx(sims.mean())
    assert results["fraction"].score == pytest.approx(sims.min())  # fraction 1: every template
    assert results["fraction"].fraction == 1.0 and results["best"].fraction is None
    strict = gallery.verify("s7", att(7, PROBE), threshold=float(sims.max()) + 1e-4)
    assert not strict.accepted and strict.threshold_source == "given by the caller"
    d = results["mean"].to_dict()
    assert d["accepted"] is True and d["rule"] == "mean" and len(d["templates"]) == len(sims)


def test_fraction_rule_counts_matching_templates(gallery):
    sims = sorted((t.similarity for t in gallery.verify("s4", att(4, PROBE)).templates), reverse=True)
    between = (sims[0] + sims[1]) / 2  # only the best template matches at this threshold
    assert gallery.verify("s4", att(4, PROBE), rule="fraction", fraction=0.3, threshold=between).accepted
    denied = gallery.verify("s4", att(4, PROBE), rule="fraction", fraction=0.5, threshold=between)
    assert not denied.accepted and denied.matched == 1


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"claim": "nobody"}, UnknownPersonError),
        ({"rule": "median"}, ConfigError),
        ({"rule": "fraction", "fraction": 0}, ConfigError),
        ({"probe": faceless()}, NoFaceError),
    ],
)
def test_verify_errors(gallery, kwargs, error):
    args = {"claim": "s3", "probe": att(3, PROBE), **kwargs}
    with pytest.raises(error):
        gallery.verify(args.pop("claim"), args.pop("probe"), **args)


def test_identify_names_every_face_of_a_group(gallery, group_scene):
    result = gallery.identify(group_scene, top=3)
    assert result.names == ["s3", "s5", "s7"] and result.found
    for face in result.faces:
        assert face.accepted and face.similarity >= result.threshold
        assert face.candidates[0].person == face.person and len(face.candidates) == 3
        assert face.candidates[1].similarity < result.threshold


def test_a_stranger_is_unknown_with_candidates_as_evidence(gallery):
    result = gallery.identify(att(STRANGER, PROBE))
    assert result.names == ["unknown"] and not result.found
    face = result.faces[0]
    assert face.person is None and len(face.candidates) == 5 and face.similarity < result.threshold
    assert result.to_dict()["faces"][0]["person"] == "unknown"
    assert gallery.identify(faceless()).faces == ()


def test_two_people_too_close_to_call_are_ambiguous(gallery):
    gallery.store.add_templates("twin", [_copy(t) for t in gallery.store.templates("s3", embeddings=True)])
    result = gallery.identify(att(3, PROBE), top=3)
    face = result.faces[0]
    assert face.status == "ambiguous" and face.name == "ambiguous" and face.person is None
    assert not face.accepted and face.similarity >= result.threshold
    assert {c.person for c in face.candidates[:2]} == {"s3", "twin"} and len(face.candidates) == 3
    assert result.to_dict()["faces"][0]["status"] == "ambiguous" and result.margin == 0.01
    assert gallery.store.audit(limit=1)[0].rule == "best, ambiguous within 0.01"
    gallery.store.delete("twin")
    face = gallery.identify(att(3, PROBE), top=1).faces[0]  # top 1 still decides on the second
    assert face.status == "known" and face.person == "s3" and len(face.candidates) == 1


@pytest.mark.parametrize(
    "best, second, margin, status",
    [
        (0.95, 0.80, 0.01, "known"),
        (0.95, 0.945, 0.01, "ambiguous"),
        (0.95, 0.945, 0.0, "known"),
        (0.95, None, 0.01, "known"),
        (0.90, 0.89, 0.01, "unknown"),
        (None, None, 0.01, "unknown"),
    ],
)
def test_open_set_decision_table(best, second, margin, status):
    similarities = [s for s in (best, second) if s is not None]
    assert identity(similarities, Threshold(0.93, "test"), margin) == status


def test_every_decision_is_audited(gallery, gallery_file):
    gallery.verify("s3", att(3, PROBE), rule="mean")
    gallery.verify("s4", att(3, PROBE))
    gallery.identify(att(STRANGER, PROBE))
    entries = [e for e in gallery.store.audit() if e.kind in ("verify", "identify")]
    assert [(e.kind, e.claimed, e.returned, e.accepted, e.rule) for e in entries] == [
        ("identify", None, None, False, "best"),
        ("verify", "s4", None, False, "best"),
        ("verify", "s3", "s3", True, "mean"),
    ]
    assert entries[0].threshold == gallery.identify_threshold >= gallery.threshold  # 1:N never laxer than 1:1
    assert all(e.threshold == gallery.threshold and e.model == DEFAULT_MODEL for e in entries[1:])
    assert rows(gallery_file, "SELECT count(*) FROM audit WHERE kind IN ('verify', 'identify')") == [(3,)]


def test_a_gallery_opened_without_a_pipeline_decides_with_the_calibration_beside_it(gallery, gallery_file):
    """The library decides as the commands do: the calibration written beside the gallery is in force."""
    if is_url(gallery_file):
        pytest.skip("a calibration file lies beside a gallery file")
    probe = att(3, PROBE)
    by_default = gallery.verify("s3", probe)  # the session's pipeline, given: the model's default threshold
    assert by_default.accepted and by_default.threshold_source == gallery.pipeline.encoder.info.threshold_source
    gallery.close()
    stricter = math.ceil(by_default.score * 1e4 + 1) / 1e4  # just above s3's own score: now denied
    save_calibration(
        Calibration(model=DEFAULT_MODEL, threshold=stricter, criterion="far=0.001", far=0.0004, frr=0.1),
        calibration_file_for(gallery_file),
    )
    with Gallery(gallery_file) as g:
        library = g.verify("s3", probe)
        assert g.identify_threshold == stricter  # a calibration is in force for 1:N too
    assert not library.accepted and library.threshold == stricter
    assert library.threshold_source.startswith("calibrated (far=0.001)")
    out = cli("verify", "-g", gallery_file, "--claim", "s3", probe, "--json")
    command = json.loads(out.stdout)
    assert out.returncode == 1, out.stderr
    assert (command["accepted"], command["threshold"], command["threshold_source"]) == (
        library.accepted,
        library.threshold,
        library.threshold_source,
    )
    with Gallery(gallery_file, threshold=0.8) as g:  # the caller's threshold still comes first
        assert g.verify("s3", probe).threshold_source == CALLER
    with Gallery(gallery_file, gallery.pipeline) as g:  # and a caller's pipeline is used as given
        assert g.verify("s3", probe).threshold == by_default.threshold


def _copy(template):
    return NewTemplate(template.embedding, template.source)


class _OtherVersion:
    """The same network under another version: a gallery must refuse it all the same."""

    def __init__(self, encoder):
        self._encoder = encoder
        self.info = dataclasses.replace(encoder.info, version="v2-retrained")
        if getattr(encoder, "chip_specs", None):  # a fused model: one crop per part
            self.chip_specs = encoder.chip_specs

    def embed(self, chips):
        return self._encoder.embed(chips)


def test_another_model_is_refused_for_enroll_verify_and_identify(gallery_file, pipeline):
    other = Pipeline(detector=pipeline.detector, model=_OtherVersion(pipeline.encoder))
    with Gallery(gallery_file, other) as g:
        for call in (
            lambda: g.enroll("x", [att(10, 1)]),
            lambda: g.verify("s3", att(3, 1)),
            lambda: g.identify(att(3, 1)),
        ):
            with pytest.raises(ModelMismatchError, match="'v2-retrained'.*cannot be compared"):
                call()
        assert len(g.store.people()) == len(PEOPLE)  # management still works


def test_reembed_needs_kept_images_then_rebinds(new_gallery, pipeline, gallery):
    with pytest.raises(GalleryError, match="no kept image"):
        gallery.reembed(pipeline)
    path = new_gallery("kept")
    with Gallery(path, pipeline, create=True, keep_images=True) as g:
        g.enroll("s3", [att(3, 2), att(3, 3)])
        assert rows(path, "SELECT count(*) FROM templates WHERE image IS NOT NULL") == [(2,)]
        other = Pipeline(detector=pipeline.detector, model=_OtherVersion(pipeline.encoder))
        assert g.reembed(other) == 2
        assert g.store.model.version == "v2-retrained" and g.verify("s3", att(3, 1)).accepted
    with Gallery(path, pipeline) as g, pytest.raises(ModelMismatchError):
        g.identify(att(3, 1))


class _EnrolsMeanwhile:
    """A pipeline whose embedding lets another writer (on the old model) enroll someone first, as a server
    would while a re-embedding runs (an arrival is (name, face), or a change to make: a callable)."""

    def __init__(self, inner, writer, arrivals) -> None:
        self.inner, self.writer, self.arrivals = inner, writer, list(arrivals)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed_many(self, items):
        if self.arrivals:
            arrival = self.arrivals.pop(0)
            if callable(arrival):
                arrival()
            else:
                self.writer.enroll(arrival[0], [arrival[1]])
        return self.inner.embed_many(items)


def test_reembed_finishes_while_people_are_enrolled_meanwhile(new_gallery, pipeline):
    path = new_gallery("changing")
    with Gallery(path, pipeline, create=True, keep_images=True) as g:
        g.enroll("s3", [att(3, 2), att(3, 3)])
        g.enroll("s4", [att(4, 2)])
    other = Pipeline(detector=pipeline.detector, model=_OtherVersion(pipeline.encoder))
    with Gallery(path, pipeline) as writer, Gallery(path, pipeline) as g:
        assert g.reembed(_EnrolsMeanwhile(other, writer, [("s5", att(5, 2)), ("s6", att(6, 2))])) == 5
        with pytest.raises(ModelMismatchError, match="re-embedded"):  # the old model writes no more
            writer.enroll("s7", [att(7, 2)])
    assert rows(path, "SELECT count(*) FROM people") == [(4,)]  # no one lost, the newcomers in
    assert rows(path, "SELECT DISTINCT model_version FROM templates") == [("v2-retrained",)]  # no mixed models
    with Gallery(path, other) as g:
        assert g.verify("s5", att(5, 1)).accepted and g.identify(att(6, 1)).names == ["s6"]


def test_reembed_never_gives_a_removed_persons_face_to_someone_enrolled_meanwhile(new_gallery, pipeline):
    """SQLite gave a new template the id of a removed one (a rowid is max + 1): a person removed while a
    re-embedding ran, and another enrolled, had the newcomer's templates re-embedded from the removed person's
    kept images (their ids had been embedded), and the removed person's face was granted as the newcomer."""
    path = new_gallery("reused")
    with Gallery(path, pipeline, create=True, keep_images=True) as g:
        g.enroll("s3", [att(3, 2), att(3, 3)])
        g.enroll("s4", [att(4, 2), att(4, 3)])  # the newest templates: the highest ids
    other = Pipeline(detector=pipeline.detector, model=_OtherVersion(pipeline.encoder))
    with Gallery(path, pipeline) as writer, Gallery(path, pipeline) as g:

        def remove_s4_enroll_s5():
            writer.store.delete("s4")
            assert len(writer.enroll("s5", [att(5, 2), att(5, 4)]).added) == 2

        g.reembed(_EnrolsMeanwhile(other, writer, [remove_s4_enroll_s5]))
    check_consistent(path)
    with Gallery(path, other) as g:
        assert g.identify(att(4, 1)).names == ["unknown"]  # s4 is gone: nobody holds their face
        assert g.verify("s5", att(5, 1)).accepted


def test_delete_removes_everything_about_a_person(gallery, gallery_file):
    gallery.verify("s4", att(4, PROBE))
    gallery.verify("s3", att(4, PROBE))  # s4's face, denied as s3: names s3 only
    gallery.identify(att(4, PROBE))  # returns s4
    pid, ref = gallery.store.person("s4").id, gallery.store.person("s4").ref
    embedding = gallery.store.templates("s4", embeddings=True)[0].embedding.astype("<f4").tobytes()
    assert gallery.store.delete("s4") == 3
    gallery.close()
    check_consistent(gallery_file)
    assert rows(gallery_file, "SELECT count(*) FROM people WHERE id = ?", (pid,)) == [(0,)]
    assert rows(gallery_file, "SELECT count(*) FROM templates WHERE person_id = ?", (pid,)) == [(0,)]
    # decisions stay, unchanged (the hash chain is whole), with s4's opaque reference, now linked to nothing
    assert rows(gallery_file, "SELECT count(*) FROM audit WHERE kind IN ('verify', 'identify')") == [(3,)]
    assert rows(gallery_file, "SELECT count(*) FROM people WHERE ref = ?", (ref,)) == [(0,)]
    assert rows(gallery_file, "SELECT count(*) FROM audit WHERE claimed_ref = ? OR returned_ref = ?", (ref, ref)) == [
        (4,)  # the verify naming s4, the identify returning s4, s4's enrolment and removal
    ]
    with Gallery(gallery_file, gallery.pipeline) as g:
        assert g.store.verify_audit().intact
    if is_url(gallery_file):  # no row of the database holds it (the server's free space is its own)
        assert rows(
            gallery_file, "SELECT count(*) FROM templates WHERE embedding = ?", (np.frombuffer(embedding, "<f4"),)
        ) == [(0,)]
    else:
        assert embedding not in gallery_file.read_bytes()
    with Gallery(gallery_file, gallery.pipeline) as g:
        assert g.identify(att(4, PROBE)).names == ["unknown"]


def test_threads_enrolling_at_once(new_gallery, pipeline):
    path = new_gallery()
    Gallery(path, pipeline, create=True).close()
    errors = []

    def work(subjects):
        try:
            with Gallery(path, pipeline) as g:
                for s in subjects:
                    g.enroll(name(s), [att(s, 2), att(s, 4)])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    # every thread enrolls s3 and s4 (the same images): each must end with 2 templates, once
    threads = [threading.Thread(target=work, args=((3, 4, extra),)) for extra in (6, 7, 8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    check_consistent(path)
    assert rows(
        path, "SELECT name, (SELECT count(*) FROM templates t WHERE t.person_id = p.id) FROM people p ORDER BY name"
    ) == [(name(s), 2) for s in (3, 4, 6, 7, 8)]


def test_the_api_creates_no_gallery_in_a_file_another_user_owns_or_may_change(tmp_path, pipeline):
    # The CLI refused to enroll into a file planted where a gallery will be made; `Gallery(path, create=True)`
    # bound it and wrote every template enrolled through the API into it, for its owner to read.
    planted = planted_gallery(tmp_path)
    with pytest.raises(ConfigError, match="owned by another user"):
        Gallery(planted, pipeline, create=True)
    assert planted.stat().st_size == 0
    os.chown(planted, os.getuid(), os.getgid())
    planted.chmod(0o600)
    with Gallery(planted, pipeline, create=True) as mine:
        assert mine.enroll("s3", [att(3, 2)]).added


def test_identify_faces_refuses_embeddings_that_are_not_unit_vectors(tmp_path, pipeline):
    # `Gallery.identify_faces` takes faces embedded elsewhere (the cache, an index, a caller's own code). A
    # vector longer than one (not normalised, a sum of several faces') scored every person at the ceiling of 1:
    # with one person enrolled, a stranger's face times three was named as them; a NaN one was "unknown".
    with Gallery(tmp_path / "one.db", pipeline, create=True) as one:
        assert one.enroll("s3", [att(3, 2)]).added
        own, stranger = pipeline.embed(att(3, 1)), pipeline.embed(att(STRANGER, 1))
        assert one.identify_faces("s3", own).faces[0].person == "s3"
        assert one.identify_faces("stranger", stranger).faces[0].person is None
        for bad, why in ((stranger.embeddings * 3, "normalised"), (stranger.embeddings * np.nan, "NaN")):
            stranger.embeddings = bad
            with pytest.raises(ConfigError, match=why):
                one.identify_faces("stranger", stranger)
        assert one.store.verify_audit().rows == 3  # the enrolment, two decisions: none for the refused ones


def test_one_image_given_alone_is_one_image_and_sources_and_max_faces_are_checked(tmp_path, pipeline):
    # `enroll("alice", "alice.jpg")` made a list of the path's letters: each one a "file not found", nothing
    # enrolled; bytes became numbers, an array its rows; fewer `sources` than images dropped the images past them. `identify(max_faces=-1)` identified every face but the
    # smallest (found[:-1]), 0 none, without a word.
    with Gallery(tmp_path / "g.db", pipeline, create=True) as g:
        assert [a.source for a in g.enroll("s3", str(att(3, 2))).added] == [str(att(3, 2))]
        assert len(g.enroll("s4", att(4, 2).read_bytes()).added) == 1
        assert len(g.enroll("s5", att_rgb(5, 2)).added) == 1
        assert len(g.enroll("s6", [att(6, 2), att(6, 3)]).added) == 2  # a list is still a list
        with pytest.raises(ConfigError, match="one source per image"):  # the images past the last source were dropped
            g.enroll("s7", [att(7, 2), att(7, 3)], sources=["first"])
        for bad in (0, -1):
            with pytest.raises(ConfigError, match="max_faces"):
                g.identify(att(3, 1), max_faces=bad)
        assert g.identify(att(3, 1), max_faces=1).faces[0].person == "s3"

"""Batches over HTTP through a real `siamface serve`: several images in /v1/identify's field `images` and in
/v1/embed, answered per image in order; an unreadable image or one without a face gets its own error while
the others are answered; the count limit (413); who may have embeddings; the OpenAPI document says so."""

from __future__ import annotations

import numpy as np
import pytest
from service_support import Server, fixture_bytes, images, png_bytes, probe, require_service

require_service()

PEOPLE = (3, 5, 7)
CORRUPT = ("images", "corrupt.jpg", b"\xff\xd8\xff\xe0 not a jpeg at all" * 20)
BLANK = ("images", "blank.png", png_bytes(np.full((120, 120, 3), 200, np.uint8)))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("batch") / "people.db", "--liveness", "off", "--min-size", "40")
    try:
        for s in PEOPLE:
            answer = srv.request("POST", "/v1/people", fields={"name": f"s{s}"}, files=images(s, 2, 3))
            assert answer.status == 201, answer.body
        srv.recognise = srv.new_key("recognise", "door")
        srv.enrol = srv.new_key("enrol", "desk")
        yield srv
    finally:
        srv.stop()


def probes(*subjects: int) -> list[tuple[str, str, bytes]]:
    return [("images", f"s{s}-1.pgm", fixture_bytes(s, 1)) for s in subjects]


def test_identify_answers_each_image_in_order_and_a_corrupt_one_fails_alone(server):
    files = probes(3) + [CORRUPT] + probes(5) + [BLANK] + probes(7)
    answer = server.request("POST", "/v1/identify", key=server.recognise, files=files)
    assert answer.status == 200, answer.body
    results = answer.body["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert [r["faces"][0]["person"] for r in (results[0], results[2], results[4])] == ["s3", "s5", "s7"]
    assert (results[1]["status"], results[1]["error"]) == (400, "bad-image")
    assert "corrupt.jpg" in results[1]["probe"] and "faces" not in results[1]
    assert (results[3]["status"], results[3]["error"]) == (422, "no-face")
    # each good item is the single-image answer of that image
    single = server.request("POST", "/v1/identify", key=server.recognise, files=probe(5))
    assert single.status == 200
    assert results[2]["faces"] == single.body["faces"] and results[2]["size"] == single.body["size"]


def test_a_single_image_client_gets_the_answer_it_always_got_and_two_image_parts_are_refused(server):
    one = server.request("POST", "/v1/identify", key=server.recognise, files=probe(7))
    assert one.status == 200 and "results" not in one.body
    assert {"faces", "probe", "size", "truncated", "faces_found"} <= set(one.body)
    assert one.body["faces"][0]["person"] == "s7"
    # a second `image` part used to be ignored silently: the client now learns it sent a batch the wrong way
    two = server.request("POST", "/v1/identify", key=server.recognise, files=probe(7) + probe(3))
    assert (two.status, two.error) == (400, "bad-request") and "'images'" in two.body["detail"]
    both = server.request("POST", "/v1/identify", key=server.recognise, files=probe(7) + probes(3))
    assert (both.status, both.error) == (400, "bad-request")


def test_more_images_than_the_limit_are_refused_with_413_before_any_work(server):
    limit = server.service.settings.max_batch_images
    files = probes(3) * (limit + 1)
    for path, key in (("/v1/identify", server.recognise), ("/v1/embed", server.key)):
        answer = server.request("POST", path, key=key, files=files)
        assert (answer.status, answer.error) == (413, "too-many-images"), answer.body
        assert str(limit) in answer.body["detail"]
    assert server.request("POST", "/v1/embed", files=probes(3) * limit).status == 200


def test_embeddings_go_to_admin_keys_only(server):
    for key in (server.recognise, server.enrol):
        answer = server.request("POST", "/v1/embed", key=key, files=probes(3))
        assert (answer.status, answer.error) == (403, "forbidden-role"), answer.body
        assert "admin" in answer.body["detail"]


def test_embed_gives_each_image_its_faces_and_the_embeddings_one_image_alone_gets(server):
    from siamface.image import load_image

    answer = server.request("POST", "/v1/embed", files=probes(3, 5) + [CORRUPT] + probes(7))
    assert answer.status == 200, answer.body
    body = answer.body
    pipeline = server.service.pipeline
    assert (
        body["model"] == pipeline.encoder.info.name and body["embedding_size"] == pipeline.encoder.info.embedding_size
    )
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    assert (results[2]["status"], results[2]["error"]) == (400, "bad-image") and "faces" not in results[2]
    for item, subject in zip((results[0], results[1], results[3]), (3, 5, 7)):
        assert item["faces_found"] == len(item["faces"]) == 1
        alone = pipeline.embed(load_image(fixture_bytes(subject, 1)))
        got = np.array(item["faces"][0]["embedding"], np.float32)
        assert got.shape == (body["embedding_size"],)
        np.testing.assert_allclose(got, alone.embeddings[0], atol=1e-5)
    a, b = (np.array(results[i]["faces"][0]["embedding"]) for i in (0, 1))
    assert float(a @ b) < 0.9  # two people, two templates


def test_the_openapi_document_states_the_batch_forms_and_limits(server):
    doc = server.request("GET", "/openapi.json", key=None).body
    limit = server.service.settings.max_batch_images
    schemas = doc["components"]["schemas"]
    ident = next(v for k, v in schemas.items() if k.startswith("Body_identify"))
    embed = next(v for k, v in schemas.items() if k.startswith("Body_embed"))
    arrays = [
        b
        for b in ident["properties"]["images"].get("anyOf", [ident["properties"]["images"]])
        if b.get("type") == "array"
    ]
    assert arrays and arrays[0]["maxItems"] == limit and arrays[0]["minItems"] == 1
    assert ident["oneOf"] == [{"required": ["image"]}, {"required": ["images"]}]
    assert embed["properties"]["images"]["maxItems"] == limit and embed["required"] == ["images"]
    operation = doc["paths"]["/v1/embed"]["post"]
    assert "413" in operation["responses"] and "admin" in operation["summary"]
    assert "results" in doc["paths"]["/v1/identify"]["post"]["description"]
    assert f"at most {limit} images" in doc["info"]["description"]

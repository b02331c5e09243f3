"""The service's 1:N threshold is set by FPIR for the gallery's size now (issue 27): it follows people enrolled
and removed, every answer says the target, the size and the threshold, and a client may narrow the
server's target but never widen it."""

from __future__ import annotations

import pytest
from service_support import PEOPLE, images, probe, require_service, role_server

require_service()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = role_server(tmp_path_factory.mktemp("fpir"), 5, 60)
    yield srv
    srv.stop()


def _identify(server, subject: int, **fields):
    answer = server.request("POST", "/v1/identify", key=server.recognise, files=probe(subject), fields=fields)
    assert answer.status == 200, answer.body
    return answer.body


def test_identify_says_the_policy_and_a_stranger_is_unknown(server):
    stranger = _identify(server, 10)
    assert stranger["fpir"] == 0.01
    assert stranger["gallery_size"] == {"people": len(PEOPLE), "templates": 3 * len(PEOPLE)}
    assert stranger["threshold_source"].startswith(f"FPIR 0.01 for {len(PEOPLE)} people")
    assert [f["status"] for f in stranger["faces"]] == ["unknown"]
    assert _identify(server, 4)["faces"][0]["person"] == "s4"


def test_a_client_may_narrow_the_fpir_target_never_widen_it(server):
    policy = _identify(server, 10)
    wider = _identify(server, 10, fpir="0.5")
    assert (wider["fpir"], wider["threshold"]) == (policy["fpir"], policy["threshold"])
    narrower = _identify(server, 10, fpir="0.0001")
    assert narrower["fpir"] == 0.0001 and narrower["threshold"] > policy["threshold"]
    refused = server.request("POST", "/v1/identify", key=server.recognise, files=probe(10), fields={"fpir": "1.5"})
    assert refused.status == 422


def test_the_threshold_follows_people_enrolled_and_removed(server):
    """(At a target strict enough to be above the 1:1 threshold, its floor, for any model at these sizes.)"""
    strict = {"fpir": "0.0001"}
    before = _identify(server, 10, **strict)
    added = server.request("POST", "/v1/people", fields={"name": "s10"}, files=images(10, 2, 3, 4))
    assert added.status == 201, added.body
    grown = _identify(server, 10, **strict)
    assert grown["gallery_size"]["people"] == before["gallery_size"]["people"] + 1
    assert grown["threshold"] > before["threshold"] and grown["faces"][0]["person"] == "s10"
    assert server.request("DELETE", "/v1/people/s10").status == 200
    after = _identify(server, 10, **strict)
    assert after["gallery_size"] == before["gallery_size"] and after["threshold"] == before["threshold"]

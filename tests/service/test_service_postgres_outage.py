"""A PostgreSQL outage under `siamface serve` (issue 24): every request that needs the gallery is 503
`gallery-unavailable` (not 400), /v1/health is 503 "degraded" with the gallery "unreachable", and service
resumes by itself when the server is back. A real PostgreSQL server of this test's own, stopped and started
(skipped without one); a real `siamface serve` process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from service_support import require_service

require_service()
pytest.importorskip("psycopg", reason="the postgres extra is not installed (pip install -e '.[postgres]')")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gallery"))

pytestmark = pytest.mark.slow  # a PostgreSQL server

from service_support import ENROLLED, PROBE, Server, fixture_bytes  # noqa: E402


@pytest.fixture
def cluster():
    from postgres_support import Cluster, server_bin

    bindir = server_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server with pgvector found (pip install -e '.[postgres]')")
    own = Cluster(bindir)  # not the session's: this test stops it
    try:
        yield own
    finally:
        own.stop()


def test_a_postgresql_outage_is_503_and_health_says_so_then_service_resumes(cluster, tmp_path):
    url = cluster.new_database()
    srv = Server(
        url, "--liveness", "off", "--min-size", "40", keys=tmp_path / "keys.json", log=tmp_path / "s.log", process=True
    )
    probe = [("image", "p.pgm", fixture_bytes(3, PROBE))]

    def claim():
        return srv.request("POST", "/v1/verify", fields={"claim": "s3"}, files=probe)

    try:
        files = [("images", f"{i}.pgm", fixture_bytes(3, i)) for i in ENROLLED]
        assert srv.request("POST", "/v1/people", fields={"name": "s3"}, files=files).status == 201
        assert claim().body["granted"] is True
        cluster.pause()
        try:
            health = srv.request("GET", "/v1/health", key=None)
            answers = [
                claim(),
                srv.request("POST", "/v1/identify", files=probe),
                srv.request("POST", "/v1/people", fields={"name": "s4"}, files=files),
                srv.request("GET", "/v1/people"),
            ]
        finally:
            cluster.resume()
        assert health.status == 503 and (health.body["status"], health.body["gallery"]) == ("degraded", "unreachable")
        for answer in answers:
            assert (answer.status, answer.error) == (503, "gallery-unavailable"), answer.body
            assert answer.headers.get("retry-after") and "127.0.0.1" not in json.dumps(answer.body)
        assert srv.request("GET", "/v1/health", key=None).status == 200
        assert claim().body["granted"] is True  # no restart needed
    finally:
        srv.stop()
    log = (tmp_path / "s.log").read_text()
    assert "Traceback" not in log and len([line for line in log.splitlines() if "gallery-unavailable" in line]) <= 3

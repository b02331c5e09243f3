"""Attacks on the merged name rules through the real CLI that found a way round them. Each test states what the
README promises and is marked xfail(strict=True): it fails today, and turns into an XPASS (a failure of the
suite) once fixed, so the mark must then be removed."""

from __future__ import annotations

import pytest
from conftest import att, run_cli


@pytest.mark.xfail(
    strict=True,
    reason="a name that reads as an enrolled one is accepted when its look-alike letter is Latin: 'ꜱ3' (U+A731 "
    "LATIN LETTER SMALL CAPITAL S) is enrolled beside 's3' (the skeleton check misses it)",
)
def test_a_small_capital_look_alike_of_an_enrolled_name_is_refused(tmp_path):
    # README, Gallery: a new name "that could be taken for another person's (the same confusable skeleton ...)"
    # is refused.
    gallery = str(tmp_path / "people.db")
    first = run_cli("enroll", "--gallery", gallery, "--min-size", "40", "s3", str(att(3, 2)))
    assert first.returncode == 0, first.stderr
    lookalike = run_cli("enroll", "--gallery", gallery, "--min-size", "40", "\ua7313", str(att(10, 2)))
    assert lookalike.returncode != 0, lookalike.stdout
    assert "could be taken for" in lookalike.stderr

"""The documentation site: it builds strictly and offline (mkdocs, the docs extra), and two built pages render
in headless Chromium from file:// — their title, a link followed, and no request leaving the machine.

The browser part needs Debian's chromium and chromium-driver and selenium (the test extra), like the
service's browser test; it skips, saying which is missing, otherwise."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import chromium_paths

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (the docs extra)")
    pytest.importorskip("material", reason="mkdocs-material is not installed (the docs extra)")
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-f", str(ROOT / "mkdocs.yml"), "-d", out],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
    )
    assert build.returncode == 0, build.stderr
    return out


def test_reference_pages_are_generated_from_the_code(site):
    cli = (site / "reference" / "cli.html").read_text()
    for command in ("siamface verify", "siamface enroll", "siamface gallery reembed", "siamface serve"):
        assert command in cli, command
    assert "--min-size" in cli  # the option a too-small refusal names
    http = (site / "reference" / "http.html").read_text()
    assert "POST /v1/verify" in http and "GET /v1/health" in http
    python = (site / "reference" / "python.html").read_text()
    assert "siamface.Pipeline" in python and "Gallery" in python


def test_no_user_page_names_an_internal_issue_or_a_machine_path():
    pages = sorted((ROOT / "docs").rglob("*.md"))
    for page in pages:
        text = page.read_text()
        for word in ("/work/", "shared/datasets"):
            assert word not in text, f"{page.relative_to(ROOT)}: {word}"
        assert not re.search(r"issue[\s#-]*\d", text, flags=re.I), f"{page.relative_to(ROOT)}: an issue number"


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra)")
    from selenium.webdriver.chrome.service import Service as DriverService

    binary, driver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=DriverService(executable_path=driver), options=options)
    yield chrome
    chrome.quit()


def _requests(browser) -> list[str]:
    return browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")


def _local(url: str) -> bool:
    return url.startswith(("file://", "data:", "blob:", "about:")) or url.startswith(
        ("http://127.0.0.1", "http://localhost")
    )


def test_two_built_pages_render_offline(site, browser):
    from selenium.webdriver.common.by import By

    browser.get((site / "index.html").as_uri())
    assert browser.title == "siamface"  # the home page: the site's name
    assert browser.find_element(By.TAG_NAME, "h1").text == "Getting started"
    assert all(_local(u) for u in _requests(browser)), _requests(browser)
    # a link in the page's text: to the generated CLI reference
    browser.find_element(By.CSS_SELECTOR, "article a[href='reference/cli.html']").click()
    assert browser.current_url.endswith("/reference/cli.html")
    assert browser.title == "Command line - siamface"  # its title in the navigation
    assert browser.find_element(By.TAG_NAME, "h1").text == "Command line reference"
    assert "siamface verify" in browser.find_element(By.TAG_NAME, "article").text
    assert all(_local(u) for u in _requests(browser)), _requests(browser)
    severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, severe

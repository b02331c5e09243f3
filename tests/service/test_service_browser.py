"""The web page in real headless Chromium, its camera fed by a clip of a real face: enroll through the page,
then the page names the person live and grants a verification; on a server with liveness on (a grey
camera), the page drives a capture session from the camera and the claim is granted (passive), or shows the
first prompt over the mirrored video, which a recorded clip cannot follow, and is denied (active). Screenshots are kept as test artifacts.

Needs Debian's `chromium` and `chromium-driver` (``make test`` installs them when it runs as root) and
selenium (the test extra); skips, saying which is missing, otherwise."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from service_support import require_service

require_service()
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra)")
from conftest import S23_FRONTAL, S23_MOVING, att, att_rgb, camera_frame, chromium_paths, scene  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
from service_support import Server, png_bytes  # noqa: E402

pytestmark = pytest.mark.slow  # a browser, a fake camera

ARTIFACTS = Path(__file__).resolve().parents[2] / "out" / "test-artifacts"


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 10) -> None:
    """Frames (H, W, 3 RGB uint8, even sides) as a YUV4MPEG2 clip: 4:2:0, BT.601 studio range."""
    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
            y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
            u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
            v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
            half = lambda c: c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))  # noqa: E731
            f.write(b"FRAME\n")
            for plane in (y, half(u), half(v)):
                f.write(np.clip(np.rint(plane), 0, 255).astype(np.uint8).tobytes())


def face_clip(path: Path) -> None:
    """Subject 3's four AT&T photos in turn, 8 frames each, at two positions, in a 640x480 scene."""
    frames = []
    for image in (1, 2, 3, 4):
        for k in range(8):
            frames.append(scene([(att_rgb(3, image, (1.05, 0.97, 0.9)), 2.5, (180 + 4 * k, 90))]))
    write_y4m(path, frames)


@pytest.fixture(scope="module")
def browser_paths():
    return chromium_paths()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("page") / "page.db", "--liveness", "off", process=True)  # a real process
    yield srv
    srv.stop()


def chromium(browser_paths, *flags: str):
    """Headless Chromium with `flags` added."""
    from selenium.webdriver.chrome.service import Service as DriverService

    binary, driver_path = browser_paths
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        *flags,
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=DriverService(executable_path=driver_path), options=options)


def open_page(server, browser_paths, clip: Path, key: str | None = None):
    """Headless Chromium whose camera plays `clip`, on the server's page with its key (or `key`) entered."""
    browser = chromium(
        browser_paths,
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={clip}",
    )
    try:
        browser.get(server.url + "/")
        # before a key: the server tells its liveness mode to key holders only, and the page guesses none
        # (it said "off" on every server, and kept saying so when a slow answer came after the key's)
        WebDriverWait(browser, 30, poll_frequency=0.2).until(lambda b: b.find_element(By.ID, "liveness-mode").text)
        assert "not known yet" in browser.find_element(By.ID, "liveness-mode").text
        browser.find_element(By.ID, "key").send_keys(key or server.key)
        browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
        WebDriverWait(browser, 90, poll_frequency=0.2).until(
            lambda b: b.execute_script("return document.getElementById('video').videoWidth") == 640
        )
    except Exception:
        browser.quit()
        raise
    return browser


def no_errors(browser) -> None:
    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert not [e for e in errors if "favicon" not in e.get("message", "")], errors


def test_page_enrolls_then_names_the_person(server, browser_paths, tmp_path):
    clip = tmp_path / "face.y4m"
    face_clip(clip)
    browser = open_page(server, browser_paths, clip)
    wait = WebDriverWait(browser, 90, poll_frequency=0.2)
    text = lambda element_id: browser.find_element(By.ID, element_id).text  # noqa: E731
    try:
        # Before enrollment the face in view is nobody the gallery knows.
        browser.find_element(By.ID, "identify").click()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#faces li.unknown"))
        browser.find_element(By.ID, "identify").click()  # stop

        browser.find_element(By.ID, "enroll-name").send_keys("Ada")
        browser.find_element(By.ID, "enroll").click()
        wait.until(lambda b: "Enrolled Ada" in text("status") or "failed" in text("status"))
        assert "Enrolled Ada" in text("status"), text("status")
        person = server.request("GET", "/v1/people/Ada")
        assert person.status == 200 and person.body["templates"] >= 2  # frames of different photos kept

        browser.find_element(By.ID, "identify").click()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, '#faces li.known[data-person="Ada"]'))
        time.sleep(0.5)  # let the overlay draw the latest answer
        drawn = browser.execute_script(
            "const c = document.getElementById('overlay'); const d = c.getContext('2d')"
            ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
            "for (let i = 0; i < d.length; i += 4) if (d[i + 1] > 150 && d[i] < 100 && d[i + 3] > 0) n++; return n;"
        )
        assert drawn > 200, "no green box drawn over the video"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "service_page.png"
        assert browser.save_screenshot(str(shot))
        print(f"screenshot: {shot}")
        browser.find_element(By.ID, "identify").click()  # stop

        browser.find_element(By.ID, "claim").send_keys("Ada")
        browser.find_element(By.ID, "verify").click()
        wait.until(lambda b: "GRANTED" in text("verdict") or "DENIED" in text("verdict"))
        assert "GRANTED: this is Ada" in text("verdict")
        no_errors(browser)
    finally:
        browser.quit()


def test_page_shows_a_recognise_key_no_enrolment(server, browser_paths, tmp_path):
    """Issue 24: the page shows only what the key may do (GET /v1/whoami)."""
    clip = tmp_path / "face.y4m"
    face_clip(clip)
    browser = open_page(server, browser_paths, clip, key=server.new_key("recognise", "door"))
    shown = lambda element_id: browser.find_element(By.ID, element_id).is_displayed()  # noqa: E731
    try:
        WebDriverWait(browser, 30, poll_frequency=0.2).until(
            lambda b: "recognise key set" in b.find_element(By.ID, "key-state").text
        )
        assert not shown("enroll-panel") and shown("identify") and shown("verify")
        browser.find_element(By.ID, "key").send_keys(server.key)  # the admin key: enrolment appears
        browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
        WebDriverWait(browser, 30, poll_frequency=0.2).until(lambda b: shown("enroll-panel"))
        assert "admin key set" in browser.find_element(By.ID, "key-state").text
        no_errors(browser)
    finally:
        browser.quit()


def test_the_docs_page_runs_under_its_policy(server, browser_paths):
    """/docs runs only this server's Swagger UI file and its own inline start-up script (its
    Content-Security-Policy, tests/service/test_attacks_found_3.py): the page still starts, renders every
    route (the bundled Swagger UI 4 reads OpenAPI 3.0: it said "Unable to render this definition" for the
    app's 3.1 document), and the browser refuses nothing."""
    browser = chromium(browser_paths)
    text = "return document.getElementById('swagger-ui').innerText"
    try:
        browser.get(server.url + "/docs")
        WebDriverWait(browser, 60, poll_frequency=0.2).until(
            lambda b: "/v1/identify" in b.execute_script(text) or "Unable to render" in b.execute_script(text)
        )
        shown = browser.execute_script(text)
        assert "Unable to render" not in shown, shown[:300]
        assert all(path in shown for path in ("/v1/verify", "/v1/people", "/v1/liveness/sessions")), shown[:300]
        no_errors(browser)
    finally:
        browser.quit()


def test_a_page_of_another_site_that_opens_ours_keeps_no_handle_to_it(server, browser_paths):
    """A site that opens the page in a new window (window.open) used to keep a handle to it: it could navigate
    the window, once the operator had pasted a key there, to a copy of the page asking for the key again.
    With Cross-Origin-Opener-Policy: same-origin the page has no opener and the site's handle is closed. The
    other site here is the same server under another name (http://localhost:PORT: another origin)."""
    browser = chromium(browser_paths)
    try:
        browser.get(server.url.replace("127.0.0.1", "localhost") + "/docs")
        ours = browser.current_window_handle
        browser.execute_script(f"window.opened = window.open('{server.url}/', 'siamface')")
        WebDriverWait(browser, 30, poll_frequency=0.2).until(lambda b: len(b.window_handles) == 2)
        browser.switch_to.window(next(h for h in browser.window_handles if h != ours))
        WebDriverWait(browser, 30, poll_frequency=0.2).until(lambda b: b.find_element(By.ID, "key-state").text)
        assert browser.execute_script("return window.opener") is None
        browser.switch_to.window(ours)
        assert browser.execute_script("return window.opened.closed") is True  # no handle left to navigate
    finally:
        browser.quit()


def camera_clip(path: Path, names=S23_MOVING) -> None:
    """s23 in front of a grey camera, 40 frames: a head moving a little (`S23_MOVING`, or the photos `names` in
    turn), each frame with its own noise and sway (a camera never repeats itself)."""
    rng = np.random.default_rng(0)
    write_y4m(path, [camera_frame(names[i % len(names)], rng) for i in range(40)])


def page_session(browser_paths, tmp_path, mode: str, shot_name: str):
    """The page's Verify on a server with liveness `mode` and a grey camera: (verdict, evidence, prompts
    shown). s23 enrolled; the camera plays `camera_clip`."""
    srv = Server(
        tmp_path / f"{mode}.db",
        "--liveness",
        mode,
        "--camera",
        "grey",
        "--challenge-seconds",
        "20",
        "--max-frame-gap",
        "8",  # a loaded test machine: the page sends the next frame only once the last is answered
        "--min-size",
        "40",
        process=True,
    )
    clip = tmp_path / "camera.y4m"
    camera_clip(clip, S23_MOVING if mode == "passive" else S23_FRONTAL)  # active: a recording facing the camera
    browser = None
    try:
        rng = np.random.default_rng(9)
        files = [("images", f"{n}.png", png_bytes(camera_frame(n, rng))) for n in ("7", "1", "10")]
        enrolled = srv.request("POST", "/v1/people", fields={"name": "s23"}, files=files)
        assert enrolled.status == 201, enrolled.body
        browser = open_page(srv, browser_paths, clip)
        text = lambda element_id: browser.find_element(By.ID, element_id).text  # noqa: E731
        WebDriverWait(browser, 30, poll_frequency=0.2).until(lambda b: f"Liveness: {mode}" in text("liveness-mode"))
        assert browser.execute_script("return getComputedStyle(document.getElementById('video')).transform").startswith(
            "matrix(-1"
        )  # a mirrored preview
        browser.execute_script(  # every prompt the page shows, however briefly
            "window.prompts = []; const el = document.getElementById('prompt');"
            "new MutationObserver(() => window.prompts.push(el.textContent))"
            ".observe(el, {childList: true, characterData: true, subtree: true});"
        )
        browser.find_element(By.ID, "claim").send_keys("s23")
        browser.find_element(By.ID, "verify").click()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / shot_name
        shot.unlink(missing_ok=True)

        def decided(b) -> bool:
            if not shot.exists() and text("prompt"):
                b.save_screenshot(str(shot))  # the prompt over the video
            return (
                "GRANTED" in text("verdict")
                or "DENIED" in text("verdict")
                or "bad" in b.find_element(By.ID, "verdict").get_attribute("class")
            )

        WebDriverWait(browser, 120, poll_frequency=0.1).until(decided)
        prompts = set(browser.execute_script("return window.prompts"))
        assert not browser.find_element(By.ID, "prompt").is_displayed()
        no_errors(browser)
        return text("verdict"), text("evidence"), prompts
    finally:
        if browser is not None:
            browser.quit()
        srv.stop()


def test_page_waits_when_its_key_has_asked_for_its_decisions_a_minute(browser_paths, tmp_path):
    """A key below admin may ask for `--decisions-per-minute` identifications a minute: the live loop, refused
    429 `too-many-decisions`, says so and waits as the server tells it, instead of hammering it."""
    srv = Server(tmp_path / "quota.db", "--liveness", "off", "--decisions-per-minute", "2")
    clip = tmp_path / "face.y4m"
    face_clip(clip)
    try:
        browser = open_page(srv, browser_paths, clip, key=srv.new_key("recognise", "door"))
        try:
            browser.find_element(By.ID, "identify").click()
            WebDriverWait(browser, 60, poll_frequency=0.2).until(
                lambda b: "decisions a minute are used up" in b.find_element(By.ID, "status").text
            )
            assert "Identify paused for" in browser.find_element(By.ID, "status").text
            browser.find_element(By.ID, "identify").click()  # stop
        finally:
            browser.quit()
    finally:
        srv.stop()


def test_page_drives_a_passive_capture_session_then_unlocks(browser_paths, tmp_path):
    verdict, evidence, prompts = page_session(browser_paths, tmp_path, "passive", "service_page_session.png")
    assert "GRANTED: this is s23" in verdict, (verdict, evidence)
    assert "capture passed" in evidence and "look straight at the camera" in prompts


def test_page_shows_the_first_prompt_and_a_recording_cannot_follow_it(browser_paths, tmp_path):
    # the fake camera plays a recording: it cannot turn when asked, at a moment it cannot know
    verdict, evidence, prompts = page_session(browser_paths, tmp_path, "active", "service_page_challenge.png")
    assert "GRANTED" not in verdict, (verdict, evidence)
    assert [p for p in prompts if "turn your head" in p or "tilt" in p or "closer" in p], prompts


def test_page_photo_library_groups_the_folder_escapes_names_and_enrolls_a_group(browser_paths, tmp_path):
    """The photo library part: the server's folder read from the page, three groups with their thumbnails
    (fetched with the key), file names shown as text only (a name that is markup runs nothing), a group named
    from the page enrolled."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for s in (3, 4):
        for i in (1, 2):
            shutil.copy(att(s, i), folder / f"s{s}-{i}.pgm")
    shutil.copy(att(5, 1), folder / "<img src=x onerror=window.pwned=1>.pgm")
    shutil.copy(att(5, 2), folder / "<b id=bold>.pgm")
    srv = Server(tmp_path / "library.db", "--liveness", "off", "--min-size", "40", "--library", str(folder))
    clip = tmp_path / "face.y4m"
    face_clip(clip)
    browser = open_page(srv, browser_paths, clip, key=srv.new_key("enrol", "desk"))
    wait = WebDriverWait(browser, 90, poll_frequency=0.2)
    try:
        wait.until(lambda b: b.find_element(By.ID, "library-scan").is_displayed())
        browser.find_element(By.ID, "library-scan").click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#library-groups .group")) == 3)
        wait.until(
            lambda b: (
                b.execute_script(
                    "return [...document.querySelectorAll('#library-groups img')]"
                    ".filter(i => i.complete && i.naturalWidth === 96).length"
                )
                == 6
            )
        )
        titles = [i.get_attribute("title") for i in browser.find_elements(By.CSS_SELECTOR, "#library-groups img")]
        assert "<img src=x onerror=window.pwned=1>.pgm" in titles and "<b id=bold>.pgm" in titles
        assert browser.execute_script("return window.pwned === undefined && !document.getElementById('bold')")
        group = next(
            g
            for g in browser.find_elements(By.CSS_SELECTOR, "#library-groups .group")
            if {i.get_attribute("title") for i in g.find_elements(By.TAG_NAME, "img")} == {"s3-1.pgm", "s3-2.pgm"}
        )
        group.find_element(By.TAG_NAME, "input").send_keys("Grace")
        group.find_element(By.TAG_NAME, "button").click()
        wait.until(
            lambda b: (
                "Enrolled" in b.find_element(By.ID, "library-status").text
                or "Not" in b.find_element(By.ID, "library-status").text
            )
        )
        assert "Enrolled Grace" in browser.find_element(By.ID, "library-status").text
        assert srv.request("GET", "/v1/people/Grace").status == 200
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(ARTIFACTS / "service_page_library.png"))
        no_errors(browser)
    finally:
        browser.quit()
        srv.stop()

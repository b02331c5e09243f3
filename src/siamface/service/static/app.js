// siamface web page: the camera in the browser, the API of the server that sent this page.
// No framework, no build step, nothing loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const video = $("video");
const overlay = $("overlay");
const ctx = overlay.getContext("2d");
const grab = document.createElement("canvas");
const MAX_SIDE = 640;          // frames are sent at most this wide/high
const IDENTIFY_EVERY_MS = 300;
const ENROLL_FRAMES = 5;
const ENROLL_GAP_MS = 500;
const VERIFY_DENIALS = 3;      // stop before the server's lock-out (5 failures)
const VERIFY_TIMEOUT_MS = 10000;
const CHALLENGE_EVERY_MS = 150; // liveness session: a frame this often, one request in flight at a time
const COLOURS = { known: "#22c55e", ambiguous: "#eab308", unknown: "#ef4444" };

let identifying = false;
let busy = false;
let livenessMode = "unknown";  // the server's, from /v1/health (told to key holders only)

// -- key -----------------------------------------------------------------------------------------------
function apiKey() { return sessionStorage.getItem("siamface-key") || ""; }

function showKeyState(role) {
  $("key-state").textContent = !apiKey() ? "no key"
    : role ? `${role} key set (this tab only)` : "key set (this tab only)";
}

// Show only what the key may do (GET /v1/whoami): an enrol panel for enrol and admin keys only.
async function readRole() {
  let may = {};
  if (apiKey()) {
    try {
      const response = await fetch("/v1/whoami", { headers: { "Authorization": "Bearer " + apiKey() } });
      const body = await response.json();
      if (response.ok) {
        may = body.may || {};
        showKeyState(body.role);
      } else {
        $("key-state").textContent = `key refused (${body.error || response.status})`;
      }
    } catch (err) {
      showKeyState();
    }
  }
  for (const el of document.querySelectorAll("[data-needs]")) {
    el.hidden = el.dataset.needs !== "recognise" && !may[el.dataset.needs];
  }
  if (may.enrol) showLibrary();
}

$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  sessionStorage.setItem("siamface-key", $("key").value.trim());
  $("key").value = "";
  showKeyState();
  await readRole();
  await readServer();  // the liveness mode is told to key holders only
  status("Key kept for this tab.");
});

// -- helpers -------------------------------------------------------------------------------------------
function status(text, kind) {
  const el = $("status");
  el.textContent = text;
  el.className = kind || "";
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function api(path, form) {
  const response = await fetch(path, {
    method: "POST", body: form, headers: { "Authorization": "Bearer " + apiKey() },
  });
  let body = {};
  try { body = await response.json(); } catch (e) { body = { error: "bad-answer", detail: "not JSON" }; }
  $("answer").textContent = JSON.stringify(body, null, 2);
  const retry = Number(response.headers.get("Retry-After")) || 0;
  return { status: response.status, ok: response.ok, body, retry };
}

function problem(answer) {
  const b = answer.body;
  return `${b.error || answer.status}: ${b.detail || ""}`;
}

// One camera frame as a JPEG blob, and the scale from the video's pixels to the frame's.
function frame() {
  const w = video.videoWidth, h = video.videoHeight;
  const scale = Math.min(1, MAX_SIDE / Math.max(w, h));
  grab.width = Math.round(w * scale);
  grab.height = Math.round(h * scale);
  grab.getContext("2d").drawImage(video, 0, 0, grab.width, grab.height);
  return new Promise((resolve) => grab.toBlob((blob) => resolve({ blob, scale }), "image/jpeg", 0.92));
}

function clearOverlay() { ctx.clearRect(0, 0, overlay.width, overlay.height); }

function draw(faces, scale) {
  overlay.width = video.videoWidth;
  overlay.height = video.videoHeight;
  clearOverlay();
  ctx.lineWidth = Math.max(2, overlay.width / 240);
  ctx.font = `${Math.max(14, overlay.width / 32)}px sans-serif`;
  for (const face of faces) {
    const [bx1, y1, bx2, y2] = face.box.map((v) => v / scale);
    const x1 = overlay.width - bx2, x2 = overlay.width - bx1;  // the preview is mirrored, the frames are not
    const colour = COLOURS[face.status] || COLOURS.unknown;
    const label = face.similarity == null ? face.person : `${face.person} ${face.similarity.toFixed(2)}`;
    ctx.strokeStyle = colour;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const width = ctx.measureText(label).width + 8;
    const height = parseInt(ctx.font, 10) + 6;
    ctx.fillStyle = colour;
    ctx.fillRect(x1, Math.max(0, y1 - height), width, height);
    ctx.fillStyle = "#000";
    ctx.fillText(label, x1 + 4, Math.max(height - 6, y1 - 6));
  }
}

function listFaces(faces) {
  const list = $("faces");
  list.replaceChildren(...faces.map((face) => {
    const item = document.createElement("li");
    item.className = face.status;
    item.dataset.person = face.person;
    const live = face.liveness ? (face.liveness.live ? ", live" : ", NOT live") : "";
    item.textContent = `${face.person} (${face.status}${face.similarity == null ? "" : ", " +
      face.similarity.toFixed(3)}${live})`;
    return item;
  }));
}

// -- server --------------------------------------------------------------------------------------------
const LIVENESS_HELP = {
  unknown: "Liveness: not known yet (the server tells it to key holders: enter a key).",
  unreachable: "Liveness: not known (the server did not answer; reload the page).",
  off: "Liveness: off on this server.",
  passive: "Liveness: passive. Verify films you for a moment; every frame must look live.",
  active: "Liveness: active. Verify asks you to move your head; follow the prompt over the video.",
  both: "Liveness: active and passive. Verify asks you to move your head; follow the prompt over the video.",
};

let serverReads = 0;  // the latest readServer call wins: an earlier, slower answer (say, the keyless one) is dropped

async function readServer() {
  const mine = ++serverReads;
  let mode;
  try {
    const response = await fetch("/v1/health", apiKey() ? { headers: { "Authorization": "Bearer " + apiKey() } } : {});
    // no key (or a key refused): the answer has no mode, and the page does not guess one
    mode = (await response.json()).liveness || "unknown";
  } catch (err) {
    mode = "unreachable";
  }
  if (mine !== serverReads) return;
  livenessMode = mode;
  $("liveness-mode").textContent = LIVENESS_HELP[livenessMode] || `Liveness: ${livenessMode}.`;
}

// -- camera --------------------------------------------------------------------------------------------
async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    status("This browser gives no camera here (the page needs https or localhost).", "bad");
    return;
  }
  try {
    video.srcObject = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false,
    });
    await video.play();
    status(apiKey() ? "Camera on." : "Camera on. Enter your API key to start.");
  } catch (err) {
    status(`No camera: ${err.name} (${err.message})`, "bad");
  }
}

function cameraReady() {
  if (!video.videoWidth) { status("The camera is not ready yet.", "bad"); return false; }
  if (!apiKey()) { status("Enter an API key first.", "bad"); return false; }
  return true;
}

// -- enroll --------------------------------------------------------------------------------------------
$("enroll-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("enroll-name").value.trim();
  if (!name || !cameraReady() || busy) return;
  busy = true;
  try {
    const form = new FormData();
    form.append("name", name);
    for (let i = 0; i < ENROLL_FRAMES; i++) {
      status(`Capturing frame ${i + 1} of ${ENROLL_FRAMES}…`);
      const { blob } = await frame();
      form.append("images", blob, `frame${i + 1}.jpg`);
      await sleep(ENROLL_GAP_MS);
    }
    status("Enrolling…");
    let answer = await api("/v1/people", form);
    if (answer.status === 409 && answer.body.error === "person-exists") {  // the name is taken: add these faces
      const more = new FormData();
      for (const image of form.getAll("images")) more.append("images", image, image.name);
      answer = await api(`/v1/people/${encodeURIComponent(name)}/faces`, more);
    }
    if (answer.ok) {
      const r = answer.body;
      const how = r.created ? "new person" : "added to the existing person";
      status(`Enrolled ${r.person} (${how}): ${r.added.length} frame(s) kept, ${r.rejected.length} refused, ` +
             `${r.templates_total} template(s) in all.`, "good");
    } else {
      status(`Enrollment failed — ${problem(answer)}`, "bad");
    }
  } catch (err) {
    status(`Enrollment failed: ${err.message}`, "bad");
  } finally {
    busy = false;
  }
});

// -- identify live ----------------------------------------------------------------------------------------
async function identifyLoop() {
  while (identifying) {
    const started = performance.now();
    try {
      const { blob, scale } = await frame();
      const form = new FormData();
      form.append("image", blob, "frame.jpg");
      const answer = await api("/v1/identify", form);
      if (!identifying) break;
      if (answer.ok) {
        draw(answer.body.faces, scale);
        listFaces(answer.body.faces);
        status(`${answer.body.faces.length} face(s).`);
      } else if (answer.body.error === "no-face") {
        clearOverlay();
        listFaces([]);
        status("No face in view.");
      } else if (answer.body.error === "too-many-decisions") {
        status(`Identify paused for ${answer.retry} s: this key's decisions a minute are used up.`, "bad");
        await sleep(answer.retry * 1000);
      } else {
        status(`Identify — ${problem(answer)}`, "bad");
        if (answer.status === 401 || answer.status === 403) stopIdentify();
      }
    } catch (err) {
      status(`Identify: ${err.message}`, "bad");
    }
    await sleep(Math.max(0, IDENTIFY_EVERY_MS - (performance.now() - started)));
  }
}

function stopIdentify() {
  identifying = false;
  $("identify").textContent = "Start";
}

$("identify").addEventListener("click", () => {
  if (identifying) { stopIdentify(); clearOverlay(); return; }
  if (!cameraReady()) return;
  identifying = true;
  $("identify").textContent = "Stop";
  identifyLoop();
});

// -- verify ----------------------------------------------------------------------------------------------
function verdictIs(text, kind) {
  $("verdict").textContent = text;
  $("verdict").className = kind || "";
}

function livenessText(liveness) {
  if (!liveness) return "";
  if (!liveness.mode) return liveness.live ? "live" : "NOT live";           // passive only
  const parts = [];
  const a = liveness.session;
  if (a) {
    const what = a.challenges && a.challenges.length ? `challenge ${a.challenges.join(" then ")}` : "capture";
    let text = `${what} ${a.passed ? "passed" : "failed"}`;
    text += a.passed ? ` (parallax ${a.parallax.toFixed(2)})` : ` (${a.reason})`;
    if (a.same_person === false) text += ", but another face answered it";
    parts.push(text);
  }
  if (liveness.passive) {
    const passive = liveness.passive;  // the exact score is shown to admin keys only
    const value = typeof passive.score === "number" ? `${passive.score.toFixed(2)}, ` : "";
    parts.push(`passive ${value}${passive.live ? "live" : "NOT live"}`);
  }
  return "Liveness: " + parts.join("; ") + ".";
}

// A recognise key's answers carry no score: then only whether the face matched.
function scoreText(r) {
  if (typeof r.score !== "number") return r.accepted ? "the face matches" : "the face does not match";
  return `score ${r.score.toFixed(3)} ${r.accepted ? "≥" : "<"} ${r.threshold.toFixed(3)}`;
}

function showVerification(r, scale) {
  draw([{ box: r.box, person: r.claim, status: r.granted ? "known" : "unknown", similarity: r.score }], scale);
  $("evidence").textContent = livenessText(r.liveness);
  const score = scoreText(r);
  if (r.granted) verdictIs(`GRANTED: this is ${r.claim} (${score})`, "good");
  else verdictIs(`DENIED: ${r.notes.length ? r.notes[r.notes.length - 1] : "not recognised as " + r.claim} (${score})`,
                 "bad");
}

async function verifyClaim(claim, session) {
  const { blob, scale } = await frame();
  const form = new FormData();
  form.append("claim", claim);
  form.append("image", blob, "frame.jpg");
  if (session) form.append("liveness_session", session);
  return { answer: await api("/v1/verify", form), scale };
}

// Liveness off: frames until one is granted, or 3 denials, or the timeout.
async function verifyFrames(claim) {
  let denials = 0;
  const deadline = performance.now() + VERIFY_TIMEOUT_MS;
  while (performance.now() < deadline) {
    verdictIs(`Checking ${claim}…`);
    const { answer, scale } = await verifyClaim(claim, null);
    if (answer.ok) {
      const r = answer.body;
      if (r.granted) { showVerification(r, scale); return; }
      draw([{ box: r.box, person: r.claim, status: "unknown", similarity: r.score }], scale);
      denials += 1;
      verdictIs(`Denied ${denials}/${VERIFY_DENIALS} (${scoreText(r)})` +
                `${r.liveness && !r.liveness.live ? ", not live" : ""}`);
      if (denials >= VERIFY_DENIALS) break;
    } else if (answer.body.error !== "no-face") {
      verdictIs(problem(answer), "bad");
      return;
    }
    await sleep(IDENTIFY_EVERY_MS);
  }
  verdictIs(`DENIED: not recognised as ${claim}.`, "bad");
}

// The prompt over the (mirrored) video, with an arrow the way the user should turn.
function prompt(text) {
  const el = $("prompt");
  el.hidden = !text;
  el.textContent = !text ? "" : /\bleft\b/.test(text) ? `← ${text}` : /\bright\b/.test(text) ? `${text} →` : text;
}

// Liveness on: a capture session for the claim, fed camera frames until it is decided (its prompts, if any,
// come one at a time), then the claim with its id.
async function verifySession(claim) {
  verdictIs("Starting the liveness capture…");
  const opening = new FormData();
  opening.append("claim", claim);
  let answer = await api("/v1/liveness/sessions", opening);
  if (!answer.ok) { verdictIs(problem(answer), "bad"); return; }
  let session = answer.body;
  const path = `/v1/liveness/sessions/${encodeURIComponent(session.session_id)}/frames`;
  const deadline = performance.now() + 1000 * session.expires_in;
  try {
    while (session.state === "pending" && performance.now() < deadline) {
      const started = performance.now();
      const form = new FormData();
      form.append("image", (await frame()).blob, "frame.jpg");
      answer = await api(path, form);
      if (answer.ok) {
        session = answer.body;
        prompt(session.prompt);
      } else if (answer.body.error === "no-face" && answer.body.session) {
        session = answer.body.session;
        prompt(`No face in view: ${session.prompt}`);
      } else {
        verdictIs(problem(answer), "bad");
        return;
      }
      verdictIs(session.mode === "active" ? `Liveness: ${session.completed} done…` : "Liveness: hold still…");
      await sleep(Math.max(0, CHALLENGE_EVERY_MS - (performance.now() - started)));
    }
  } finally {
    prompt("");
  }
  if (session.state === "pending") { verdictIs("DENIED: the liveness capture ran out of time.", "bad"); return; }
  verdictIs(`Liveness ${session.state}; checking ${claim}…`);
  const verified = await verifyClaim(claim, session.session_id);
  if (verified.answer.ok) showVerification(verified.answer.body, verified.scale);
  else verdictIs(problem(verified.answer), "bad");
}

$("verify-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const claim = $("claim").value.trim();
  if (!claim || !cameraReady() || busy) return;
  busy = true;
  $("evidence").textContent = "";
  try {
    if (livenessMode === "unknown" || livenessMode === "unreachable") await readServer();
    if (livenessMode === "unknown" || livenessMode === "unreachable") {
      verdictIs("Verify needs the server's liveness mode: enter a key (or reload the page).", "bad");
    } else if (livenessMode !== "off") await verifySession(claim);
    else await verifyFrames(claim);
  } catch (err) {
    verdictIs(`Verify failed: ${err.message}`, "bad");
  } finally {
    busy = false;
  }
});

// -- photo library (enrol keys) ------------------------------------------------------------------------
// Every name and file name goes into the page as text (textContent, alt, title), never as markup; the
// thumbnails are fetched with the key and shown from blob URLs, and never cached (the server says no-store).
const LIBRARY_THUMBS = 12;     // thumbnails shown per group
let libraryUrls = [];

async function request(method, path, form) {
  const response = await fetch(path, {
    method, body: form, cache: "no-store", headers: { "Authorization": "Bearer " + apiKey() },
  });
  let body = {};
  try { body = await response.json(); } catch (e) { body = { error: "bad-answer", detail: "not JSON" }; }
  return { status: response.status, ok: response.ok, body };
}

function libraryStatus(text, kind) {
  $("library-status").textContent = text;
  $("library-status").className = kind || "muted";
}

async function thumbnail(face) {
  const img = document.createElement("img");
  img.alt = face.file;
  img.title = face.file;
  const response = await fetch(`/v1/library/faces/${encodeURIComponent(face.id)}/thumbnail`, {
    cache: "no-store", headers: { "Authorization": "Bearer " + apiKey() },
  });
  if (response.ok) {
    const url = URL.createObjectURL(await response.blob());
    libraryUrls.push(url);
    img.src = url;
  }
  return img;
}

async function libraryRow(title, faces, group, version) {
  const row = document.createElement("div");
  row.className = "group";
  const heading = document.createElement("h3");
  const more = faces.length > LIBRARY_THUMBS ? `, ${faces.length - LIBRARY_THUMBS} more not shown` : "";
  heading.textContent = `${title}: ${faces.length} face(s)${more}`;
  row.append(heading);
  row.append(...await Promise.all(faces.slice(0, LIBRARY_THUMBS).map(thumbnail)));
  if (group !== null) {
    const form = document.createElement("form");
    const name = document.createElement("input");
    name.placeholder = "name this person";
    name.required = true;
    name.maxLength = 200;
    const button = document.createElement("button");
    button.type = "submit";
    button.textContent = "Enroll";
    form.append(name, button);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = new FormData();
      data.append("name", name.value.trim());
      data.append("version", String(version));
      const answer = await request("POST", `/v1/library/groups/${group}/enroll`, data);
      $("answer").textContent = JSON.stringify(answer.body, null, 2);
      if (answer.ok) {
        libraryStatus(`Enrolled ${answer.body.person}: ${answer.body.added.length} face(s) kept, ` +
                      `${answer.body.rejected.length} refused.`, "good");
      } else {
        libraryStatus(`Not enrolled — ${problem(answer)}`, "bad");
      }
    });
    row.append(form);
  }
  return row;
}

async function showLibrary() {
  const answer = await request("GET", "/v1/library");
  if (!answer.ok) { libraryStatus(`Library — ${problem(answer)}`, "bad"); return; }
  const view = answer.body;
  $("library-scan").hidden = !view.folder;
  for (const url of libraryUrls) URL.revokeObjectURL(url);
  libraryUrls = [];
  const rows = [];
  for (const cluster of view.clusters) {
    rows.push(await libraryRow(`group ${cluster.id}`, cluster.faces, cluster.id, view.version));
  }
  if (view.unclustered.length) rows.push(await libraryRow("alone", view.unclustered, null, view.version));
  $("library-groups").replaceChildren(...rows);
  const errors = view.errors.length ? `; ${view.errors.length} file(s) not read` : "";
  libraryStatus(`${view.faces} face(s) in ${view.files} photo(s): ${view.clusters.length} group(s), ` +
                `${view.unclustered.length} alone${errors}.`);
}

$("library-scan").addEventListener("click", async () => {
  let answer;
  do {
    libraryStatus("Reading the server's folder…");
    answer = await request("POST", "/v1/library/scan");
    if (!answer.ok) { libraryStatus(`Reading the folder — ${problem(answer)}`, "bad"); return; }
    libraryStatus(`Read ${answer.body.read}, ${answer.body.left} left…`);
  } while (!answer.body.done);
  await showLibrary();
});

$("library-upload").addEventListener("submit", async (event) => {
  event.preventDefault();
  const files = $("library-files").files;
  if (!files.length) return;
  const form = new FormData();
  for (const file of files) form.append("images", file, file.name);
  libraryStatus("Adding photos…");
  const answer = await request("POST", "/v1/library/photos", form);
  if (!answer.ok) { libraryStatus(`Adding photos — ${problem(answer)}`, "bad"); return; }
  await showLibrary();
});

$("library-show").addEventListener("click", showLibrary);
$("library-forget").addEventListener("click", async () => {
  await request("DELETE", "/v1/library");
  await showLibrary();
});

showKeyState();
readRole();
readServer();
startCamera();

// The draw-a-digit page: draws on #canvas, sends its pixels (a .npy: no image encoding, see drawingBody)
// or an uploaded file (drawn scaled into the pad) to POST /api/predict, and shows the digit, the ten
// probabilities and the 28x28 input the model saw. At most one request is in
// flight; newer work waits in a single slot, and answers from before a Clear or an upload are dropped.
// With an answer shown, "Right" / "Wrong? It is: 0..9" send that 28x28 and the label to POST /api/feedback
// (when the site takes feedback without a token: GET /api/feedback/status).
"use strict";

const STROKE = 20;           // px on the 280-px pad: MNIST-like strokes once the digit is fitted to 20x20
const DEBOUNCE_MS = 200;     // predict this long after the last pointer move (and at once on pointerup)
const STATUS_EVERY_MS = 5000;
const SERVER_KINDS = new Set(["server_down", "no_model", "app_down"]);
const APP_DOWN = "This page has lost touch with its server. Check that the demo is still running; the page " +
                 "carries on by itself once it is back.";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas"), ctx = canvas.getContext("2d", { willReadFrequently: true });
const preview = $("preview"), previewCtx = preview.getContext("2d");

let hasInk = false, drawing = false, last = null, debounce = null, uploadShown = false;
let epoch = 0;               // bumped by Clear and uploads: answers to older requests are stale
let inFlight = false, queued = null, serverTrouble = false;
let feedbackOn = false;      // the site takes labels from this page
let shownAnswer = null;      // { image, answer, model_version } of the answer on screen, for feedback

// ---- messages and display -------------------------------------------------------------------

function showMessage(kind, text, detail) {
  const message = $("message");
  message.textContent = text;
  message.title = detail || "";  // the precise cause, for whoever runs the app
  message.dataset.kind = kind;
  message.hidden = false;
}

function clearMessage(kinds) {
  const message = $("message");
  if (message.hidden || (kinds && !kinds.has(message.dataset.kind))) return;
  message.hidden = true;
  message.textContent = "";
  message.title = "";
  delete message.dataset.kind;
}

function buildChart() {
  const list = $("probabilities");
  for (let d = 0; d < 10; d++) {
    const item = document.createElement("li");
    item.dataset.digit = String(d);
    item.dataset.probability = "";
    item.innerHTML = `<span class="label">${d}</span><span class="bar"><span class="fill"></span></span>` +
                     `<span class="value">–</span>`;
    list.appendChild(item);
  }
}

function resetResult() {
  $("digit").textContent = "–";
  $("digit").dataset.digit = "";
  $("source").textContent = "";
  for (const item of $("probabilities").children) {
    item.dataset.probability = "";
    item.classList.remove("top");
    item.querySelector(".fill").style.width = "0";
    item.querySelector(".value").textContent = "–";
    item.setAttribute("aria-label", `${item.dataset.digit}: no prediction`);
  }
  previewCtx.fillStyle = "#000";
  previewCtx.fillRect(0, 0, 28, 28);
  delete preview.dataset.input;
  shownAnswer = null;
  $("feedback").hidden = true;
}

function showModel(model) {
  $("model-name").textContent = model.name;
  $("model-version").textContent = String(model.version);
}

function showPrediction(answer, source) {
  $("digit").textContent = String(answer.digit);
  $("digit").dataset.digit = String(answer.digit);
  $("source").textContent = source;
  for (const item of $("probabilities").children) {
    const p = answer.probabilities[Number(item.dataset.digit)];
    item.dataset.probability = String(p);
    item.classList.toggle("top", Number(item.dataset.digit) === answer.digit);
    item.querySelector(".fill").style.width = `${(p * 100).toFixed(1)}%`;
    item.querySelector(".value").textContent = `${(p * 100).toFixed(1)}%`;
    item.setAttribute("aria-label", `${item.dataset.digit}: ${(p * 100).toFixed(1)} percent`);
  }
  const pixels = previewCtx.createImageData(28, 28);
  answer.input.flat().forEach((v, i) => {
    const g = Math.max(0, Math.min(255, Math.round(v)));
    pixels.data.set([g, g, g, 255], i * 4);
  });
  previewCtx.putImageData(pixels, 0, 0);
  preview.dataset.input = JSON.stringify(answer.input);  // the exact numbers the model saw
  showModel(answer.model);
  shownAnswer = { image: answer.input, answer: answer.digit, model_version: answer.model.version };
  showFeedback();
}

// ---- feedback: the person's label for the answer on screen -----------------------------------------

function buildFeedback() {
  const wrong = $("wrong");
  for (let d = 0; d < 10; d++) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.label = String(d);
    button.textContent = String(d);
    button.setAttribute("aria-label", `It is ${d}`);
    button.addEventListener("click", () => sendFeedback(d));
    wrong.appendChild(button);
  }
  $("right").addEventListener("click", () => { if (shownAnswer) sendFeedback(shownAnswer.answer); });
}

function feedbackButtons() {
  return [$("right"), ...$("wrong").children];
}

function showFeedback() {
  const box = $("feedback");
  box.hidden = !feedbackOn;
  box.dataset.state = "ready";
  $("feedback-status").textContent = "";
  for (const button of feedbackButtons()) button.disabled = false;
  const same = $("wrong").querySelector(`[data-label="${shownAnswer.answer}"]`);
  if (same) same.disabled = true;  // "wrong, it is what the model said" is "Right"
}

async function sendFeedback(label) {
  const sent = shownAnswer;
  if (!sent) return;
  const box = $("feedback"), status = $("feedback-status");
  for (const button of feedbackButtons()) button.disabled = true;
  box.dataset.state = "sending";
  status.textContent = "Saving…";
  let state = "failed", text = "Your answer could not be sent. Please try again.";
  try {
    const response = await fetch("/api/feedback", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ image: sent.image, label, answer: sent.answer, model_version: sent.model_version }) });
    const answer = await response.json();
    text = answer.message;
    if (response.ok) state = "saved";
    else if (response.status === 401 || response.status === 403) feedbackOn = false;
  } catch (error) { /* the site is unreachable: the text above says to try again */ }
  if (sent !== shownAnswer) return;  // a newer answer is on screen
  box.dataset.state = state;
  status.textContent = text;
  if (state === "failed") showFeedbackAgain(text);
}

function showFeedbackAgain(text) {
  if (!feedbackOn) { $("feedback").hidden = true; return; }
  showFeedback();
  $("feedback").dataset.state = "failed";
  $("feedback-status").textContent = text;
}

async function checkFeedback() {
  try {
    const response = await fetch("/api/feedback/status");
    const status = await response.json();
    feedbackOn = response.ok && status.enabled && !status.token_required;  // the page cannot know a token
  } catch (error) {
    feedbackOn = false;
  }
  if (shownAnswer) $("feedback").hidden = !feedbackOn;
}

// ---- requests: one in flight, the latest job waiting ------------------------------------------

function request(job) {
  if (inFlight) { queued = job; return; }
  run(job);
}

async function run(job) {
  inFlight = true;
  document.body.dataset.busy = "true";  // tests (and styles) can tell when the page has settled
  const sent = epoch;
  try {
    const { body, name, upload } = await job();
    const response = await fetch(`/api/predict?name=${encodeURIComponent(name)}`, {
      method: "POST", body, headers: { "Content-Type": "application/octet-stream" } });
    const answer = await response.json();
    if (sent !== epoch) return;  // cleared or replaced while in flight
    if (response.ok) {
      serverTrouble = false;
      clearMessage();
      showPrediction(answer, name === "the drawing" ? "" : `from ${name}`);
      if (upload && !uploadShown) { drawFitted(preview, 28, 28); uploadShown = true; }  // e.g. a .npy
    } else {
      failed(answer.error, answer.message, answer.detail);
    }
  } catch (error) {
    if (sent === epoch) failed("app_down", APP_DOWN);
  } finally {
    inFlight = false;
    if (queued) { const next = queued; queued = null; run(next); } else document.body.dataset.busy = "false";
  }
}

function failed(kind, text, detail) {
  showMessage(kind, text, detail);
  if (SERVER_KINDS.has(kind) || kind === "rejected") {
    serverTrouble = true;
    resetResult();
    refreshModel();
  }
}

// The pad's pixels as a .npy file (uint8 [H, W], the red channel: the ink is white on black), which the
// API reads as it reads image files. No PNG encode: Chromium's canvas.toBlob waits for an idle period
// (up to a second in a busy or headless browser) before it even starts encoding.
function drawingBody() {
  const { width, height } = canvas;
  const rgba = ctx.getImageData(0, 0, width, height).data;
  let header = `{'descr': '|u1', 'fortran_order': False, 'shape': (${height}, ${width}), }`;
  header += " ".repeat(63 - ((10 + header.length) % 64)) + "\n";  // data starts on a 64-byte boundary
  const bytes = new Uint8Array(10 + header.length + width * height);
  bytes.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, header.length & 0xff, header.length >> 8]);
  for (let i = 0; i < header.length; i++) bytes[10 + i] = header.charCodeAt(i);
  const pixels = bytes.subarray(10 + header.length);
  for (let i = 0; i < pixels.length; i++) pixels[i] = rgba[i * 4];
  return bytes;
}

async function canvasJob() {
  return { body: drawingBody(), name: "the drawing" };
}

function predictDrawing() {
  clearTimeout(debounce);
  if (hasInk) request(canvasJob);
}

// ---- the model that answers: /api/model every few seconds and after errors --------------------------

async function refreshModel() {
  try {
    const response = await fetch("/api/model");
    const answer = await response.json();
    if (response.ok) {
      showModel(answer);
      clearMessage(SERVER_KINDS);
      if (serverTrouble && hasInk && !inFlight) { serverTrouble = false; predictDrawing(); }
    } else {
      $("model-version").textContent = "none";
      if (answer.error !== "rejected") showMessage(answer.error, answer.message, answer.detail);
    }
  } catch (error) {
    $("model-version").textContent = "none";
    showMessage("app_down", APP_DOWN);
  }
}

// ---- drawing ------------------------------------------------------------------------------------

function blank() {
  ctx.fillStyle = "#000";  // white on black, as MNIST is: the app's image code reads either polarity
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  hasInk = false;
  uploadShown = false;
}

function drawFitted(source, width, height) {
  blank();
  const scale = Math.min(canvas.width / width, canvas.height / height);
  const w = width * scale, h = height * scale;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(source, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
}

function clearAll() {
  epoch++;
  queued = null;
  clearTimeout(debounce);
  blank();
  resetResult();
  clearMessage(new Set(["empty", "bad_image", "too_large"]));
}

function point(event) {
  const rect = canvas.getBoundingClientRect();
  return { x: (event.clientX - rect.left) * canvas.width / rect.width,
           y: (event.clientY - rect.top) * canvas.height / rect.height };
}

function strokeTo(p) {
  ctx.beginPath();
  ctx.moveTo(last.x, last.y);
  ctx.lineTo(p.x, p.y);
  ctx.stroke();
  last = p;
  hasInk = true;
}

function setUpPad() {
  Object.assign(ctx, { strokeStyle: "#fff", lineWidth: STROKE, lineCap: "round", lineJoin: "round" });
  blank();
  canvas.addEventListener("pointerdown", (event) => {
    if (event.pointerType === "mouse" && event.button !== 0) return;
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    if (uploadShown || $("source").textContent) clearAll();  // drawing over an upload starts afresh
    drawing = true;
    last = point(event);
    strokeTo(last);  // a dot, even without moving
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    for (const e of (events.length ? events : [event])) strokeTo(point(e));
    clearTimeout(debounce);
    debounce = setTimeout(predictDrawing, DEBOUNCE_MS);
  });
  const end = () => { if (drawing) { drawing = false; predictDrawing(); } };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  canvas.addEventListener("keydown", (event) => {
    if (event.key === "Delete" || event.key === "Backspace" || event.key === "Escape") clearAll();
  });
}

// ---- uploads: the file's bytes as the request body --------------------------------------------------

async function showUpload(file) {
  const sent = epoch;
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch (error) {
    return;  // not an image the browser reads (a .npy, say): the answer's 28x28 input is drawn instead
  }
  if (sent === epoch) { drawFitted(bitmap, bitmap.width, bitmap.height); uploadShown = true; }
  bitmap.close();
}

function upload(file) {
  if (!file) return;
  clearAll();
  clearMessage();
  showUpload(file);
  request(async () => ({ body: file, name: file.name || "the upload", upload: true }));
}

function setUpUpload() {
  $("upload").addEventListener("change", (event) => {
    upload(event.target.files[0]);
    event.target.value = "";  // choosing the same file again fires change again
  });
  canvas.addEventListener("dragover", (event) => { event.preventDefault(); canvas.classList.add("dragging"); });
  canvas.addEventListener("dragleave", () => canvas.classList.remove("dragging"));
  canvas.addEventListener("drop", (event) => {
    event.preventDefault();
    canvas.classList.remove("dragging");
    upload(event.dataTransfer.files[0]);
  });
}

buildChart();
buildFeedback();
resetResult();
setUpPad();
setUpUpload();
$("clear").addEventListener("click", clearAll);
refreshModel();
checkFeedback();
setInterval(refreshModel, STATUS_EVERY_MS);

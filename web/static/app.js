// The draw-a-digit page: draws on #canvas, sends its PNG (or an uploaded file) to POST /api/predict,
// shows the digit, the ten probabilities and the 28x28 input the model saw. At most one request is in
// flight; newer work waits in a single slot, and answers from before a Clear or an upload are dropped.
"use strict";

const STROKE = 20;           // px on the 280-px pad: MNIST-like strokes once the digit is fitted to 20x20
const DEBOUNCE_MS = 200;     // predict this long after the last pointer move (and at once on pointerup)
const STATUS_EVERY_MS = 5000;
const SERVER_KINDS = new Set(["server_down", "no_model", "app_down"]);

const $ = (id) => document.getElementById(id);
const canvas = $("canvas"), ctx = canvas.getContext("2d");
const preview = $("preview"), previewCtx = preview.getContext("2d");

let hasInk = false, drawing = false, last = null, debounce = null;
let epoch = 0;               // bumped by Clear and uploads: answers to older requests are stale
let inFlight = false, queued = null, serverTrouble = false;

// ---- messages and display -------------------------------------------------------------------

function showMessage(kind, text) {
  const message = $("message");
  message.textContent = text;
  message.dataset.kind = kind;
  message.hidden = false;
}

function clearMessage(kinds) {
  const message = $("message");
  if (message.hidden || (kinds && !kinds.has(message.dataset.kind))) return;
  message.hidden = true;
  message.textContent = "";
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
    const { body, name } = await job();
    const response = await fetch(`/api/predict?name=${encodeURIComponent(name)}`, {
      method: "POST", body, headers: { "Content-Type": "application/octet-stream" } });
    const answer = await response.json();
    if (sent !== epoch) return;  // cleared or replaced while in flight
    if (response.ok) {
      serverTrouble = false;
      clearMessage();
      showPrediction(answer, name === "the drawing" ? "" : `from ${name}`);
    } else {
      failed(answer.error, answer.message);
    }
  } catch (error) {
    if (sent === epoch) failed("app_down", "The page cannot reach its app: is `make demo` (or digits ui) still running?");
  } finally {
    inFlight = false;
    if (queued) { const next = queued; queued = null; run(next); } else document.body.dataset.busy = "false";
  }
}

function failed(kind, text) {
  showMessage(kind, text);
  if (SERVER_KINDS.has(kind) || kind === "rejected") {
    serverTrouble = true;
    resetResult();
    refreshModel();
  }
}

function canvasJob() {
  return new Promise((resolve) => canvas.toBlob((blob) => resolve({ body: blob, name: "the drawing" }), "image/png"));
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
      if (answer.error !== "rejected") showMessage(answer.error, answer.message);
    }
  } catch (error) {
    $("model-version").textContent = "none";
    showMessage("app_down", "The page cannot reach its app: is `make demo` (or digits ui) still running?");
  }
}

// ---- drawing ------------------------------------------------------------------------------------

function blank() {
  ctx.fillStyle = "#000";  // white on black, as MNIST is: the app's image code reads either polarity
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  hasInk = false;
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
    if ($("source").textContent) clearAll();  // drawing over an upload's result starts afresh
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

function upload(file) {
  if (!file) return;
  clearAll();
  clearMessage();
  request(async () => ({ body: file, name: file.name || "the upload" }));
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
resetResult();
setUpPad();
setUpUpload();
$("clear").addEventListener("click", clearAll);
refreshModel();
setInterval(refreshModel, STATUS_EVERY_MS);

// medfoundry serve: the page. Talks to /api with the user's bearer token; shows the image with the
// label overlay in NiiVue (vendored at install time, never from a CDN). window.medfoundry exposes
// the state for tests (volumes loaded, overlay voxels drawn).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("medfoundry_token") || "", job: null, nv: null,
                labels: null, models: [], poll: null, editing: false,
                prompting: false, clicks: [], lastMm: null };
const LABEL_COLOURS = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
  [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60]];

function showError(msg) {
  const box = $("error");
  box.textContent = msg || "";
  box.hidden = !msg;
}

async function api(path, opts = {}) {
  const headers = Object.assign({ Authorization: `Bearer ${state.token}` }, opts.headers || {});
  const res = await fetch(path, Object.assign({}, opts, { headers }));
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(`${res.status}: ${detail}`);
  }
  return res;
}

async function signIn() {
  state.token = $("token").value.trim() || state.token;
  try {
    const me = await (await api("/api/me")).json();
    sessionStorage.setItem("medfoundry_token", state.token);
    state.models = await (await api("/api/models")).json();
    $("model").replaceChildren(...state.models.map((m) => new Option(m.name, m.name)));
    $("who").textContent = `signed in as ${me.user}`;
    $("submit").disabled = false;
    $("jobs-box").disabled = false;
    showError("");
    await refreshJobs();
  } catch (e) {
    $("who").textContent = "not signed in";
    showError(`sign-in failed (${e.message})`);
  }
}

async function refreshJobs() {
  const jobs = await (await api("/api/jobs")).json();
  $("jobs").replaceChildren(...jobs.map((j) => {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = "#";
    a.textContent = `${j.filename} (${j.model}): ${j.state}`;
    a.addEventListener("click", (ev) => { ev.preventDefault(); follow(j.id); });
    li.append(a);
    return li;
  }));
}

async function upload() {
  const file = $("file").files[0];
  if (!file) { showError("choose an image first"); return; }
  showError("");
  $("run").disabled = true;
  $("stage").textContent = "uploading...";
  try {
    const q = new URLSearchParams({ model: $("model").value, filename: file.name });
    const res = await api(`/api/jobs?${q}`, { method: "POST", body: file,
      headers: { "Content-Type": "application/octet-stream" } });
    const job = await res.json();
    await refreshJobs();
    follow(job.id);
  } catch (e) {
    showError(`upload refused (${e.message})`);
    $("stage").textContent = "";
  } finally {
    $("run").disabled = false;
  }
}

function follow(jobId) {
  clearInterval(state.poll);
  const tick = async () => {
    try {
      const job = await (await api(`/api/jobs/${jobId}`)).json();
      $("progress").value = job.progress;
      $("stage").textContent = job.state === "failed" ? `failed: ${job.error}`
        : `${job.state}${job.state === "running" ? ` (${job.stage}, ${Math.round(job.progress * 100)}%)` : ""}`;
      if (job.state === "done" || job.state === "failed") {
        clearInterval(state.poll);
        await refreshJobs();
        if (job.state === "done") await showJob(job);
      }
    } catch (e) {
      clearInterval(state.poll);
      showError(e.message);
    }
  };
  state.poll = setInterval(tick, 700);
  tick();
}

function viewer() {
  if (!window.niivue) {
    const box = $("viewer-missing");
    box.textContent = "The NiiVue viewer is not installed on this server (static/vendor/niivue.umd.js "
      + "is missing): run scripts/setup.sh, which fetches it from the npm registry. Jobs and "
      + "downloads still work.";
    box.hidden = false;
    return null;
  }
  if (!state.nv) {
    state.nv = new niivue.Niivue({ backColor: [0.1, 0.1, 0.12, 1], show3Dcrosshair: true,
      dragAndDropEnabled: false, isColorbar: false, multiplanarShowRender: 1 });
    state.nv.attachTo("gl");
    state.nv.setMultiplanarLayout?.(2);
    state.nv.onLocationChange = (d) => {
      $("location").textContent = d.string || "";
      state.lastMm = d.mm;
    };
    $("gl").addEventListener("pointerup", (ev) => {
      if (state.prompting) setTimeout(() => addClick(!ev.shiftKey), 50);
    });
  }
  return state.nv;
}

async function fileBuffer(job, key) {
  return (await api(`/api/jobs/${job.id}/files/${key}`)).arrayBuffer();
}

function labelLut(classNames) {
  const ids = Object.keys(classNames).map(Number);
  const max = Math.max(1, ...ids);
  const lut = { R: [], G: [], B: [], A: [], I: [], labels: [] };
  for (let i = 0; i <= max; i++) {
    const c = LABEL_COLOURS[i % LABEL_COLOURS.length];
    lut.R.push(c[0]); lut.G.push(c[1]); lut.B.push(c[2]); lut.A.push(i ? 255 : 0); lut.I.push(i);
    lut.labels.push(classNames[String(i)] || (i ? String(i) : ""));
  }
  return lut;
}

async function showJob(job) {
  state.job = job;
  renderResults(job);
  const nv = viewer();
  if (!nv) return;
  stopEditing();
  const imageName = job.files.image.endsWith(".gz") ? "image.nii.gz" : "image.nii";
  const image = await niivue.NVImage.loadFromUrl({ url: imageName, name: imageName,
    buffer: await fileBuffer(job, "image") });
  const labels = await niivue.NVImage.loadFromUrl({ url: "labels.nii.gz", name: "labels.nii.gz",
    buffer: await fileBuffer(job, "labels"), opacity: Number($("opacity").value) });
  labels.setColormapLabel(labelLut(job.class_names));
  while (nv.volumes.length) nv.removeVolume(nv.volumes[0]);
  nv.addVolume(image);
  nv.addVolume(labels);
  state.labels = labels;
  nv.setSliceType(nv.sliceTypeMultiplanar);
  nv.updateGLVolume();
  $("edit").disabled = false;
  $("prompt").disabled = !promptableModel();
  const pen = $("pen").value;
  $("pen").replaceChildren(new Option("erase", "0"), ...Object.entries(job.class_names)
    .map(([id, name]) => new Option(name, id)));
  if (pen && job.class_names[pen]) $("pen").value = pen;
}

function renderResults(job) {
  $("results").hidden = false;
  const rows = findingRows(job.findings);
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))]
    .filter((k) => rows.some((r) => typeof r[k] !== "object")).slice(0, 8);
  $("findings").tHead.replaceChildren(row(cols, "th"));
  $("findings").tBodies[0].replaceChildren(...rows.map((r) => row(cols.map((c) => fmt(r[c])), "td")));
  $("notes").textContent = (job.notes || []).join("; ");
  const names = { image: "image", labels: "labels (NIfTI)", labels_model: "model labels (NIfTI)",
    seg: "DICOM SEG", findings_json: "findings (JSON)", findings_html: "findings (HTML)" };
  $("downloads").replaceChildren(...Object.keys(job.files).map((key) => {
    const b = document.createElement("button");
    b.type = "button";
    b.id = `download-${key}`;
    b.textContent = names[key] || key;
    b.addEventListener("click", () => download(job, key));
    return b;
  }));
}

function findingRows(findings) {
  if (!findings) return [];
  for (const key of ["structures", "findings", "classes", "rows"]) {
    const v = findings[key];
    if (Array.isArray(v)) return v.filter((r) => r && typeof r === "object");
    if (v && typeof v === "object") return Object.entries(v).map(([k, r]) => Object.assign({ name: k }, r));
  }
  const list = Object.values(findings).find((v) => Array.isArray(v) && v.length && typeof v[0] === "object");
  return list || [];
}

function row(cells, tag) {
  const tr = document.createElement("tr");
  for (const c of cells) { const td = document.createElement(tag); td.textContent = c; tr.append(td); }
  return tr;
}

function fmt(v) {
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(2);
  return v === undefined || v === null ? "" : String(v);
}

async function download(job, key) {
  try {
    const res = await api(`/api/jobs/${job.id}/files/${key}`);
    const cd = res.headers.get("Content-Disposition") || "";
    const m = /filename="?([^";]+)"?/.exec(cd);
    const a = document.createElement("a");
    a.href = URL.createObjectURL(await res.blob());
    a.download = m ? m[1] : key;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  } catch (e) {
    showError(`download failed (${e.message})`);
  }
}

function startEditing() {
  const nv = state.nv;
  if (state.prompting) togglePrompting();
  nv.loadDrawing(state.labels);
  nv.setOpacity(1, 0);
  nv.setDrawingEnabled(true);
  nv.setPenValue(Number($("pen").value || 1), false);
  state.editing = true;
  $("pen").disabled = false;
  $("save-edit").disabled = false;
  $("edit").textContent = "Stop editing";
}

function stopEditing() {
  const nv = state.nv;
  if (!nv || !state.editing) return;
  nv.setDrawingEnabled(false);
  nv.closeDrawing?.();
  if (nv.volumes.length > 1) nv.setOpacity(1, Number($("opacity").value));
  state.editing = false;
  $("pen").disabled = true;
  $("save-edit").disabled = true;
  $("edit").textContent = "Brush edit";
}

async function saveEdit() {
  try {
    const bytes = await state.nv.saveImage({ filename: "", isSaveDrawing: true });
    const res = await api(`/api/jobs/${state.job.id}/labels`, { method: "POST", body: bytes,
      headers: { "Content-Type": "application/octet-stream" } });
    await showJob(await res.json());
  } catch (e) {
    showError(`correction refused (${e.message})`);
  }
}

function promptableModel() {
  const m = state.models.find((x) => x.promptable);
  return m ? m.name : null;
}

function togglePrompting() {
  if (state.editing) stopEditing();
  state.prompting = !state.prompting;
  state.clicks = [];
  $("pen").disabled = !state.prompting;
  $("reset-clicks").disabled = !state.prompting;
  $("prompt").textContent = state.prompting ? "Stop prompts" : "Click prompts";
}

async function addClick(positive) {
  if (!state.lastMm || !state.job) return;
  const label = Number($("pen").value) || Number(Object.keys(state.job.class_names)[0]);
  state.clicks.push({ mm_ras: [state.lastMm[0], state.lastMm[1], state.lastMm[2]], positive });
  $("stage").textContent = `segmenting from ${state.clicks.length} click(s)...`;
  try {
    const res = await api(`/api/jobs/${state.job.id}/clicks`, { method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ points: state.clicks, label, model: promptableModel() }) });
    const job = await res.json();
    $("stage").textContent = `object: ${job.object_voxels} voxels`;
    const keep = state.prompting;
    await showJob(job);
    state.prompting = keep;
  } catch (e) {
    state.clicks.pop();
    showError(`click refused (${e.message})`);
  }
}

function overlayVoxels() {
  // Voxels of the label volume above 0 and the number of volumes loaded: what tests check.
  const nv = state.nv;
  if (!nv || nv.volumes.length < 2) return { volumes: nv ? nv.volumes.length : 0, labelled: 0 };
  let labelled = 0;
  for (const v of nv.volumes[1].img) if (v > 0) labelled++;
  return { volumes: nv.volumes.length, labelled };
}

function readCanvas() {
  const nv = state.nv;
  nv.drawScene();
  const gl = nv.gl;
  const px = new Uint8Array(gl.drawingBufferWidth * gl.drawingBufferHeight * 4);
  gl.readPixels(0, 0, gl.drawingBufferWidth, gl.drawingBufferHeight, gl.RGBA, gl.UNSIGNED_BYTE, px);
  return px;
}

function overlayPixels() {
  // Canvas pixels that the label overlay changes: the scene drawn (WebGL read back) with the
  // overlay shown and hidden, compared. What the browser test checks.
  const nv = state.nv;
  if (!nv || nv.volumes.length < 2) return 0;
  const shown = nv.volumes[1].opacity;
  nv.setOpacity(1, 1);
  const withOverlay = readCanvas();
  nv.setOpacity(1, 0);
  const without = readCanvas();
  nv.setOpacity(1, shown);
  let changed = 0;
  for (let i = 0; i < without.length; i += 4) {
    if (withOverlay[i] !== without[i] || withOverlay[i + 1] !== without[i + 1]
        || withOverlay[i + 2] !== without[i + 2]) changed++;
  }
  return changed;
}

window.medfoundry = { state, overlayVoxels, overlayPixels };
document.addEventListener("DOMContentLoaded", () => {
  $("signin").addEventListener("click", signIn);
  $("token").addEventListener("keydown", (e) => { if (e.key === "Enter") signIn(); });
  $("run").addEventListener("click", upload);
  $("edit").addEventListener("click", () => (state.editing ? stopEditing() : startEditing()));
  $("pen").addEventListener("change", () => state.nv.setPenValue(Number($("pen").value), false));
  $("save-edit").addEventListener("click", saveEdit);
  $("prompt").addEventListener("click", togglePrompting);
  $("reset-clicks").addEventListener("click", () => { state.clicks = []; });
  $("opacity").addEventListener("input", () => {
    if (state.nv && state.nv.volumes.length > 1 && !state.editing) state.nv.setOpacity(1, Number($("opacity").value));
  });
  for (const b of document.querySelectorAll("[data-slice]")) {
    b.addEventListener("click", () => state.nv && state.nv.setSliceType(Number(b.dataset.slice)));
  }
  viewer();
  if (state.token) { $("token").value = ""; signIn(); }
});

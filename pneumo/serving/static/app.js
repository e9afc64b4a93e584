// pneumo's page: one X-ray in, POST v1/predict?heatmap=true, the answer out. Same origin, no
// dependencies; with an API key set, the browser's own Basic-auth prompt covers every fetch.
"use strict";

const MEANING = {
  normal: "The model finds no sign of pneumonia at its operating threshold.",
  pneumonia: "The model finds signs of pneumonia at its operating threshold.",
  refer: "The model cannot tell: no label is given, a clinician reads this image.",
  rejected: "Not an image the model can read: no label is given.",
};

const el = (id) => document.getElementById(id);
let modelInfo = null; // GET v1/model, once
let previewUrl = null; // the object URL of the image on show
let latest = 0; // a slow answer to an older upload must not overwrite a newer one

function show(node, visible) {
  node.hidden = !visible;
}

function setStatus(text) {
  el("status").textContent = text;
}

function showWarning(text) {
  el("warning").textContent = `Warning: ${text}`;
  show(el("warning"), true);
}

async function loadModel() {
  try {
    const res = await fetch("v1/model", { headers: { Accept: "application/json" } });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    modelInfo = await res.json();
    const where = modelInfo.packaged ? "the packaged model" : "model";
    el("model").textContent = `${where} ${modelInfo.file} (${modelInfo.backend}), sha256 ${modelInfo.sha256}`;
    if (modelInfo.card && modelInfo.card.synthetic_data === true) {
      showWarning("this model was trained on SYNTHETIC demo images: its answers mean nothing clinically.");
    }
  } catch (err) {
    el("model").textContent = `a model this page could not describe (${err.message})`;
  }
}

function fixed3(value) {
  return typeof value === "number" ? value.toFixed(3) : "not computed";
}

// What the figure shows, said in its caption: set by the upload, its preview and the answer.
const figure = { name: "", heatmap: false, noHeatmap: "", undisplayable: false };

function caption() {
  const f = figure;
  let text = `${f.name}: `;
  if (f.heatmap) text += "heat map of where the model looked, drawn over the image. It is not a finding.";
  else {
    if (f.noHeatmap) text += `no heat map (${f.noHeatmap}). `;
    text += f.undisplayable ? "The browser cannot display this file itself." : "The image as uploaded.";
  }
  el("figure-note").textContent = text;
}

function showPreview(file) {
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(file);
  Object.assign(figure, { name: file.name, heatmap: false, noHeatmap: "", undisplayable: false });
  const preview = el("preview");
  preview.alt = `The uploaded image, ${file.name}`;
  preview.onerror = () => {
    show(preview, false);
    figure.undisplayable = true;
    caption();
  };
  preview.src = previewUrl;
  show(preview, true);
  show(el("heatmap"), false);
  show(el("figure"), true);
  caption();
}

function showError(name, message) {
  el("error").textContent = message.includes(name) ? message : `${name}: ${message}`;
  show(el("error"), true);
  show(el("result"), false);
  setStatus(`No answer for ${name}.`);
}

function showHeatmap(r, name) {
  const heatmap = el("heatmap");
  if (r.heatmap) {
    heatmap.src = r.heatmap;
    heatmap.alt = `Heat map over ${name}: where the model looked, drawn over the image.`;
    show(heatmap, true);
    show(el("preview"), false);
    figure.heatmap = true;
  } else if (r.probability === null) figure.noHeatmap = "the image was rejected before the model ran";
  else if (modelInfo && modelInfo.heatmap === false) figure.noHeatmap = "this model makes none";
  else figure.noHeatmap = "none came back for this image";
  caption();
}

function showResult(r, name) {
  el("decision").textContent = r.decision;
  el("result").dataset.decision = r.decision;
  el("meaning").textContent = MEANING[r.decision] || "";
  el("probability").textContent = fixed3(r.probability);
  el("threshold").textContent = fixed3(r.threshold);
  const reasons = el("reasons");
  reasons.replaceChildren();
  for (const reason of r.reasons && r.reasons.length ? r.reasons : ["No reason given."]) {
    const li = document.createElement("li");
    li.textContent = reason;
    reasons.append(li);
  }
  if (r.warning) showWarning(r.warning);
  showHeatmap(r, name);
  show(el("result"), true);
  setStatus(
    `${name}: ${r.decision}; probability ${fixed3(r.probability)}, threshold ${fixed3(r.threshold)}. ` +
      "Assistive only, not a diagnosis.",
  );
}

async function predict(file) {
  const mine = ++latest;
  show(el("error"), false);
  show(el("result"), false);
  showPreview(file);
  setStatus(`Reading ${file.name}…`);
  el("result").parentElement.setAttribute("aria-busy", "true");
  const body = new FormData();
  body.append("files", file, file.name);
  try {
    const res = await fetch("v1/predict?heatmap=true", {
      method: "POST",
      body,
      headers: { Accept: "application/json" },
    });
    const data = await res.json().catch(() => null);
    if (mine !== latest) return;
    if (!res.ok) {
      const detail = data && data.detail ? data.detail : res.statusText;
      showError(file.name, `HTTP ${res.status}: ${detail}`);
    } else if (!data || !Array.isArray(data.results) || data.results.length !== 1) {
      showError(file.name, "the service sent an answer this page cannot read.");
    } else {
      showResult(data.results[0], file.name);
    }
  } catch (err) {
    if (mine === latest) showError(file.name, `could not reach the service (${err.message}).`);
  } finally {
    if (mine === latest) el("result").parentElement.removeAttribute("aria-busy");
  }
}

function pick(files) {
  if (!files || files.length === 0) return;
  if (files.length > 1) {
    showError(`${files.length} files`, "drop one X-ray at a time.");
    return;
  }
  predict(files[0]);
}

function wire() {
  const drop = el("drop");
  const input = el("file");
  drop.addEventListener("click", () => input.click());
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault(); // Space would scroll the page
      input.click();
    }
  });
  input.addEventListener("change", () => {
    pick(input.files);
    input.value = ""; // picking the same file again still answers
  });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    pick(event.dataTransfer.files);
  });
  // A file dropped beside the zone must not make the browser navigate away to it.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  loadModel();
}

wire();

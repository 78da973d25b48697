// The page: forms and buttons in, charts and text out. Every number drawn here comes from the
// microgpt package in worker.js (Pyodide); this file only lays them out. URL parameters fill the
// settings by their command-line names (?seed=42&steps=50&n_layer=2&autostart=1; also word=emma).

const $ = (id) => document.getElementById(id);
const worker = new Worker("worker.js", { type: "module" });
const settingsForm = $("settings");
const run = { losses: [], val: [], steps: 0, hasVal: false, limits: null };
const pending = new Map();  // call id -> {resolve, reject}
let nextId = 0;
let autostart = false;
const extraSettings = {};    // URL settings the form has no field for (the driver names any it does not know)

// ---- talking to the worker -----------------------------------------------------------------------
function call(op, args) {
  const id = ++nextId;
  worker.postMessage({ type: "call", id, op, args });
  return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
}

function setState(state) {
  document.body.dataset.state = state;
  const training = state === "training" || state === "paused";
  $("train").disabled = training || state === "loading";
  $("pause").disabled = state !== "training";
  $("resume").disabled = state !== "paused";
  $("stop").disabled = !training;
  for (const id of ["sample", "walk", "download"]) $(id).disabled = state === "training" || !run.hasModel;
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = false;
}

function clearError() { $("error").hidden = true; $("error").textContent = ""; }

function log(lines) {
  const pre = $("log");
  const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.textContent += lines.map((l) => l + "\n").join("");
  if (atEnd) pre.scrollTop = pre.scrollHeight;
}

worker.onerror = (event) => {
  event.preventDefault();
  showError(`the page's Python worker stopped (${event.message || "out of memory?"}); reload the page to go on`);
  setState("loading");
};

worker.onmessage = (event) => {
  const msg = event.data;
  const on = {
    status: () => { $("status").textContent = msg.text; },
    ready: () => {
      run.limits = msg.limits;
      $("status").textContent = `ready: Python is loaded; data files up to ${msg.limits.data_bytes / 2 ** 20} MB, ` +
        `checkpoints up to ${msg.limits.checkpoint_bytes / 2 ** 20} MB`;
      setState("ready");
      if (autostart) train();
    },
    fatal: () => { $("status").textContent = msg.text; showError(msg.text); },
    started: () => {
      run.steps = msg.steps; run.hasVal = msg.val; run.hasModel = false; run.losses = []; run.val = [];
      $("log").textContent = ""; $("samples-live").textContent = ""; $("sample-out").textContent = "";
      drawLoss();
      log(msg.lines);
      $("status").textContent = `training ${msg.steps} steps`;
    },
    progress: () => {
      log(msg.lines);
      run.losses.push(...msg.losses);
      run.val.push(...msg.val_losses);
      run.hasModel = true;
      drawLoss();
      const final = msg.lines.filter((l) => l.startsWith("sample ")).map((l) => `final ${l}`);
      const texts = (msg.samples ? msg.samples.texts.map((t) => `step ${msg.samples.step}: ${t}`) : []).concat(final);
      for (const text of texts) {
        const li = document.createElement("li");
        li.textContent = text;
        $("samples-live").append(li);
      }
      $("samples-live").scrollTop = $("samples-live").scrollHeight;
      $("status").textContent = `step ${msg.step} / ${run.steps} in ${msg.elapsed.toFixed(1)} s` +
        (msg.done ? " (done)" : "");
      document.body.dataset.step = msg.step;
    },
    log: () => log(msg.lines),
    finished: () => {
      if (!msg.failed) {
        document.body.dataset.seconds = msg.elapsed.toFixed(2);
        $("status").textContent += ` | finished in ${msg.elapsed.toFixed(1)} s`;
      }
      setState(msg.failed && !run.hasModel ? "ready" : "done");
    },
    embeddings: () => drawEmbeddings(msg),
    inspect: () => drawInspect(msg),
    loaded: () => {
      run.hasModel = true; run.losses = []; run.val = [];
      log(msg.lines);
      setState("done");
      $("status").textContent = "checkpoint loaded: sample from it, or look inside it";
    },
    download: () => {
      const url = URL.createObjectURL(new Blob([msg.bytes], { type: "application/octet-stream" }));
      const a = Object.assign(document.createElement("a"), { href: url, download: "checkpoint.safetensors" });
      document.body.append(a); a.click(); a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    },
    answer: () => { pending.get(msg.id).resolve(msg.ok); pending.delete(msg.id); },
    error: () => {
      if (msg.id && pending.has(msg.id)) { pending.get(msg.id).reject(new Error(msg.text)); pending.delete(msg.id); }
      showError(msg.text);
    },
    debug: () => { window.lastTraceback = msg.text; },
  };
  on[msg.type]();
};

// ---- settings, from the form and the URL -----------------------------------------------------------
function readUrl() {
  const params = new URLSearchParams(location.search);
  for (const [key, value] of params) {
    const name = key.replace(/-/g, "_");
    if (name === "autostart") autostart = value !== "0";
    else if (name === "word") { $("word").value = value; document.querySelector("#walk-form [name=word]").value = value; }
    else if (settingsForm.elements[name]) {
      const field = settingsForm.elements[name];
      if (field.tagName === "SELECT" && ![...field.options].some((o) => o.value === value)) {
        field.append(new Option(value));  // e.g. engine=torch: the driver says what it needs
      }
      field.value = value;
    }
    else extraSettings[name] = value;
  }
}

function settings() {
  const out = { ...extraSettings };
  for (const el of settingsForm.elements) out[el.name] = el.value;
  return out;
}

function dataSource() {
  const kind = document.querySelector("input[name=data]:checked").value;
  if (kind === "file") {
    const file = $("data-file").files[0];
    if (!file) throw new Error("choose a text file first (or drop one on the box), or pick the embedded names");
    return { kind, file, name: file.name };
  }
  if (kind === "text") return { kind, text: $("data-text").value, name: "pasted.txt" };
  return { kind };
}

// ---- actions -----------------------------------------------------------------------------------
function train() {
  clearError();
  let data;
  try { data = dataSource(); } catch (e) { showError(e.message); return; }
  setState("training");
  worker.postMessage({ type: "train", settings: settings(), data, word: $("word").value });
}

$("train").onclick = train;
$("pause").onclick = () => { worker.postMessage({ type: "pause" }); setState("paused"); };
$("resume").onclick = () => { worker.postMessage({ type: "resume" }); setState("training"); };
$("stop").onclick = () => worker.postMessage({ type: "stop" });
$("download").onclick = () => { clearError(); worker.postMessage({ type: "download" }); };
$("ckpt-file").onchange = (event) => {
  const file = event.target.files[0];
  event.target.value = "";
  if (!file) return;
  clearError();
  worker.postMessage({ type: "upload", file, name: file.name, word: $("word").value });
};
$("copy-log").onclick = async () => {
  try { await navigator.clipboard.writeText($("log").textContent); $("copy-log").textContent = "Copied"; }
  catch { getSelection().selectAllChildren($("log")); $("copy-log").textContent = "Selected: Ctrl+C"; }
};
$("sample").onclick = async () => {
  clearError();
  const options = {};  // the engine: as microgpt sample picks it (the checkpoint's, else scalar)
  for (const el of $("sample-form").elements) options[el.name] = el.value;
  try { $("sample-out").textContent = (await call("sample", { options })).lines.join("\n"); } catch { /* shown */ }
};
$("word").onchange = () => { clearError(); worker.postMessage({ type: "word", word: $("word").value }); };
$("walk").onclick = async () => {
  clearError();
  const form = $("walk-form").elements;
  try { drawWalk(await call("walk", { word: form.word.value, param: form.param.value || null })); } catch { /* shown */ }
};
for (const radio of document.querySelectorAll("input[name=data]")) {
  radio.onchange = () => { $("data-text").hidden = radio.value !== "text" || !radio.checked; };
}
$("data-file").onchange = () => { document.querySelector("input[name=data][value=file]").checked = true; };
const drop = $("drop");
drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (!e.dataTransfer.files.length) return;
  $("data-file").files = e.dataTransfer.files;
  document.querySelector("input[name=data][value=file]").checked = true;
  drop.textContent = `dropped: ${e.dataTransfer.files[0].name}`;
};

// ---- drawing -------------------------------------------------------------------------------------
function canvas2d(el) {
  const ctx = el.getContext("2d");
  ctx.clearRect(0, 0, el.width, el.height);
  ctx.font = "11px system-ui, sans-serif";
  return ctx;
}

function drawLoss() {
  const el = $("loss-chart"), ctx = canvas2d(el);
  const pad = { l: 42, r: 10, t: 10, b: 28 }, w = el.width - pad.l - pad.r, h = el.height - pad.t - pad.b;
  const all = run.losses.map((p) => p[1]).concat(run.val.map((p) => p[1]));
  const top = all.length ? Math.max(...all) : 4, bottom = all.length ? Math.min(...all) : 0;
  const lo = Math.max(0, Math.floor(bottom * 2) / 2), hi = Math.ceil(top * 2) / 2 || 1;
  const x = (s) => pad.l + (w * s) / Math.max(1, run.steps);
  const y = (v) => pad.t + h - (h * (v - lo)) / Math.max(1e-9, hi - lo);
  ctx.strokeStyle = "#ccd"; ctx.fillStyle = "#556"; ctx.lineWidth = 1;
  for (let v = lo; v <= hi + 1e-9; v += 0.5) {
    ctx.beginPath(); ctx.moveTo(pad.l, y(v)); ctx.lineTo(pad.l + w, y(v)); ctx.stroke();
    ctx.fillText(v.toFixed(1), 6, y(v) + 4);
  }
  ctx.fillText("step", pad.l + w / 2, el.height - 6);
  ctx.fillText(String(run.steps || ""), pad.l + w - 24, el.height - 14);
  const line = (points, colour, width) => {
    ctx.strokeStyle = colour; ctx.lineWidth = width; ctx.beginPath();
    points.forEach(([s, v], i) => (i ? ctx.lineTo(x(s), y(v)) : ctx.moveTo(x(s), y(v))));
    ctx.stroke();
  };
  line(run.losses, "rgba(70,110,240,.35)", 1);
  const window = Math.max(1, Math.min(50, Math.floor(run.losses.length / 10)));
  let sum = 0;
  const mean = run.losses.map(([s, v], i) => {
    sum += v - (i >= window ? run.losses[i - window][1] : 0);
    return [s, sum / Math.min(i + 1, window)];
  });
  line(mean, "#2a4fd6", 2);
  if (run.val.length) {
    line(run.val, "#f08a24", 2);
    ctx.fillStyle = "#f08a24";
    for (const [s, v] of run.val) { ctx.beginPath(); ctx.arc(x(s), y(v), 3, 0, 7); ctx.fill(); }
  }
}

const RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];  // viridis' stops
const viridis = (t) => {  // a colour for a probability in [0, 1]
  const x = Math.max(0, Math.min(1, t)) * (RAMP.length - 1), i = Math.min(RAMP.length - 2, Math.floor(x)), f = x - i;
  return `rgb(${RAMP[i].map((c, k) => Math.round(c + f * (RAMP[i + 1][k] - c))).join(",")})`;
};

function heatmap(el, grid, rowLabels, colLabels, cell, marks) {
  const left = 34, topPad = 18;
  el.width = left + cell * colLabels.length + 4;
  el.height = topPad + cell * rowLabels.length + 4;
  const ctx = canvas2d(el);
  ctx.textAlign = "center";
  colLabels.forEach((c, j) => { ctx.fillStyle = "#334"; ctx.fillText(c, left + cell * j + cell / 2, 12); });
  rowLabels.forEach((r, i) => {
    ctx.fillStyle = "#334"; ctx.textAlign = "right"; ctx.fillText(r, left - 4, topPad + cell * i + cell / 2 + 4);
    ctx.textAlign = "center";
    grid[i].forEach((v, j) => {
      ctx.fillStyle = v === null ? "#eee" : viridis(v);
      ctx.fillRect(left + cell * j, topPad + cell * i, cell - 1, cell - 1);
    });
    if (marks && marks[i] !== undefined) {
      ctx.strokeStyle = "#e0245e"; ctx.lineWidth = 2;
      ctx.strokeRect(left + cell * marks[i], topPad + cell * i, cell - 1, cell - 1);
    }
  });
}

function drawInspect(msg) {
  const box = $("attention");
  box.textContent = "";
  const rows = msg.tokens.slice(0, -1);
  msg.attention.forEach((heads, layer) => heads.forEach((grid, head) => {
    const fig = document.createElement("figure"), el = document.createElement("canvas");
    el.className = "attention-chart";
    heatmap(el, grid.map((row, i) => row.map((v, t) => (t > i ? null : v))), rows, rows, 22);
    const cap = document.createElement("figcaption");
    cap.textContent = `layer ${layer}, head ${head}`;
    fig.append(el, cap); box.append(fig);
  }));
  heatmap($("next-chart"), msg.probs, rows, msg.labels, 24, msg.targets);
}

function drawEmbeddings(msg) {
  const el = $("embed-chart"), ctx = canvas2d(el), pad = 24;
  const xs = msg.xy.map((p) => p[0]), ys = msg.xy.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const x = (v) => pad + ((el.width - 2 * pad) * (v - x0)) / Math.max(1e-9, x1 - x0);
  const y = (v) => el.height - pad - ((el.height - 2 * pad) * (v - y0)) / Math.max(1e-9, y1 - y0);
  ctx.strokeStyle = "#dde"; ctx.strokeRect(0.5, 0.5, el.width - 1, el.height - 1);
  ctx.font = "14px ui-monospace, monospace"; ctx.textAlign = "center";
  msg.labels.forEach((label, i) => {
    ctx.fillStyle = "aeiouy".includes(label.toLowerCase()) ? "#d6336c" : "#2a4fd6";
    ctx.fillText(label, x(xs[i]), y(ys[i]) + 5);
  });
  ctx.font = "11px system-ui"; ctx.fillStyle = "#667"; ctx.textAlign = "left";
  ctx.fillText(`PC1 ${(100 * msg.shares[0]).toFixed(0)}% / PC2 ${(100 * msg.shares[1]).toFixed(0)}% of the variance; vowels in red`, 6, 14);
}

// ---- the step-through ---------------------------------------------------------------------------
const fmt = (v) => (v === null ? "" : Array.isArray(v) ? `[${v.map(fmt).join(", ")}]` : Number(v).toFixed(4));

function drawWalk(trace) {
  const label = (t) => (t === trace.chars.length ? "BOS" : trace.chars[t]);
  $("walk-summary").textContent = `one training step on "${trace.doc}" from ${trace.source}: tokens ` +
    `${trace.tokens.map(label).join(" ")}, loss ${trace.loss.toFixed(4)}, step ${trace.step}, lr_t ${trace.lr.toPrecision(6)}`;
  const buttons = $("walk-positions");
  buttons.textContent = "";
  trace.positions.forEach((at, i) => {
    const b = document.createElement("button");
    b.textContent = `pos ${at.pos_id}: ${label(at.token_id)} -> ${label(at.target_id)}`;
    b.onclick = () => { for (const o of buttons.children) o.classList.remove("on"); b.classList.add("on"); showPosition(at); };
    buttons.append(b);
    if (i === 0) b.click();
  });
  const a = trace.adam;
  const rows = [["p.grad", "d(loss)/d(p), from loss.backward()", a.grad], ["m[i] (before)", "", a.m_before],
    ["m[i]", "m[i] = beta1 * m[i] + (1 - beta1) * p.grad", a.m], ["v[i]", "v[i] = beta2 * v[i] + (1 - beta2) * p.grad ** 2", a.v],
    ["m_hat", "m_hat = m[i] / (1 - beta1 ** (step + 1))", a.m_hat], ["v_hat", "v_hat = v[i] / (1 - beta2 ** (step + 1))", a.v_hat],
    ["update", "lr_t * m_hat / (v_hat ** 0.5 + eps_adam)", a.update], ["p.data", "before", a.params_before],
    ["p.data", "p.data -= update", a.params_after]];
  const box = $("walk-adam");
  box.innerHTML = "<h3>loss.backward(): every parameter's gradient</h3>";
  box.append(table(Object.entries(trace.grads).map(([name, g]) => [name, `${g.shape.join(" x ")}, norm ${g.norm.toFixed(4)}`,
    g.largest.map((e) => `[${e.index}] ${e.value.toFixed(4)}`).join("  ")]), ["tensor", "shape, norm", "largest entries"]));
  const adam = document.createElement("h3");
  adam.textContent = `Adam on ${a.param}[${a.index}] (params[${a.flat_index}]), atomic.py's last loop`;
  box.append(adam, table(rows.map(([n, code, v]) => [n, code, Number(v).toPrecision(8)]), ["", "code", ""]));
  $("param-names").replaceChildren(...Object.keys(trace.grads).map((name) => new Option(name)));
}

function showPosition(at) {
  const rows = [];
  let context = "";
  for (const line of at.lines) {
    const ctx = line.layer === null ? "" : `layer ${line.layer}` + (line.head === null ? "" : `, head ${line.head}`);
    if (ctx !== context && ctx) rows.push({ ctx });
    context = ctx;
    rows.push([line.name, `atomic.py:${line.lineno}  ${line.code}`, "data " + fmt(line.value) +
      (line.grad === null || (Array.isArray(line.grad) && line.grad[0] === null) ? "" : "\ngrad " + fmt(line.grad))]);
  }
  const box = $("walk-lines");
  box.textContent = "";
  box.append(table(rows, ["variable", "atomic.py", "value and d(loss)/d(value)"]));
}

function table(rows, head) {
  const t = document.createElement("table");
  const tr = t.insertRow();
  for (const h of head) { const th = document.createElement("th"); th.textContent = h; tr.append(th); }
  for (const row of rows) {
    const r = t.insertRow();
    if (row.ctx) { r.className = "ctx"; const c = r.insertCell(); c.colSpan = 3; c.textContent = row.ctx; continue; }
    row.forEach((text, i) => { const c = r.insertCell(); c.textContent = text; c.className = ["", "code", "num"][i]; });
  }
  return t;
}

readUrl();
drawLoss();
setState("loading");

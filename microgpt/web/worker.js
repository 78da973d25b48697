// The page's Web Worker: starts Pyodide, copies the microgpt package into its file system, and runs
// microgpt/web/driver.py for the page. Training goes in chunks of steps; between chunks the worker
// answers the page's messages (Pause, Stop, a new word to inspect), so the page never waits on it.
// No model arithmetic here: every number comes from the Python package.
// Messages in: {type: "train" | "pause" | "resume" | "stop" | "call" | "upload", ...}; out: see app.js.

let driver = null;             // the Python module microgpt.web.driver
let pyodide = null;
let uploads = 0;               // checkpoints uploaded so far
let training = null;           // {paused, stopped, chunk, word} while a run is in progress
const CHUNK_SECONDS = 0.25;    // how long the page may wait for an answer while training
const VIEWS_EVERY_SECONDS = 1; // attention, distributions and embeddings follow training this often,
                               // or less often when drawing them costs more than a fifth of the time

const post = (msg) => self.postMessage(msg);

function call(op, args = {}) {
  const answer = JSON.parse(driver.handle(JSON.stringify({ op, ...args })));
  if (answer.error !== undefined) {
    if (answer.traceback) post({ type: "debug", text: answer.traceback });
    throw new UsageError(answer.error);
  }
  return answer.ok;
}

class UsageError extends Error {}

async function boot() {
  const response = await fetch("manifest.json");
  if (!response.ok) throw new Error(`manifest.json: HTTP ${response.status}`);
  const manifest = await response.json();
  const indexURL = new URL(manifest.pyodide, self.location.href).href;
  post({ type: "status", text: `loading Python (Pyodide ${manifest.pyodide_version})` });
  const { loadPyodide } = await import(indexURL + "pyodide.mjs");
  pyodide = await loadPyodide({ indexURL, stdout: () => {}, stderr: () => {} });
  post({ type: "status", text: "loading the microgpt package" });
  const root = "/home/pyodide/lib/";
  const bodies = await Promise.all(manifest.files.map(async (path) => {
    const response = await fetch("py/" + path);
    if (!response.ok) throw new Error(`py/${path}: HTTP ${response.status} (rebuild the site: microgpt web --build)`);
    return new Uint8Array(await response.arrayBuffer());
  }));
  manifest.files.forEach((path, i) => {
    pyodide.FS.mkdirTree(root + path.split("/").slice(0, -1).join("/"));
    pyodide.FS.writeFile(root + path, bodies[i]);
  });
  pyodide.runPython(`import sys; sys.path.insert(0, "${root}")`);
  driver = pyodide.pyimport("microgpt.web.driver");
  const limits = call("limits");
  for (const dir of Object.values(limits.dirs)) pyodide.FS.mkdirTree(dir);
  post({ type: "ready", limits });
}

// ---- files from the page: size first (the driver's limits), then the bytes into Pyodide's FS ------
async function writeFile(kind, source, dir) {
  const name = source.name || "pasted.txt";
  const bytes = source.text !== undefined ? new TextEncoder().encode(source.text) : null;  // pasted text
  call("check_size", { kind, name, size: bytes ? bytes.length : source.file.size });
  const data = bytes || new Uint8Array(await source.file.arrayBuffer());
  const path = `${dir}/${kind === "checkpoint" ? "checkpoint.safetensors" : name.replace(/[^\w.-]/g, "_")}`;
  pyodide.FS.writeFile(path, data);
  return path;
}

// ---- training in chunks ------------------------------------------------------------------------
async function train(msg) {
  const limits = call("limits");
  const dataPath = msg.data.kind === "embedded" ? null : await writeFile("data", msg.data, limits.dirs.data);
  const started = call("start", { settings: msg.settings, data_path: dataPath });
  post({ type: "started", ...started });
  training = { paused: false, stopped: false, chunk: 1, word: msg.word, viewsAt: 0, viewsCost: 0 };
  const t0 = performance.now();
  while (true) {
    if (training.stopped) {
      post({ type: "log", lines: call("stop").lines, finished: true });
      break;
    }
    if (training.paused) { await new Promise((r) => setTimeout(r, 50)); continue; }
    const c0 = performance.now();
    const out = call("train", { steps: training.chunk });
    const seconds = (performance.now() - c0) / 1000;
    const perStep = seconds / Math.max(1, out.lines.filter((l) => l.startsWith("step")).length || training.chunk);
    training.chunk = Math.max(1, Math.min(200, Math.round(CHUNK_SECONDS / Math.max(perStep, 1e-4))));
    post({ type: "progress", ...out, elapsed: (performance.now() - t0) / 1000 });
    const since = (performance.now() - training.viewsAt) / 1000;
    if (out.done || since > Math.max(VIEWS_EVERY_SECONDS, 5 * training.viewsCost)) {
      const v0 = performance.now();
      views(training.word);
      training.viewsAt = performance.now();
      training.viewsCost = (training.viewsAt - v0) / 1000;
    }
    if (out.done) break;
    await new Promise((r) => setTimeout(r, 0)); // let Pause, Stop and the rest arrive
  }
  post({ type: "finished", elapsed: (performance.now() - t0) / 1000 });
  training = null;
}

function views(word) {
  try {
    post({ type: "embeddings", ...call("embeddings") });
    if (word) post({ type: "inspect", ...call("inspect", { word }) });
  } catch (e) {
    post({ type: "error", where: "inspect", text: `the word to look inside with: ${e.message}` });
  }
}

// ---- messages ----------------------------------------------------------------------------------
const handlers = {
  train: (msg) => train(msg),
  pause: () => { if (training) training.paused = true; },
  resume: () => { if (training) training.paused = false; },
  stop: () => { if (training) { training.stopped = true; training.paused = false; } },
  word: (msg) => { if (training) training.word = msg.word; views(msg.word); },
  call: (msg) => post({ type: "answer", id: msg.id, op: msg.op, ok: call(msg.op, msg.args || {}) }),
  upload: async (msg) => {
    const limits = call("limits");
    const dir = `${limits.dirs.upload}/${++uploads}`;  // a new folder: a bad file never replaces a loaded one
    pyodide.FS.mkdirTree(dir);
    const path = await writeFile("checkpoint", msg, dir);
    post({ type: "loaded", ...call("load_checkpoint", { path }) });
    views(msg.word);
  },
  download: () => {
    const { path } = call("checkpoint_path");
    const bytes = pyodide.FS.readFile(path);
    self.postMessage({ type: "download", bytes }, [bytes.buffer]);
  },
};

self.onmessage = async (event) => {
  const msg = event.data;
  try {
    if (!driver) throw new UsageError("Python is still loading; try again in a moment");
    if (training && (msg.type === "train" || msg.type === "upload")) {
      throw new UsageError("a run is training: stop it first (Stop), then start another or upload");
    }
    await handlers[msg.type](msg);
  } catch (e) {
    if (msg.type === "train") { training = null; post({ type: "finished", failed: true }); }
    post({ type: "error", where: msg.type === "call" ? msg.op : msg.type, id: msg.id,
           text: e instanceof UsageError ? e.message : `internal error: ${e.message}` });
  }
};

boot().catch((e) => post({ type: "fatal", text: `could not start Python: ${e.message}` }));

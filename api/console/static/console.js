// MMLoP web console: one plain ES module, no build step, nothing from another origin.
// The API key lives in this page's memory (or, when asked, in sessionStorage for the tab) and
// goes only into the Authorization header: never into a URL, a form submission or a log.

const $ = (id) => document.getElementById(id);
const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
const ENDED = new Set([...TERMINAL, "deleted"]);
const KEY_STORE = "mmlop.apiKey";
const IMAGE_NAME = /\.(png|jpe?g|gif|bmp|webp|tiff?)$/i;
const POLL_MS = 1000;

const state = {
  key: sessionStorage.getItem(KEY_STORE) || "",
  train: [],        // [{file, label}] from photos in class folders
  archive: null,    // one zip File, sent instead of photos
  classify: [],     // File[] to classify with an adapter
  zeroshot: [],     // File[] to score zero-shot
  watch: null,      // AbortController of the adaptation being watched
};

// ---- messages ------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const say = (text) => { $("messages").textContent = text; };
const fail = (text) => { $("errors").textContent = text; };

/** Run an event handler; its errors (problem+json details included) go to the alert region. */
function action(handler) {
  return async (event) => {
    fail("");
    try {
      await handler(event);
    } catch (err) {
      if (err.name !== "AbortError") fail(err instanceof ApiError ? err.message : `Error: ${err.message}`);
    }
  };
}

// ---- the API -------------------------------------------------------------------------------

/** fetch() a same-origin API path with the key in the Authorization header; a non-2xx answer
 *  throws ApiError carrying the problem document's detail. */
async function api(path, { method = "GET", body, headers = {}, signal } = {}) {
  if (!state.key) throw new ApiError(0, "Enter an API key first (section 1).");
  const resp = await fetch(path, {
    method, body, signal, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer",
    headers: { ...headers, Authorization: `Bearer ${state.key}` },
  });
  if (!resp.ok) {
    let detail = resp.statusText;
    try {
      const problem = await resp.json();
      detail = problem.detail || problem.title || detail;
    } catch { /* not JSON: keep the status text */ }
    throw new ApiError(resp.status, `Error ${resp.status}: ${detail}`);
  }
  return resp;
}

const apiJson = async (path, options) => (await api(path, options)).json();
const sleep = (ms, signal) => new Promise((resolve, reject) => {
  const timer = setTimeout(resolve, ms);
  signal?.addEventListener("abort", () => { clearTimeout(timer); reject(signal.reason); }, { once: true });
});

// ---- API key -------------------------------------------------------------------------------

function showKeyState() {
  $("key-state").textContent = !state.key ? "No key entered."
    : sessionStorage.getItem(KEY_STORE) ? "Key set, kept for this tab." : "Key set for this page.";
}

$("key-form").addEventListener("submit", action(async (event) => {
  event.preventDefault();  // a submitted form would put its fields in the URL
  const key = $("api-key").value.trim();
  if (!key) throw new Error("the API key is empty");
  state.key = key;
  $("api-key").value = "";
  if ($("key-remember").checked) sessionStorage.setItem(KEY_STORE, key);
  else sessionStorage.removeItem(KEY_STORE);
  showKeyState();
  await refreshList();
  say("Key accepted.");
}));

$("key-forget").addEventListener("click", () => {
  state.key = "";
  sessionStorage.removeItem(KEY_STORE);
  state.watch?.abort();
  $("adapters").tBodies[0].replaceChildren();
  fillAdapterChoice([]);
  showKeyState();
  say("Key forgotten.");
});

// ---- choosing files: drop zones, pickers, folders ------------------------------------------

/** Files dropped on an element, walking dropped folders: [{file, path}] with the relative
 *  path ("coat/001.png") of each file. */
async function droppedFiles(event) {
  // Entries must be taken before the first await: the DataTransfer empties after the event.
  const entries = [...(event.dataTransfer.items || [])]
    .map((item) => item.webkitGetAsEntry?.()).filter(Boolean);
  if (!entries.length) return [...event.dataTransfer.files].map((file) => ({ file, path: file.name }));
  const out = [];
  for (const entry of entries) await walk(entry, "", out);
  return out;
}

async function walk(entry, prefix, out) {
  if (entry.isFile) {
    out.push({ file: await new Promise((ok, no) => entry.file(ok, no)), path: prefix + entry.name });
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((ok, no) => reader.readEntries(ok, no));
      if (!batch.length) break;
      for (const child of batch) await walk(child, `${prefix}${entry.name}/`, out);
    }
  }
}

/** A drop zone that is also a button opening `input`'s picker; both hand [{file, path}] to
 *  `onFiles`. */
function dropzone(zone, input, onFiles) {
  zone.addEventListener("click", () => input.click());
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", action(async (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    await onFiles(await droppedFiles(event));
  }));
  picker(input, onFiles);
}

function picker(input, onFiles) {
  input.addEventListener("change", action(async () => {
    const chosen = [...input.files].map((file) => ({ file, path: file.webkitRelativePath || file.name }));
    input.value = "";  // choosing the same files again fires change again
    await onFiles(chosen);
  }));
}

const isImage = (file) => IMAGE_NAME.test(file.name) || file.type.startsWith("image/");

// ---- new adaptation ------------------------------------------------------------------------

/** Photos take the name of the folder that holds them; loose photos the typed class. */
function addTrainingFiles(chosen) {
  const zips = chosen.filter(({ file }) => /\.zip$/i.test(file.name));
  if (zips.length) {
    if (zips.length > 1 || chosen.length > 1) throw new Error("choose one zip alone (a folder per class inside)");
    state.archive = zips[0].file;
    state.train = [];
  } else {
    const loose = $("train-label").value.trim();
    const photos = chosen.filter(({ file }) => isImage(file) && !file.name.startsWith("."));
    const unlabelled = photos.filter(({ path }) => !path.includes("/") && !loose).length;
    if (unlabelled) throw new Error(`${unlabelled} photo(s) are in no class folder: type their class first`);
    state.archive = null;
    for (const { file, path } of photos) {
      const parts = path.split("/");
      state.train.push({ file, label: parts.length > 1 ? parts[parts.length - 2] : loose });
    }
  }
  showTrainingFiles();
}

function showTrainingFiles() {
  let text = "Nothing chosen yet.";
  if (state.archive) {
    text = `Zip: ${state.archive.name} (${Math.ceil(state.archive.size / 1024)} KB).`;
  } else if (state.train.length) {
    const counts = new Map();
    for (const { label } of state.train) counts.set(label, (counts.get(label) || 0) + 1);
    const classes = [...counts].sort().map(([label, n]) => `${label} (${n})`);
    text = `${state.train.length} photos in ${counts.size} classes: ${classes.join(", ")}.`;
  }
  $("train-summary").textContent = text;
}

dropzone($("train-drop"), $("train-files"), addTrainingFiles);
picker($("train-folder"), addTrainingFiles);
$("train-clear").addEventListener("click", () => {
  state.train = [];
  state.archive = null;
  showTrainingFiles();
});

$("train-start").addEventListener("click", action(async () => {
  const form = new FormData();
  if (state.archive) {
    form.append("archive", state.archive, state.archive.name);
  } else if (state.train.length) {
    for (const { file, label } of state.train) {
      form.append("images", file, file.name);
      form.append("labels", label);
    }
  } else {
    throw new Error("choose labelled photos or a zip first");
  }
  const config = $("train-config").value.trim();
  if (config) form.append("config", config);
  const job = await apiJson("/adaptations", { method: "POST", body: form });
  say(`Adaptation ${job.id} queued: ${job.num_images} photos, ${job.class_names.length} classes.`);
  showProgress(job.id, job);
  await refreshList();
  await watch(job.id);
}));

// ---- live progress -------------------------------------------------------------------------

/** Follow one adaptation until it ends: Server-Sent Events read with fetch() (EventSource
 *  cannot send the Authorization header), resumed with Last-Event-ID when a stream ends early;
 *  polling GET /adaptations/{id} where the service has no events route. */
async function watch(id) {
  state.watch?.abort();
  const control = new AbortController();
  state.watch = control;
  const { signal } = control;
  const cursor = { lastId: null };
  let streaming = true;
  let job = null;
  while (!job || !ENDED.has(job.status)) {
    if (job) await sleep(POLL_MS, signal);
    const streamed = streaming ? await followEvents(id, signal, cursor) : null;
    if (streamed) {
      job = { ...job, ...streamed };
    } else {
      streaming = false;
      job = await apiJson(`/adaptations/${encodeURIComponent(id)}`, { signal });
      showProgress(id, job);
    }
  }
  if (state.watch === control) state.watch = null;
  await refreshList();
  if (job.status === "succeeded") {
    $("classify-adapter").value = id;
    say(`Adaptation ${id} succeeded: choose photos in section 4 to classify with it.`);
  } else if (job.status === "deleted") {
    say(`Adaptation ${id} was deleted.`);
  } else {
    fail(`Adaptation ${id} ${job.status}${job.error ? `: ${job.error}` : "."}`);
  }
}

/** What one events stream said (its events' data merged; status "deleted" after a deleted
 *  event), or null when the service has no events route or has nothing more to send (204). */
async function followEvents(id, signal, cursor) {
  let resp;
  try {
    const headers = { Accept: "text/event-stream" };
    if (cursor.lastId) headers["Last-Event-ID"] = cursor.lastId;
    resp = await api(`/adaptations/${encodeURIComponent(id)}/events`, { signal, headers });
  } catch (err) {
    if (err instanceof ApiError && [404, 405, 406, 501].includes(err.status)) return null;
    throw err;
  }
  if (!(resp.headers.get("content-type") || "").startsWith("text/event-stream")) return null;
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let job = null;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return job;
      buffer += value;
      const blocks = buffer.split(/\r?\n\r?\n/);
      buffer = blocks.pop();
      for (const block of blocks) {
        const event = parseEvent(block, cursor);
        if (!event) continue;
        job = { ...job, ...event };
        showProgress(id, job);
        if (ENDED.has(job.status)) return job;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** The JSON data of one SSE block (null for comments, keep-alives and non-JSON data); records
 *  its id in ``cursor``. A deleted event (status null) reads as status "deleted". */
function parseEvent(block, cursor) {
  const data = [];
  let name = "message";
  for (const line of block.split(/\r?\n/)) {
    const [field, ...rest] = line.split(":");
    const value = rest.join(":").replace(/^ /, "");
    if (field === "data") data.push(value);
    else if (field === "id") cursor.lastId = value;
    else if (field === "event") name = value;
  }
  if (!data.length) return null;
  let event;
  try { event = JSON.parse(data.join("\n")); } catch { return null; }
  if (!event || typeof event !== "object") return null;
  if (name === "deleted" || ("status" in event && event.status === null)) event.status = "deleted";
  return event;
}

/** Progress bar and one line of text from a job (or an event: status, progress, eta, metrics). */
function showProgress(id, job) {
  const p = job.progress && typeof job.progress === "object" ? job.progress : {};
  let fraction = typeof job.progress === "number" ? job.progress
    : p.steps ? (p.step || 0) / p.steps : p.epochs ? (p.epoch || 0) / p.epochs : 0;
  if (job.status === "succeeded") fraction = 1;
  $("train-progress").value = Math.max(0, Math.min(1, fraction));
  const parts = [`Adaptation ${id}: ${job.status || "…"}`];
  if (p.epochs) parts.push(`epoch ${p.epoch ?? 0}/${p.epochs}`);
  if (typeof p.loss === "number") parts.push(`loss ${p.loss.toFixed(3)}`);
  const eta = job.eta_s ?? p.eta_s;
  if (typeof eta === "number" && !TERMINAL.has(job.status)) parts.push(`about ${Math.ceil(eta)} s left`);
  const accuracy = job.metrics?.val_accuracy;
  if (typeof accuracy === "number") parts.push(`held-out accuracy ${(100 * accuracy).toFixed(1)}%`);
  $("train-status").textContent = parts.join(", ") + ".";
}

// ---- adapters: list, download, delete -------------------------------------------------------

async function refreshList() {
  const page = await apiJson("/adaptations?limit=100");
  const rows = page.items.map((job) => {
    const row = document.createElement("tr");
    const cell = (text) => { const td = document.createElement("td"); td.textContent = text; row.append(td); return td; };
    cell(job.name ? `${job.name} (${job.id})` : job.id).classList.add("id");
    cell(job.status);
    cell(job.class_names.join(", "));
    cell(new Date(job.created_at).toLocaleString());
    const actions = cell("");
    const button = (text, label, handler, enabled = true) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = text;
      b.setAttribute("aria-label", `${label} ${job.id}`);
      b.dataset.id = job.id;
      b.disabled = !enabled;
      b.addEventListener("click", action(() => handler(job.id)));
      actions.append(b);
    };
    if (!TERMINAL.has(job.status)) button("Watch", "Watch adaptation", watch);
    button("Download", "Download adapter", download, job.status === "succeeded");
    button("Delete", "Delete adaptation", remove);
    return row;
  });
  $("adapters").tBodies[0].replaceChildren(...rows);
  fillAdapterChoice(page.items.filter((job) => job.status === "succeeded"));
}

function fillAdapterChoice(jobs) {
  const select = $("classify-adapter");
  const keep = select.value;
  const options = jobs.map((job) => new Option(
    `${job.name || job.id}: ${job.class_names.slice(0, 4).join(", ")}${job.class_names.length > 4 ? ", …" : ""}`, job.id));
  if (!options.length) options.push(new Option("(no succeeded adapter yet)", ""));
  select.replaceChildren(...options);
  if (jobs.some((job) => job.id === keep)) select.value = keep;
}

/** The checkpoint fetched with the header, saved through a blob: URL. */
async function download(id) {
  const blob = await (await api(`/adaptations/${encodeURIComponent(id)}/checkpoint`)).blob();
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = `adapter-${id}.zip`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30000);
  say(`Saved adapter-${id}.zip (${blob.size} bytes).`);
}

async function remove(id) {
  if (!window.confirm(`Delete adaptation ${id}, its photos and its adapter?`)) return;
  await api(`/adaptations/${encodeURIComponent(id)}`, { method: "DELETE" });
  say(`Adaptation ${id} deleted.`);
  await refreshList();
}

$("list-refresh").addEventListener("click", action(async () => {
  await refreshList();
  say(`List refreshed: ${$("adapters").tBodies[0].rows.length} adaptations.`);
}));

// ---- classify and zero-shot ----------------------------------------------------------------

function photoChooser(name, summary) {
  return (chosen) => {
    state[name] = chosen.map(({ file }) => file).filter(isImage);
    summary.textContent = `${state[name].length} photo(s) chosen.`;
  };
}

/** POST photos and form fields to `path`; renders each photo's top-k labels as bars. */
async function classifyInto(path, files, fields, results) {
  if (!files.length) throw new Error("choose photos first");
  const form = new FormData();
  for (const file of files) form.append("images", file, file.name);
  for (const [name, value] of fields) form.append(name, value);
  const answer = await apiJson(path, { method: "POST", body: form });
  results.replaceChildren(...answer.results.map((result) => {
    const figure = document.createElement("figure");
    const file = files[result.index];
    const img = document.createElement("img");
    img.src = URL.createObjectURL(file);
    img.alt = "";
    img.addEventListener("load", () => URL.revokeObjectURL(img.src), { once: true });
    const caption = document.createElement("figcaption");
    caption.textContent = result.filename || file.name;
    const list = document.createElement("ol");
    list.className = "bars";
    for (const { label, score } of result.predictions) {
      const item = document.createElement("li");
      const name = document.createElement("span");
      name.className = "label";
      name.textContent = label;
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.setAttribute("aria-hidden", "true");
      const fill = document.createElement("span");
      fill.style.width = `${(100 * score).toFixed(1)}%`;
      bar.append(fill);
      const value = document.createElement("span");
      value.className = "score";
      value.textContent = `${(100 * score).toFixed(1)}%`;
      item.append(name, bar, value);
      list.append(item);
    }
    figure.append(img, caption, list);
    return figure;
  }));
  say(`Classified ${answer.results.length} photo(s).`);
}

dropzone($("classify-drop"), $("classify-files"), photoChooser("classify", $("classify-chosen")));
dropzone($("zeroshot-drop"), $("zeroshot-files"), photoChooser("zeroshot", $("zeroshot-chosen")));

$("classify-run").addEventListener("click", action(async () => {
  const id = $("classify-adapter").value;
  if (!id) throw new Error("choose a succeeded adapter first");
  await classifyInto(`/classify/${encodeURIComponent(id)}`, state.classify,
    [["top_k", $("classify-topk").value || "3"]], $("classify-results"));
}));

$("zeroshot-run").addEventListener("click", action(async () => {
  const names = $("zeroshot-names").value.split(",").map((name) => name.trim()).filter(Boolean);
  await classifyInto("/classify/zeroshot", state.zeroshot,
    names.map((name) => ["class_names", name]), $("zeroshot-results"));
}));

// ---- start ---------------------------------------------------------------------------------

showKeyState();
if (state.key) action(refreshList)();

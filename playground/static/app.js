// The playground page: write a workflow, run it, and follow the run live over its SSE stream.
import { Api, ApiError, Stream } from "./api.js";
import { createEditor } from "./editor.js";
import { EXAMPLES } from "./examples.js";
import { clock, duration, el, FINISHED, json, stepItem, tracebackList } from "./timeline.js";

const KEY = "treadle.playground.key";
const DRAFT = "treadle.playground.draft";
const DRAFTS = "treadle.playground.drafts"; // the user's edits to each example, by its title
const RUNS_EVERY_MS = 5000; // how often Past runs asks for runs started elsewhere
const NAME = /^[a-zA-Z0-9_][a-zA-Z0-9_-]*$/;
// Which lifecycle action each status allows (docs/api.md, "Statuses and transitions").
const ALLOWED = {
  pause: ["queued", "running", "waiting"],
  resume: ["paused", "waitingForPause"],
  terminate: ["queued", "running", "waiting", "paused", "waitingForPause"],
  restart: ["queued", "running", "waiting", "paused", "waitingForPause", ...FINISHED],
};

const $ = (id) => document.getElementById(id);
const page = {
  api: null,
  run: null, // the open run: {workflow, id, instance, waitingFor, stream}
};

// -- banners and sign-in ------------------------------------------------------------------------

function showError(error) {
  let text = error.message || String(error);
  if (error instanceof ApiError && error.status === 401) {
    text = `The server refused the API key (${error.message}). Sign in again with a tenant API key.`;
  } else if (error instanceof ApiError && error.status) {
    text = `${error.message} (${error.code}, HTTP ${error.status})`;
  }
  $("banner-text").textContent = text;
  $("banner").hidden = false;
  $("banner").classList.remove("notice");
}

function showNotice(text) {
  $("banner-text").textContent = text;
  $("banner").hidden = false;
  $("banner").classList.add("notice");
}

function clearError() {
  $("banner").classList.remove("notice");
  $("banner").hidden = true;
}

async function signIn(key) {
  const api = new Api(key);
  try {
    await api.workflows();
  } catch (error) {
    showError(error);
    if (error instanceof ApiError && error.status === 401) signOut();
    return false;
  }
  if (page.api && page.api.key !== key) closeRun(); // another tenant's run is not this one's
  localStorage.setItem(KEY, key);
  page.api = api;
  $("signin").hidden = true;
  $("signed-in").hidden = false;
  $("signed-in-text").textContent = `Signed in with key ${key.slice(0, 8)}…`;
  clearError();
  refreshRuns();
  return true;
}

function signOut() {
  localStorage.removeItem(KEY);
  page.api = null;
  closeRun();
  $("signin").hidden = false;
  $("signed-in").hidden = true;
  $("runs").replaceChildren(el("li", { class: "hint", text: "Sign in to see the tenant's runs." }));
}

// A key in the address's fragment (#key=..., as `treadle serve` prints it) never reaches the
// server or its logs; it is kept here and removed from the address bar at once.
function keyFromFragment() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const key = fragment.get("key");
  if (key) history.replaceState(null, "", location.pathname + location.search);
  return key;
}

// -- authoring ----------------------------------------------------------------------------------

// Each example keeps the user's edits to it (its code, name and params), across reloads too:
// switching examples never loses them, and Reset brings the example's original back. The
// sandbox is the user's choice for every example.
function exampleDraft(title) {
  const example = EXAMPLES.find((e) => e.title === title) || EXAMPLES[0];
  return { example: example.title, source: example.source, workflow: example.workflow,
    params: json(example.params) };
}

function savedDraft(title) {
  return JSON.parse(localStorage.getItem(DRAFTS) || "{}")[title] || exampleDraft(title);
}

function edited(draft) {
  const original = exampleDraft(draft.example);
  return ["source", "workflow", "params"].some((field) => draft[field] !== original[field]);
}

function saveDraft() {
  if (page.showing) return; // half shown: the editor changed, the fields not yet
  const draft = {
    example: $("example").value,
    source: page.editor.getDoc(),
    workflow: $("workflow").value,
    sandbox: $("sandbox").value,
    params: $("params").value,
  };
  const drafts = JSON.parse(localStorage.getItem(DRAFTS) || "{}");
  if (edited(draft)) drafts[draft.example] = draft;
  else delete drafts[draft.example];
  localStorage.setItem(DRAFTS, JSON.stringify(drafts));
  localStorage.setItem(DRAFT, JSON.stringify(draft));
  $("example-reset").disabled = !edited(draft);
}

function showDraft(draft) {
  page.showing = true;
  try {
    $("example").value = draft.example;
    page.editor.setDoc(draft.source);
    $("workflow").value = draft.workflow;
    $("params").value = draft.params;
  } finally {
    page.showing = false;
  }
  showProblems([]);
  checkParams();
  saveDraft();
}

function params() {
  const text = $("params").value.trim();
  return text ? JSON.parse(text) : null;
}

function checkParams() {
  try {
    params();
    $("params-error").hidden = true;
    $("params").classList.remove("invalid");
    return true;
  } catch (error) {
    $("params-error").textContent = `Params are not valid JSON: ${error.message}`;
    $("params-error").hidden = false;
    $("params").classList.add("invalid");
    return false;
  }
}

function showProblems(problems) {
  page.editor.setProblems(problems);
  const list = $("problems");
  list.replaceChildren(
    ...problems.map((problem) => {
      const item = el("li", {},
        el("button", { type: "button", class: "where", text: `line ${problem.line}, column ${problem.column}` }),
        ` ${problem.message}`);
      item.querySelector("button").addEventListener("click", () =>
        page.editor.goTo(problem.line, problem.column));
      return item;
    }),
  );
  list.hidden = problems.length === 0;
}

async function run() {
  if ($("run").disabled) return; // one upload at a time
  clearError();
  if (!page.api) return showError(new Error("Sign in with a tenant API key first."));
  const workflow = $("workflow").value.trim();
  if (!NAME.test(workflow)) {
    return showError(new Error("The workflow name may hold letters, digits, '_' and '-' only."));
  }
  if (!checkParams()) return $("params").focus();
  const button = $("run");
  button.disabled = true;
  $("run-hint").textContent = "uploading…";
  try {
    const uploaded = await page.api.deploy(workflow, page.editor.getDoc(), $("sandbox").value,
      (building) => {
        $("run-hint").textContent =
          `building the Python-in-Wasm runtime (first start only), about ${building.retry_after} s…`;
      });
    showProblems([]);
    $("run-hint").textContent = `version ${uploaded.version.slice(0, 8)} · starting…`;
    const created = await page.api.create(workflow, params());
    $("run-hint").textContent = "";
    await openRun(workflow, created.id);
    refreshRuns();
  } catch (error) {
    $("run-hint").textContent = "";
    if (error instanceof ApiError && error.code === "code.invalid") {
      showProblems(error.details.problems || []);
      const count = (error.details.problems || []).length;
      showError(new Error(`The code was not accepted: ${count} problem${count === 1 ? "" : "s"}, marked in the editor.`));
    } else {
      showError(error);
    }
  } finally {
    button.disabled = false;
  }
}

// -- the live view of one run -------------------------------------------------------------------

function closeRun() {
  if (page.run && page.run.stream) page.run.stream.close();
  page.run = null;
  $("run-view").hidden = true;
  $("run-empty").hidden = false;
}

async function openRun(workflow, id) {
  closeRun();
  const run = { workflow, id, instance: null, waitingFor: null, stream: null };
  page.run = run;
  $("run-empty").hidden = true;
  $("run-view").hidden = false;
  $("run-title").textContent = `${workflow} / ${id}`;
  $("logs").textContent = "";
  $("timeline").replaceChildren();
  $("event-result").textContent = "";
  $("event-type").value = "";
  $("event-type").dataset.filled = "auto";
  $("event-payload").value = "{}";
  markCurrentRun();
  try {
    run.instance = await page.api.instance(workflow, id);
  } catch (error) {
    if (page.run === run) showError(error);
    return;
  }
  if (page.run !== run) return; // another run was opened meanwhile
  render();
  follow(run, 0);
}

// History first, then live: every event refreshes the instance (its steps with their attempts).
function follow(run, after) {
  const stream = new Stream(page.api, run.workflow, run.id, {
    after,
    onEvent: (event) => onEvent(run, event),
    onState: (state, why) => {
      if (page.run !== run || run.stream !== stream) return;
      const words = { connecting: "connecting…", live: "● live", reconnecting: "reconnecting…",
        ended: "stream ended", failed: "stream failed" };
      // While reconnecting, why: the server is restarting, cannot be reached, ...
      const text = state === "reconnecting" ? `${words[state]} ${why}` : words[state];
      $("stream-state").textContent = text;
      $("stream-state").dataset.state = state;
      if (state === "failed") showError(why);
      if (state === "ended") streamEnded(run, stream);
    },
  });
  run.stream = stream;
  stream.start();
}

// The stream ends once the run has finished (it reconnects by itself until then); a restart of
// the run since brings it back to life.
async function streamEnded(run, stream) {
  let instance;
  try {
    instance = await page.api.instance(run.workflow, run.id);
  } catch (error) {
    if (page.run === run) showError(error);
    return;
  }
  if (page.run !== run) return;
  run.instance = instance;
  render();
  if (!FINISHED.includes(instance.status)) {
    setTimeout(() => page.run === run && run.stream === stream && follow(run, stream.after), 1000);
  }
}

function onEvent(run, event) {
  if (page.run !== run) return;
  if (event.type === "log") {
    const where = event.step ? ` [${event.step}]` : "";
    $("logs").textContent += `${clock(event.ts)}${where} ${event.data.message}\n`;
    return;
  }
  if (event.type === "workflow.queued" && event.data.action === "restart") {
    $("logs").textContent += `── restarted at ${clock(event.ts)} ──\n`;
  }
  if (event.type.startsWith("workflow.")) {
    run.waitingFor = event.type === "workflow.waiting" ? event.data.event_type || null : null;
    refreshRuns();
  }
  refreshInstance(run);
}

// `work` at most once at a time: calls made meanwhile run it once more afterwards, so a burst of
// events (a long history) costs two requests, and the last one sees the latest state.
function coalesced(work) {
  let running = false;
  let again = null; // the arguments of the latest call made meanwhile
  return async function call(...args) {
    if (running) {
      again = args;
      return;
    }
    running = true;
    try {
      await work(...args);
    } finally {
      running = false;
    }
    if (again) {
      const latest = again;
      again = null;
      call(...latest);
    }
  };
}

const refreshInstance = coalesced(async (run) => {
  try {
    const instance = await page.api.instance(run.workflow, run.id);
    if (page.run === run) {
      run.instance = instance;
      render();
    }
  } catch (error) {
    // The server out of reach: the stream shows "reconnecting…", and its next event refreshes.
    if (page.run === run && !outage(error)) showError(error);
  }
});

const outage = (error) => error instanceof ApiError && [0, 502, 503, 504].includes(error.status);

function render() {
  const run = page.run;
  if (!run || !run.instance) return;
  const instance = run.instance;
  const now = Date.now();
  const status = $("run-status");
  status.textContent = instance.status;
  status.dataset.status = instance.status;
  renderMeta(instance, now);
  for (const button of document.querySelectorAll("[data-action]")) {
    button.disabled = !ALLOWED[button.dataset.action].includes(instance.status);
  }
  renderEventForm(run);
  const steps = instance.steps || [];
  // Rebuilt on every change: keep the results the user opened open.
  const opened = new Set([...$("timeline").querySelectorAll("details[open]")].map((d) => d.dataset.key));
  $("timeline").replaceChildren(
    ...(steps.length ? steps.map((step) => stepItem(step, run, now, goToLine))
      : [el("li", { class: "step none", text: "no step has committed yet" })]),
  );
  for (const details of $("timeline").querySelectorAll("details")) {
    if (opened.has(details.dataset.key)) details.open = true;
  }
  renderResult(instance);
}

function renderMeta(instance, now) {
  const started = instance.started_at || instance.created_at;
  const end = instance.ended_at ? Date.parse(instance.ended_at) : now;
  const parts = [
    `version ${instance.version.slice(0, 8)}`,
    `created ${clock(instance.created_at)}`,
    `${instance.ended_at ? "took" : "running for"} ${duration((end - Date.parse(started)) / 1000)}`,
  ];
  $("run-meta").textContent = parts.join(" · ");
  $("run-meta").title = `params: ${JSON.stringify(instance.params)}`;
}

function renderEventForm(run) {
  const finished = FINISHED.includes(run.instance.status);
  $("event-send").disabled = finished;
  const waiting = run.instance.status === "waiting" && run.waitingFor;
  const hint = $("event-hint");
  if (waiting) {
    hint.textContent = `This run waits for an event of type '${run.waitingFor}'.`;
    if (!$("event-type").value || $("event-type").dataset.filled === "auto") {
      $("event-type").value = run.waitingFor;
      $("event-type").dataset.filled = "auto";
    }
  } else {
    hint.textContent = finished ? "The run has finished." : "Events sent before a wait are kept for it.";
  }
  $("event-form").classList.toggle("wanted", Boolean(waiting));
}

// A frame of an error's traceback was clicked: show that line of the code in the editor.
function goToLine(line) {
  page.editor.goTo(line, 1);
}

function renderResult(instance) {
  const box = $("result");
  $("result-traceback").replaceChildren(
    ...(tracebackList(instance.error, goToLine)?.childNodes ?? []));
  if (instance.status === "complete") {
    $("result-title").textContent = "Output";
    $("result-body").textContent = json(instance.output);
  } else if (instance.error) {
    $("result-title").textContent = "Error";
    $("result-body").textContent = `${instance.error.name}: ${instance.error.message}`;
  } else if (instance.status === "terminated") {
    $("result-title").textContent = "Terminated";
    $("result-body").textContent = "The run was terminated.";
  } else {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  box.dataset.status = instance.status;
}

async function changeStatus(action) {
  const run = page.run;
  clearError();
  try {
    run.instance = await page.api.changeStatus(run.workflow, run.id, action);
    render();
    // A finished run's stream has ended: a restart brings it back to life.
    if (action === "restart") {
      run.stream.close();
      follow(run, run.stream.after);
    }
    refreshRuns();
  } catch (error) {
    showError(error);
  }
}

async function sendEvent(submit) {
  submit.preventDefault();
  const run = page.run;
  clearError();
  const type = $("event-type").value.trim();
  if (!NAME.test(type)) return showError(new Error("An event type holds letters, digits, '_' and '-' only."));
  let payload;
  try {
    payload = JSON.parse($("event-payload").value.trim() || "null");
  } catch (error) {
    return showError(new Error(`The event payload is not valid JSON: ${error.message}`));
  }
  try {
    await page.api.sendEvent(run.workflow, run.id, type, payload);
    $("event-result").textContent = `sent '${type}' at ${clock(new Date().toISOString())}`;
  } catch (error) {
    showError(error);
  }
}

// -- past runs ----------------------------------------------------------------------------------

// The newest runs of every workflow of the tenant. A refresh the user did not ask for is
// `quiet`: it fails without a banner (every few seconds, a banner would hide any other).
const refreshRuns = coalesced(async (quiet = false) => {
  if (!page.api) return;
  const api = page.api;
  try {
    const { workflows } = await page.api.workflows();
    // One request per workflow: a tenant with very many asks about the one open first.
    const names = workflows.map((w) => w.name);
    const open = page.run ? [page.run.workflow] : [];
    const asked = [...new Set([...open.filter((n) => names.includes(n)), ...names])].slice(0, 25);
    const lists = await Promise.all(asked.map((name) => page.api.instances(name)));
    const runs = lists.flatMap((list) => list.instances);
    runs.sort((a, b) => b.created_at.localeCompare(a.created_at));
    if (page.api === api) renderRuns(runs.slice(0, 30)); // not signed in as another meanwhile
  } catch (error) {
    if (!quiet) showError(error);
  }
});

// Runs started elsewhere (the CLI, another client) show up on their own: every few seconds
// while the page is in sight, and as soon as it is back in sight.
function refreshRunsOnTheirOwn() {
  const visible = () => document.visibilityState === "visible";
  setInterval(() => visible() && refreshRuns(true), RUNS_EVERY_MS);
  window.addEventListener("focus", () => refreshRuns(true));
  document.addEventListener("visibilitychange", () => visible() && refreshRuns(true));
}

const runKey = ({ workflow, id }) => `${workflow}/${id}`;

function pastRun(instance) {
  const button = el("button", { type: "button", class: "past-run",
    title: `${instance.workflow} / ${instance.id}` },
    el("b", { text: instance.workflow }),
    el("span", { class: "status" }),
    el("span", { class: "run-id", text: instance.id.slice(0, 12) }),
    el("span", { class: "when", text: clock(instance.created_at) }));
  button.dataset.workflow = instance.workflow;
  button.dataset.id = instance.id;
  button.addEventListener("click", () => {
    openRun(instance.workflow, instance.id);
    revealRunView();
  });
  return el("li", {}, button);
}

// The cards shown are kept and updated, new ones inserted: the card in focus, the selection and
// the list's scroll position stay as they were.
function renderRuns(runs) {
  const list = $("runs");
  const shown = new Map([...list.querySelectorAll(".past-run")].map((b) => [runKey(b.dataset), b]));
  const items = runs.map((instance) => {
    const item = shown.has(runKey(instance)) ? shown.get(runKey(instance)).parentElement : pastRun(instance);
    const status = item.querySelector(".status");
    status.textContent = instance.status;
    status.dataset.status = instance.status;
    return item;
  });
  if (!items.length) items.push(el("li", { class: "hint", text: "no runs yet" }));
  items.forEach((item, index) => {
    if (list.children[index] !== item) list.insertBefore(item, list.children[index] || null);
  });
  while (list.children.length > items.length) list.lastElementChild.remove();
  markCurrentRun();
}

// A run opened from the list (below the run view on a narrow screen, or with the page scrolled
// down) is shown where the user can see it.
function revealRunView() {
  const top = $("run-view").getBoundingClientRect().top;
  if (top < 0 || top > window.innerHeight * 0.6) $("run-view").scrollIntoView({ block: "start" });
}

function markCurrentRun() {
  for (const button of document.querySelectorAll(".past-run")) {
    const current = page.run && button.dataset.id === page.run.id
      && button.dataset.workflow === page.run.workflow;
    button.classList.toggle("current", Boolean(current));
  }
}

// -- start --------------------------------------------------------------------------------------

function start() {
  const saved = JSON.parse(localStorage.getItem(DRAFT) || "null");
  const draft = { ...exampleDraft(EXAMPLES[0].title), ...saved };
  // A draft saved before drafts named their example (or of an example since renamed): the first.
  if (!EXAMPLES.some((e) => e.title === draft.example)) draft.example = EXAMPLES[0].title;
  page.editor = createEditor($("editor"), { doc: draft.source, onChange: saveDraft });
  const examples = $("example");
  examples.append(...EXAMPLES.map((e) => el("option", { value: e.title, text: e.title })));
  examples.value = draft.example;
  $("workflow").value = draft.workflow;
  $("params").value = draft.params;
  if (draft.sandbox) $("sandbox").value = draft.sandbox;
  saveDraft();
  examples.addEventListener("change", () => showDraft(savedDraft(examples.value)));
  $("example-reset").addEventListener("click", () => showDraft(exampleDraft(examples.value)));
  $("workflow").addEventListener("input", saveDraft);
  $("sandbox").addEventListener("change", saveDraft);
  $("params").addEventListener("input", () => {
    checkParams();
    saveDraft();
  });
  $("run").addEventListener("click", run);
  // Caught on its way down, before the editor, whose own Ctrl/Cmd+Enter inserts a blank line:
  // the keys run the code as it is.
  window.addEventListener("keydown", (key) => {
    if (key.key === "Enter" && (key.ctrlKey || key.metaKey)) {
      key.preventDefault();
      key.stopPropagation();
      run();
    }
  }, { capture: true });
  $("signin").addEventListener("submit", (submit) => {
    submit.preventDefault();
    const key = $("key").value.trim();
    if (key) signIn(key).then((ok) => ok && ($("key").value = ""));
  });
  $("signout").addEventListener("click", signOut);
  $("banner-close").addEventListener("click", clearError);
  $("runs-refresh").addEventListener("click", () => refreshRuns());
  $("event-type").addEventListener("input", () => ($("event-type").dataset.filled = "user"));
  $("event-form").addEventListener("submit", sendEvent);
  for (const button of document.querySelectorAll("[data-action]")) {
    button.addEventListener("click", () => changeStatus(button.dataset.action));
  }
  // Countdowns and running times move on between events.
  setInterval(() => page.run && page.run.instance && !FINISHED.includes(page.run.instance.status) && render(), 1000);
  refreshRunsOnTheirOwn();
  // A #key= link opened in this tab while the page is open: sign in with that key.
  window.addEventListener("hashchange", () => {
    const linked = keyFromFragment();
    if (linked) signIn(linked);
  });
  const key = keyFromFragment() || localStorage.getItem(KEY);
  if (key) signIn(key);
  else {
    signOut();
    showNotice("Sign in with a tenant API key: treadle serve prints the default tenant's on its first start.");
  }
}

start();

// The playground page: write a workflow, run it, and follow the run live over its SSE stream.
import { Api, ApiError, Stream } from "./api.js";
import { createEditor } from "./editor.js";
import { EXAMPLES } from "./examples.js";
import {
  clock, duration, el, FINISHED, json, moment, seconds, stepItem, tracebackList, waitingText,
} from "./timeline.js";

const KEY = "treadle.playground.key";
const DRAFT = "treadle.playground.draft";
const DRAFTS = "treadle.playground.drafts"; // the user's edits to each example, by its title
const OPTIONS = "treadle.playground.options"; // the run form's flow control: key, priority, ...
const SCHEDULES_EVERY_MS = 2500; // how often the schedules panel asks for next and last fires
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
  run: null, // the open run: {workflow, id, instance, waitingFor, stream, queuedAt, flow}
  starts: new Map(), // "workflow/id" -> ms: when a run this page created with a delay starts
  schedules: null, // the schedules panel: {workflow, list}
};

// -- banners and sign-in ------------------------------------------------------------------------

// `action`, if given, is a button in the banner: {label, run} (open the live instance, ...).
function showError(error, action = null) {
  let text = error.message || String(error);
  if (error instanceof ApiError && error.status === 401) {
    text = `The server refused the API key (${error.message}). Sign in again with a tenant API key.`;
  } else if (error instanceof ApiError && error.status) {
    text = `${error.message} (${error.code}, HTTP ${error.status})`;
  }
  $("banner-text").textContent = text;
  $("banner").hidden = false;
  $("banner").classList.remove("notice");
  const button = $("banner-action");
  button.hidden = !action;
  button.textContent = action ? action.label : "";
  button.onclick = action ? () => {
    clearError();
    action.run();
  } : null;
}

function showNotice(text) {
  $("banner-action").hidden = true;
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
  refreshSchedules(true);
  return true;
}

function signOut() {
  localStorage.removeItem(KEY);
  page.api = null;
  closeRun();
  $("signin").hidden = false;
  $("signed-in").hidden = true;
  $("runs").replaceChildren(el("li", { class: "hint", text: "Sign in to see the tenant's runs." }));
  showSchedules($("workflow").value.trim(), [], "Sign in to see the workflow's schedules.");
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
  refreshSchedules(true); // of the workflow now named
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

// -- the run form's flow control (docs/flow-control.md) ----------------------------------------

const OPTION_FIELDS = { tags: "run-tags", key: "run-key", priority: "run-priority", delay: "run-delay",
  flow: "flow" };

// The pairs typed in a tags field: "k=v k2=v2", a space or comma between pairs (a value holds
// no space).
function typedPairs(text) {
  return text.split(/[\s,]+/).filter(Boolean);
}

// Typed tags as an object; an Error saying `how` they are typed for a pair that is not k=v.
function tagPairs(text, how) {
  const tags = {};
  for (const pair of typedPairs(text)) {
    const at = pair.indexOf("=");
    if (at < 1) throw new Error(`${how} as k=v, not '${pair}'.`);
    tags[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return tags;
}

function saveOptions() {
  const saved = Object.fromEntries(Object.entries(OPTION_FIELDS).map(([name, id]) => [name, $(id).value]));
  localStorage.setItem(OPTIONS, JSON.stringify(saved));
  summarizeOptions();
}

function showOptions() {
  const saved = JSON.parse(localStorage.getItem(OPTIONS) || "{}");
  for (const [name, id] of Object.entries(OPTION_FIELDS)) $(id).value = saved[name] || "";
  summarizeOptions();
  if (Object.values(saved).some(Boolean)) $("run-options").open = true;
}

// What is set, beside the summary, so that a closed section still says it is in effect.
function summarizeOptions() {
  const parts = [];
  const tags = typedPairs($("run-tags").value).length;
  if (tags) parts.push(`${tags} tag${tags === 1 ? "" : "s"}`);
  if ($("run-key").value.trim()) parts.push(`key '${$("run-key").value.trim()}'`);
  if ($("run-priority").value.trim()) parts.push(`priority ${$("run-priority").value.trim()}`);
  if ($("run-delay").value.trim()) parts.push(`delay ${$("run-delay").value.trim()}`);
  if ($("flow").value.trim()) parts.push("flow");
  $("run-options-summary").textContent = parts.length ? `· ${parts.join(", ")}` : "";
}

// The flow sent with the upload and the create's options; an Error naming the field if one is
// not valid (the server checks them again, and its refusal names the field too).
function runOptions() {
  const field = (id) => $(id).value.trim();
  let flow = null;
  if (field("flow")) {
    try {
      flow = JSON.parse(field("flow"));
    } catch (error) {
      throw Object.assign(new Error(`Workflow flow is not valid JSON: ${error.message}`), { field: "flow" });
    }
  }
  const options = {};
  if (field("run-tags")) {
    try {
      options.tags = tagPairs(field("run-tags"), "Give tags");
    } catch (error) {
      throw Object.assign(error, { field: "run-tags" });
    }
  }
  if (field("run-key")) options.key = field("run-key");
  if (field("run-priority")) {
    const priority = Number(field("run-priority"));
    if (!Number.isInteger(priority) || priority < 0 || priority > 9) {
      throw Object.assign(new Error("Priority must be a whole number from 0 to 9."), { field: "run-priority" });
    }
    options.priority = priority;
  }
  if (field("run-delay")) {
    const delay = field("run-delay");
    options.delay = /^\d+(\.\d+)?$/.test(delay) ? Number(delay) : delay;
  }
  return { flow, options };
}

function showOptionsError(error) {
  const box = $("run-options-error");
  for (const id of Object.values(OPTION_FIELDS)) $(id).classList.remove("invalid");
  box.hidden = !error;
  box.textContent = error ? error.message : "";
  if (error && error.field) {
    $("run-options").open = true;
    $(error.field).classList.add("invalid");
    $(error.field).focus();
  }
}

// The field of the run form a refusal of the server names ("invalid request: priority: ...",
// "flow.debounce: ..."), if any.
function optionFieldOf(error) {
  const named = /^(?:invalid request: )?(?:instances\.\d+\.)?([a-z_]+)[.:]/.exec(error.message || "");
  const fields = { tags: "run-tags", key: "run-key", priority: "run-priority", delay: "run-delay",
    start_at: "run-delay", flow: "flow" };
  return named && fields[named[1]];
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
  let flow;
  let options;
  try {
    ({ flow, options } = runOptions());
    showOptionsError(null);
  } catch (error) {
    return showOptionsError(error);
  }
  const button = $("run");
  button.disabled = true;
  $("run-hint").textContent = "uploading…";
  try {
    const uploaded = await page.api.deploy(workflow, page.editor.getDoc(), $("sandbox").value,
      (building) => {
        $("run-hint").textContent =
          `building the Python-in-Wasm runtime (first start only), about ${building.retry_after} s…`;
      }, 600, flow);
    showProblems([]);
    $("run-hint").textContent = `version ${uploaded.version.slice(0, 8)} · starting…`;
    const asked = Date.now();
    const created = await page.api.create(workflow, params(), options);
    if (options.delay !== undefined && seconds(options.delay) !== null) {
      page.starts.set(`${workflow}/${created.id}`, asked + seconds(options.delay) * 1000);
    }
    $("run-hint").textContent = created.debounced
      ? `debounced into ${created.id}: it runs once, with these params` : "";
    await openRun(workflow, created.id);
    refreshRuns();
    refreshSchedules(true); // the workflow may be new: its (empty) list, not "not uploaded"
  } catch (error) {
    $("run-hint").textContent = "";
    if (error instanceof ApiError && error.code === "instance.singleton") {
      // The key has a live instance: say so, and offer it.
      const existing = error.details.existing_id;
      showError(error, existing ? { label: `Open ${existing}`, run: () => {
        openRun(workflow, existing);
        revealRunView();
      } } : null);
    } else if (error instanceof ApiError && error.status === 400 && optionFieldOf(error)) {
      const field = optionFieldOf(error);
      showOptionsError(Object.assign(new Error(error.message), { field }));
      showError(error);
    } else if (error instanceof ApiError && error.code === "code.invalid") {
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
  const run = { workflow, id, instance: null, waitingFor: null, stream: null, queuedAt: null,
    flow: undefined };
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
  if (event.type === "workflow.queued") {
    run.queuedAt = Date.parse(event.ts); // a debounced create pushes the start back from here
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
  const waiting = waitingItem(run);
  $("timeline").replaceChildren(
    ...(waiting ? [waiting] : []),
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
  // Flow control, when set: the key, and a priority other than the default.
  const flow = [];
  if (instance.key !== null && instance.key !== undefined) flow.push(`key '${instance.key}'`);
  if (instance.priority !== undefined && instance.priority !== 5) flow.push(`priority ${instance.priority}`);
  else if (flow.length) flow.push("priority 5");
  $("run-flow").textContent = flow.join(" · ");
  $("run-flow").hidden = !flow.length;
}

// A queued run's first line in the timeline: why it has not started (its waiting_reason).
function waitingItem(run) {
  const text = waitingText(run.instance, startsAt(run));
  if (!text) return null;
  return el("li", { id: "waiting-reason", class: "step queued", "data-reason": run.instance.waiting_reason },
    el("span", { class: "dot", "aria-hidden": "true" }),
    el("div", { class: "step-main" }, el("div", { class: "detail waiting", text })));
}

// When a delayed or debounced run starts, if the page can tell: a delay it sent itself, or the
// workflow's debounce counted from the last create of the key (its last workflow.queued event).
function startsAt(run) {
  const reason = run.instance.waiting_reason;
  if (reason === "start_at") return page.starts.get(`${run.workflow}/${run.id}`) || null;
  if (reason !== "debounce" || run.queuedAt === null) return null;
  if (run.flow === undefined) {
    run.flow = null; // asked once per run
    page.api.workflow(run.workflow).then((found) => {
      run.flow = found.flow || {};
      if (page.run === run) render();
    }, () => {});
  }
  const debounce = run.flow && seconds(run.flow.debounce);
  return debounce ? run.queuedAt + debounce * 1000 : null;
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

// The filter of Past runs as the query of GET /v1/instances ({status, "tag.<k>", key,
// id_prefix}, only what is filled in): the one place that says which runs the panel is about.
function currentFilter() {
  const filter = {};
  const status = $("runs-status").value;
  if (status) filter.status = status;
  for (const [key, value] of Object.entries(tagPairs($("runs-tag").value, "Filter runs by tag"))) {
    filter[`tag.${key}`] = value;
  }
  const key = $("runs-key").value.trim();
  if (key) filter.key = key;
  const prefix = $("runs-id-prefix").value.trim();
  if (prefix) filter.id_prefix = prefix;
  return filter;
}

// The newest runs of every workflow of the tenant that match the filter. A refresh the user did
// not ask for is `quiet`: it fails without a banner (every few seconds, a banner would hide any
// other).
const refreshRuns = coalesced(async (quiet = false) => {
  if (!page.api) return;
  const api = page.api;
  try {
    const filter = currentFilter();
    const { instances } = await page.api.allInstances(filter, 30);
    const filtered = Object.keys(filter).length > 0;
    if (page.api === api) renderRuns(instances, filtered); // not signed in as another meanwhile
  } catch (error) {
    if (!quiet) showError(error);
  }
});

// A filter typed in applies once the typing pauses; a status chosen, at once.
function filterRunsAsTyped() {
  let timer = null;
  const later = () => {
    clearTimeout(timer);
    timer = setTimeout(() => refreshRuns(), 300);
  };
  for (const id of ["runs-tag", "runs-key", "runs-id-prefix"]) $(id).addEventListener("input", later);
  $("runs-status").addEventListener("change", () => refreshRuns());
  $("runs-filter").addEventListener("submit", (submit) => {
    submit.preventDefault();
    refreshRuns();
  });
}

// -- bulk actions on the runs that match the filter (docs/bulk.md) ------------------------------

const BULK_EVERY_MS = 500; // how often a bulk job's progress is read until it is over

// The filter of Past runs (currentFilter(), a query) as the body of a bulk action.
function bulkFilter() {
  const filter = {};
  const tags = {};
  for (const [name, value] of Object.entries(currentFilter())) {
    if (name.startsWith("tag.")) tags[name.slice(4)] = value;
    else if (name === "status") filter.status = [].concat(value);
    else filter[name] = value;
  }
  if (Object.keys(tags).length) filter.tags = tags;
  return filter;
}

function bulkText(job) {
  const failed = job.failed ? `, ${job.failed} failed` : "";
  return `${job.action}: ${job.done + job.failed}/${job.matched} (${job.done} done${failed}) — ${job.status}`;
}

async function applyBulk(submit) {
  submit.preventDefault();
  if (!page.api) return;
  const action = $("bulk-action").value;
  let filter;
  try {
    filter = bulkFilter();
  } catch (error) {
    showError(error);
    return;
  }
  const which = Object.keys(filter).length ? "every run matching the filter" : "EVERY run of every workflow";
  if (!window.confirm(`${action[0].toUpperCase()}${action.slice(1)} ${which}?`)) return;
  const api = page.api;
  const output = $("bulk-progress");
  $("bulk-apply").disabled = true;
  try {
    const { job, matched } = await api.bulk(filter, action);
    output.textContent = `${action}: 0/${matched} — running`;
    let found = await api.bulkJob(job);
    while (found.status === "running") {
      output.textContent = bulkText(found);
      await new Promise((resolve) => setTimeout(resolve, BULK_EVERY_MS));
      found = await api.bulkJob(job);
    }
    output.textContent = bulkText(found);
    output.dataset.status = found.status;
    refreshRuns();
  } catch (error) {
    showError(error);
  } finally {
    $("bulk-apply").disabled = false;
  }
}

// Runs started elsewhere (the CLI, another client) show up on their own: every few seconds
// while the page is in sight, and as soon as it is back in sight.
function refreshRunsOnTheirOwn() {
  const visible = () => document.visibilityState === "visible";
  setInterval(() => visible() && refreshRuns(true), RUNS_EVERY_MS);
  window.addEventListener("focus", () => refreshRuns(true));
  document.addEventListener("visibilitychange", () => visible() && refreshRuns(true));
}

const runKey = ({ workflow, id }) => `${workflow}/${id}`;

function tagsOf(instance) {
  const pairs = Object.entries(instance.tags || {}).map(([k, v]) => `${k}=${v}`);
  return pairs.length ? [el("span", { class: "tags", text: pairs.join(" ") })] : [];
}

function pastRun(instance) {
  const button = el("button", { type: "button", class: "past-run",
    title: `${instance.workflow} / ${instance.id}` },
    el("b", { text: instance.workflow }),
    el("span", { class: "status" }),
    el("span", { class: "run-id", text: instance.id.slice(0, 12) }),
    el("span", { class: "when", text: clock(instance.created_at) }),
    ...tagsOf(instance));
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
function renderRuns(runs, filtered = false) {
  const list = $("runs");
  const shown = new Map([...list.querySelectorAll(".past-run")].map((b) => [runKey(b.dataset), b]));
  const items = runs.map((instance) => {
    const item = shown.has(runKey(instance)) ? shown.get(runKey(instance)).parentElement : pastRun(instance);
    const status = item.querySelector(".status");
    status.textContent = instance.status;
    status.dataset.status = instance.status;
    return item;
  });
  if (!items.length) items.push(el("li", { class: "hint", text: filtered ? "no runs match" : "no runs yet" }));
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

// -- the schedules of the workflow named in the form (docs/schedules.md) ------------------------

const SCHEDULE_FIELDS = { id: "schedule-id", cron: "schedule-when", every: "schedule-when",
  timezone: "schedule-timezone", params: "schedule-params", overlap: "schedule-overlap",
  catch_up: "schedule-catch-up" };

// The id of the instance a fire made: `{schedule id}-{due time in UTC, YYYYMMDDTHHMMSSZ}`.
function firedId(scheduleId, iso) {
  const utc = new Date(iso).toISOString().replace(/\.\d+Z$/, "Z");
  return `${scheduleId}-${utc.replace(/[-:]/g, "")}`;
}

// A period in its largest whole unit: "every 2 s", "every 90 min", "every 1 d".
function period(total) {
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["min", 60]]) {
    if (total >= size && total % size === 0) return `${total / size} ${unit}`;
  }
  return `${total} s`;
}

const whenText = (schedule) => (schedule.cron !== null && schedule.cron !== undefined
  ? `cron ${schedule.cron}` : `every ${period(seconds(schedule.every))}`);

// The spec of a schedule as read, to put it back (paused or resumed).
function specOf(schedule, paused) {
  const spec = { timezone: schedule.timezone, params: schedule.params, overlap: schedule.overlap,
    catch_up: schedule.catch_up, paused };
  if (schedule.cron !== null && schedule.cron !== undefined) spec.cron = schedule.cron;
  else spec.every = schedule.every;
  return spec;
}

// Every few seconds while in sight (next and last fires move on), on ↻, after a change, and
// when the workflow's name changes. `quiet`: a failure says so in the panel's hint only.
const refreshSchedules = coalesced(async (quiet = false) => {
  const workflow = $("workflow").value.trim();
  $("schedules-workflow").textContent = workflow || "…";
  if (!page.api) return;
  if (!NAME.test(workflow)) return showSchedules(workflow, [], "Name the workflow to see its schedules.");
  const api = page.api;
  try {
    const { schedules } = await api.schedules(workflow);
    if (page.api === api && $("workflow").value.trim() === workflow) showSchedules(workflow, schedules);
  } catch (error) {
    if (page.api !== api || $("workflow").value.trim() !== workflow) return;
    if (error instanceof ApiError && error.status === 404) {
      showSchedules(workflow, [], `Workflow '${workflow}' is not uploaded yet: run it once, then schedule it.`);
    } else if (quiet || outage(error)) {
      $("schedules-hint").textContent = `Could not list the schedules: ${error.message}`;
    } else {
      showError(error);
    }
  }
});

// The rows shown are kept and updated in place, new ones added: the button in focus stays.
function showSchedules(workflow, schedules, hint = "") {
  const rows = $("schedule-rows");
  if (!page.schedules || page.schedules.workflow !== workflow) rows.replaceChildren();
  page.schedules = { workflow, list: schedules };
  $("schedules-workflow").textContent = workflow || "…";
  const shown = new Map([...rows.children].map((row) => [row.dataset.id, row]));
  schedules.forEach((schedule, index) => {
    const row = shown.get(schedule.id) || scheduleRow(workflow, schedule.id);
    updateScheduleRow(row, schedule);
    if (rows.children[index] !== row) rows.insertBefore(row, rows.children[index] || null);
    shown.delete(schedule.id);
  });
  for (const gone of shown.values()) gone.remove();
  $("schedules").hidden = !schedules.length;
  $("schedules-hint").textContent = hint || (schedules.length ? ""
    : `No schedule yet: add one below to run '${workflow}' on a timetable.`);
}

function scheduleRow(workflow, scheduleId) {
  const fired = el("button", { type: "button", class: "fired link" });
  fired.addEventListener("click", () => {
    openRun(workflow, fired.dataset.instance);
    revealRunView();
  });
  const toggle = el("button", { type: "button", "data-schedule-action": "toggle" });
  toggle.addEventListener("click", () => toggleSchedule(workflow, scheduleId));
  const edit = el("button", { type: "button", "data-schedule-action": "edit", text: "Edit",
    "aria-label": `Edit schedule ${scheduleId}` });
  edit.addEventListener("click", () => editSchedule(scheduleId));
  const remove = el("button", { type: "button", "data-schedule-action": "delete", text: "Delete",
    "aria-label": `Delete schedule ${scheduleId}` });
  remove.addEventListener("click", () => deleteSchedule(workflow, scheduleId, remove));
  const row = el("tr", {},
    el("th", { scope: "row", class: "schedule-id", text: scheduleId }),
    // The labels head each line where the list is shown as cards (a narrow screen).
    el("td", { class: "when", "data-label": "when" }),
    el("td", { class: "timezone", "data-label": "time zone" }),
    el("td", { class: "next", "data-label": "next fire" }),
    el("td", { class: "last", "data-label": "last fire" }, el("span", { class: "last-time" }), fired),
    el("td", { "data-label": "state" }, el("span", { class: "status state" })),
    el("td", { class: "schedule-buttons" }, toggle, edit, remove));
  row.dataset.id = scheduleId;
  return row;
}

function updateScheduleRow(row, schedule) {
  const cell = (name) => row.querySelector(`.${name}`);
  row.dataset.paused = String(schedule.paused);
  cell("when").textContent = whenText(schedule);
  cell("timezone").textContent = schedule.timezone;
  cell("next").textContent = schedule.paused ? "paused" : (moment(schedule.next_fire_at) || "—");
  cell("next").title = schedule.next_fire_at || "";
  cell("last-time").textContent = schedule.last_fire_at ? moment(schedule.last_fire_at) : "—";
  cell("last-time").title = schedule.last_fire_at || "";
  const fired = cell("fired");
  fired.hidden = !schedule.last_fire_at;
  if (schedule.last_fire_at) {
    fired.dataset.instance = firedId(schedule.id, schedule.last_fire_at);
    fired.textContent = fired.dataset.instance;
    fired.title = `Open the run this fire made, ${fired.dataset.instance}`;
  }
  const state = cell("state");
  state.textContent = schedule.paused ? "paused" : "active";
  state.dataset.status = schedule.paused ? "paused" : "running";
  const toggle = row.querySelector('[data-schedule-action="toggle"]');
  toggle.textContent = schedule.paused ? "Resume" : "Pause";
  toggle.setAttribute("aria-label", `${toggle.textContent} schedule ${schedule.id}`);
}

const scheduleNamed = (id) => (page.schedules ? page.schedules.list.find((s) => s.id === id) : null);

async function toggleSchedule(workflow, scheduleId) {
  const schedule = scheduleNamed(scheduleId);
  if (!schedule) return;
  showScheduleError(null);
  try {
    const changed = await page.api.putSchedule(workflow, scheduleId, specOf(schedule, !schedule.paused));
    $("schedule-result").textContent = `${scheduleId} ${changed.paused ? "paused" : "resumed"}`;
  } catch (error) {
    showScheduleError(error);
  }
  await refreshSchedules();
}

// A first click asks to confirm (for 5 s), a second deletes: nothing is lost by a stray key.
async function deleteSchedule(workflow, scheduleId, button) {
  if (button.dataset.confirm !== "yes") {
    button.dataset.confirm = "yes";
    button.textContent = "Confirm delete";
    setTimeout(() => {
      button.dataset.confirm = "";
      button.textContent = "Delete";
    }, 5000);
    return;
  }
  showScheduleError(null);
  try {
    await page.api.deleteSchedule(workflow, scheduleId);
    $("schedule-result").textContent = `deleted ${scheduleId} (the runs it made stay)`;
  } catch (error) {
    showScheduleError(error);
  }
  await refreshSchedules();
}

function editSchedule(scheduleId) {
  const schedule = scheduleNamed(scheduleId);
  if (!schedule) return;
  const cron = schedule.cron !== null && schedule.cron !== undefined;
  $("schedule-id").value = schedule.id;
  $("schedule-kind").value = cron ? "cron" : "every";
  $("schedule-when").value = cron ? schedule.cron : String(schedule.every);
  $("schedule-timezone").value = schedule.timezone;
  $("schedule-params").value = json(schedule.params);
  $("schedule-overlap").value = schedule.overlap;
  $("schedule-catch-up").value = schedule.catch_up;
  showScheduleError(null);
  $("schedule-when").focus();
}

// An error of the form: its message under the form, the field it names marked.
function showScheduleError(error) {
  for (const id of new Set(Object.values(SCHEDULE_FIELDS))) {
    $(id).classList.remove("invalid");
    $(id).removeAttribute("aria-invalid");
  }
  const box = $("schedule-error");
  box.hidden = !error;
  if (!error) return;
  let text = error.message || String(error);
  if (error instanceof ApiError && error.status) text = `${error.message} (${error.code}, HTTP ${error.status})`;
  box.textContent = text;
  let field = error.field;
  if (!field && error instanceof ApiError) {
    const named = /^(?:invalid request: )?([a-z_]+)[.:]/.exec(error.message || "");
    field = error.code === "schedule.invalid_id" ? "id" : named && named[1];
  }
  const id = SCHEDULE_FIELDS[field];
  if (id) {
    $(id).classList.add("invalid");
    $(id).setAttribute("aria-invalid", "true");
    $(id).setAttribute("aria-errormessage", "schedule-error");
  }
}

async function saveSchedule(submit) {
  submit.preventDefault();
  if (!page.api) return showError(new Error("Sign in with a tenant API key first."));
  const workflow = $("workflow").value.trim();
  const scheduleId = $("schedule-id").value.trim();
  const fail = (field, message) => {
    showScheduleError(Object.assign(new Error(message), { field }));
    $(SCHEDULE_FIELDS[field]).focus();
  };
  if (!NAME.test(workflow)) return fail("id", "Name the workflow first (letters, digits, '_' and '-').");
  if (!NAME.test(scheduleId)) return fail("id", "id: letters, digits, '_' and '-' only, 1 to 64 of them.");
  const kind = $("schedule-kind").value;
  const when = $("schedule-when").value.trim();
  if (!when) return fail(kind, `${kind}: ${kind === "cron" ? "5 fields, such as 30 2 * * *" : "a period, such as 2 seconds"}`);
  let params;
  try {
    params = JSON.parse($("schedule-params").value.trim() || "null");
  } catch (error) {
    return fail("params", `params: not valid JSON: ${error.message}`);
  }
  const existing = scheduleNamed(scheduleId);
  const spec = {
    [kind]: kind === "every" && /^\d+(\.\d+)?$/.test(when) ? Number(when) : when,
    timezone: $("schedule-timezone").value.trim() || "UTC",
    params,
    overlap: $("schedule-overlap").value,
    catch_up: $("schedule-catch-up").value,
    paused: existing ? existing.paused : false, // a replaced schedule stays paused or not
  };
  showScheduleError(null);
  $("schedule-result").textContent = "saving…";
  try {
    const saved = await page.api.putSchedule(workflow, scheduleId, spec);
    const next = saved.paused ? "paused" : `next fire ${moment(saved.next_fire_at)}`;
    $("schedule-result").textContent = `${existing ? "replaced" : "created"} ${scheduleId}: ${next}`;
  } catch (error) {
    $("schedule-result").textContent = "";
    if (error instanceof ApiError && [0, 401].includes(error.status)) showError(error);
    else showScheduleError(error);
  }
  await refreshSchedules();
}

function startSchedules() {
  const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  $("timezones").append(...["UTC", ...zones.filter((zone) => zone !== "UTC")].map((zone) => el("option", { value: zone })));
  $("schedule-kind").addEventListener("change", () => {
    $("schedule-when").placeholder = $("schedule-kind").value === "cron" ? "30 2 * * *" : "2 seconds";
  });
  $("schedule-form").addEventListener("submit", saveSchedule);
  $("schedules-refresh").addEventListener("click", () => refreshSchedules());
  let typing = null;
  $("workflow").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => refreshSchedules(true), 400);
  });
  setInterval(() => document.visibilityState === "visible" && refreshSchedules(true), SCHEDULES_EVERY_MS);
  $("schedules-workflow").textContent = $("workflow").value.trim() || "…";
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
  showOptions();
  for (const id of Object.values(OPTION_FIELDS)) {
    $(id).addEventListener("input", () => {
      $(id).classList.remove("invalid");
      saveOptions();
    });
  }
  startSchedules();
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
  filterRunsAsTyped();
  $("runs-bulk").addEventListener("submit", applyBulk);
  $("event-type").addEventListener("input", () => ($("event-type").dataset.filled = "user"));
  $("event-form").addEventListener("submit", sendEvent);
  for (const button of document.querySelectorAll("[data-action]")) {
    button.addEventListener("click", () => changeStatus(button.dataset.action));
  }
  // Countdowns and running times move on between events.
  setInterval(() => page.run && page.run.instance && !FINISHED.includes(page.run.instance.status) && render(), 1000);
  // A queued run's reason to wait changes without an event of its own (another run of its key
  // ends, the tenant's runs): asked again every 2 s while it is queued.
  setInterval(() => {
    const run = page.run;
    if (run && run.instance && run.instance.status === "queued" && document.visibilityState === "visible") {
      refreshInstance(run);
    }
  }, 2000);
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

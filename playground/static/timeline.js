// Rendering of a run: the timeline of its steps and attempts, and small formatting helpers.
// Everything from the server is set as text, never as HTML.

export const FINISHED = ["complete", "errored", "terminated"];

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

const ms = (iso) => (iso ? Date.parse(iso) : null);

export function duration(seconds) {
  if (seconds === null || Number.isNaN(seconds)) return "";
  if (seconds < 1) return `${Math.max(0, Math.round(seconds * 1000))} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function clock(iso) {
  return iso ? new Date(iso).toLocaleTimeString([], { hour12: false }) : "";
}

// A time of day, with the date too when it is not today (a schedule's next fire, a start).
export function moment(iso) {
  if (!iso) return "";
  const when = new Date(iso);
  const time = when.toLocaleTimeString([], { hour12: false });
  if (when.toDateString() === new Date().toDateString()) return time;
  return `${when.toLocaleDateString([], { year: "numeric", month: "short", day: "numeric" })} ${time}`;
}

// A duration as the API takes it (seconds, or "<n> <unit>"), in seconds; null if unknown.
const UNITS = { s: 1, sec: 1, second: 1, m: 60, min: 60, minute: 60, h: 3600, hour: 3600,
  d: 86400, day: 86400, w: 604800, week: 604800 };

export function seconds(value) {
  if (typeof value === "number") return value;
  const found = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*?)s?\s*$/i.exec(String(value));
  if (!found) return null;
  const unit = found[2].toLowerCase();
  if (!unit) return Number(found[1]);
  return unit in UNITS ? Number(found[1]) * UNITS[unit] : null;
}

// Why a queued instance has not started, in words (its `waiting_reason`, docs/flow-control.md);
// `startsAt` (ms) is when a delayed or debounced one starts, when the page knows it. Null for
// an instance that waits for nothing.
export function waitingText(instance, startsAt = null) {
  const reason = instance.waiting_reason;
  if (instance.status !== "queued" || !reason) return null;
  const key = instance.key === null || instance.key === undefined ? "" : ` '${instance.key}'`;
  const at = startsAt ? moment(new Date(startsAt).toISOString()) : "";
  switch (reason) {
    case "concurrency_key":
      return `waiting: key${key} is at its concurrency limit`;
    case "rate_limit":
      return `waiting: rate limit of its key${key}`;
    case "debounce":
      return at ? `waiting: debounced — starts at ${at}` : "waiting: debounced — a later create of its key pushes its start back";
    case "start_at":
      return at ? `waiting: starts at ${at}` : "waiting: starts at its start_at (or after its delay)";
    case "tenant_limit":
      return "waiting: the tenant is at max_running_instances";
    default:
      return `waiting: ${reason}`;
  }
}

function flat(value) {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(flat).join(", ")}]`;
  const items = Object.entries(value).map(([key, item]) => `${JSON.stringify(key)}: ${flat(item)}`);
  return `{${items.join(", ")}}`;
}

// JSON laid out for reading: what fits on a line stays on one line.
export function json(value, indent = "") {
  const line = flat(value);
  if (line === undefined || line.length + indent.length <= 72 || value === null
    || typeof value !== "object") return line;
  const inner = `${indent}  `;
  const items = Array.isArray(value)
    ? value.map((item) => inner + json(item, inner))
    : Object.entries(value).map(([key, item]) => `${inner}${JSON.stringify(key)}: ${json(item, inner)}`);
  const [open, close] = Array.isArray(value) ? ["[", "]"] : ["{", "}"];
  return `${open}\n${items.join(",\n")}\n${indent}${close}`;
}

function errorText(error) {
  if (!error) return "";
  return error.name ? `${error.name}: ${error.message}` : String(error.message || error);
}

const KINDS = { do: "step", sleep: "sleep", wait_for_event: "wait for event" };

// The frames of the workflow's code an error went through, outermost first, as Python prints
// them; clicking one calls goTo(line) (the editor puts its cursor there). Null without frames.
export function tracebackList(error, goTo) {
  const frames = (error && Array.isArray(error.traceback)) ? error.traceback : [];
  if (!frames.length) return null;
  return el(
    "ol",
    { class: "traceback" },
    ...frames.map((frame) => {
      const where = `File "${frame.file}", line ${frame.line}, in ${frame.function}`;
      const button = el("button", { type: "button", class: "frame", "data-line": String(frame.line),
        title: `Show line ${frame.line} in the editor`, text: where });
      button.addEventListener("click", () => goTo(frame.line));
      return el("li", {}, button, frame.source ? el("code", { text: frame.source }) : null);
    }),
  );
}

function attemptLine(attempt, index, goTo) {
  const took = duration((ms(attempt.ended_at) - ms(attempt.started_at)) / 1000);
  const outcome = attempt.success ? "succeeded" : `failed: ${errorText(attempt.error)}`;
  return el(
    "li",
    { class: attempt.success ? "attempt ok" : "attempt failed" },
    `attempt ${index + 1} ${outcome}`,
    took ? el("span", { class: "took", text: ` (${took})` }) : null,
    attempt.success ? null : tracebackList(attempt.error, goTo),
  );
}

// When the step started, counted from the start of the run: concurrent steps start together.
function stepStart(step, run) {
  const attempts = step.attempts || [];
  const started = ms(run.instance.started_at);
  if (!attempts.length || !started) return "";
  return `at +${duration(Math.max(0, ms(attempts[0].started_at) - started) / 1000)}`;
}

function stepDuration(step, now) {
  const attempts = step.attempts || [];
  if (step.type === "do" && attempts.length) {
    const start = ms(attempts[0].started_at);
    const end = ms(attempts[attempts.length - 1].ended_at);
    if (end) return duration((end - start) / 1000);
    if (step.status === "running") return `${duration((now - start) / 1000)} so far`;
  }
  return "";
}

// What a waiting step waits for, in words: a retry, the end of a sleep, or an event.
function waitText(step, run, now) {
  const left = step.wake_at ? duration(Math.max(0, ms(step.wake_at) - now) / 1000) : "";
  if (step.type === "do") return `retry ${(step.attempts || []).length + 1} in ${left}`;
  if (step.type === "sleep") return `sleeping until ${clock(step.wake_at)} (${left} left)`;
  const type = run.waitingFor ? `'${run.waitingFor}' ` : "";
  return `waiting for an ${type}event · times out at ${clock(step.wake_at)}`;
}

function stepDetail(step, run, now) {
  if (step.status === "waiting" && !FINISHED.includes(run.instance.status)) {
    return el("div", { class: "detail waiting", text: waitText(step, run, now) });
  }
  if (step.status === "errored") {
    return el("div", { class: "detail error", text: errorText(step.error) });
  }
  if (step.status === "complete" && step.output !== null && step.output !== undefined) {
    const summary = step.type === "wait_for_event" ? `got '${step.output.type}'` : "result";
    return el(
      "details",
      { class: "detail", "data-key": `${step.name}#${step.count}` },
      el("summary", { text: summary }),
      el("pre", { text: json(step.output) }),
    );
  }
  return null;
}

export function stepItem(step, run, now, goTo = () => {}) {
  const attempts = step.attempts || [];
  const failures = attempts.filter((a) => !a.success).length;
  const name = step.count > 1 ? `${step.name} #${step.count}` : step.name;
  const badges = [el("span", { class: "kind", text: KINDS[step.type] || step.type })];
  // Every attempt after the first is a retry, whether the step then succeeded, failed for good
  // or waits for its next one: three attempts are two retries.
  const retries = Math.max(0, attempts.length - 1);
  if (retries) {
    badges.push(el("span", { class: "retries", text: `${retries} ${retries === 1 ? "retry" : "retries"}` }));
  }
  const took = [stepStart(step, run), stepDuration(step, now)].filter(Boolean).join(" · ");
  const item = el(
    "li",
    { class: `step ${step.status}`, "data-step": step.name, "data-status": step.status },
    el("span", { class: "dot", "aria-hidden": "true" }),
    el(
      "div",
      { class: "step-main" },
      el("div", { class: "step-line" }, el("b", { class: "step-name", text: name }), ...badges,
        el("span", { class: "step-status", text: step.status }),
        took ? el("span", { class: "took", text: took }) : null),
      stepDetail(step, run, now),
      failures ? el("ol", { class: "attempts" },
        ...attempts.map((attempt, index) => attemptLine(attempt, index, goTo))) : null,
    ),
  );
  return item;
}

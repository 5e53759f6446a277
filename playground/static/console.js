// The operator console: a client of the admin API like any other, holding the admin token in
// this tab only (sessionStorage). Every value from the server goes into the page as text.

import { Api } from "./api.js";

const $ = (id) => document.getElementById(id);
const TOKEN = "treadle.console.token";
const REFRESH_MS = 15000;
let token = sessionStorage.getItem(TOKEN) || "";
let policies = new Map(); // tenant -> its policy as last read
let editing = null; // the tenant whose policy is open in the editor
let timer = null;

// The admin token is a bearer token like a tenant's key: the playground's client carries it.
const api = (method, path, body) => new Api(token).request(method, path, body);

function banner(message) {
  $("banner-text").textContent = message;
  $("banner").hidden = !message;
}

function cell(row, value, className) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined ? "–" : String(value);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

// 24 bars, one per hour up to now, of the steps committed in it.
function chart(report) {
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("width", "144");
  svg.setAttribute("height", "28");
  svg.setAttribute("role", "img");
  const hour = 3600 * 1000;
  const end = Math.floor(Date.parse(report.to) / hour) * hour;
  const steps = new Map(report.hours.map((h) => [Date.parse(h.hour), h.steps]));
  const values = [];
  for (let i = 23; i >= 0; i--) values.push([end - i * hour, steps.get(end - i * hour) || 0]);
  const top = Math.max(1, ...values.map(([, v]) => v));
  values.forEach(([at, v], i) => {
    const rect = document.createElementNS(svgNS, "rect");
    const h = v ? Math.max(2, Math.round((v / top) * 26)) : 1;
    rect.setAttribute("x", String(i * 6));
    rect.setAttribute("y", String(28 - h));
    rect.setAttribute("width", "5");
    rect.setAttribute("height", String(h));
    if (!v) rect.setAttribute("class", "zero");
    const title = document.createElementNS(svgNS, "title");
    title.textContent = `${new Date(at).toISOString().slice(0, 13)}:00Z: ${v} steps`;
    rect.appendChild(title);
    svg.appendChild(rect);
  });
  svg.setAttribute("aria-label", `steps by hour, at most ${top} in an hour`);
  return svg;
}

async function load() {
  const [tenants, overview, audit] = await Promise.all([
    api("GET", "/v1/admin/tenants"),
    api("GET", "/v1/admin/overview"),
    api("GET", "/v1/admin/audit?limit=25"),
  ]);
  const usage = await Promise.all(
    tenants.tenants.map((t) => api("GET", `/v1/admin/tenants/${encodeURIComponent(t.name)}/usage`)),
  );
  policies = new Map(tenants.tenants.map((t) => [t.name, t.policy]));
  const counts = new Map(overview.tenants.map((t) => [t.tenant, t]));
  const body = $("tenants").tBodies[0];
  body.replaceChildren();
  tenants.tenants.forEach((t, i) => {
    const row = document.createElement("tr");
    row.dataset.tenant = t.name;
    const seen = counts.get(t.name) || { instances: {}, stalled: 0 };
    const n = (status) => seen.instances[status] || 0;
    const totals = usage[i].totals;
    cell(row, t.name);
    cell(row, n("running") + n("waitingForPause"), "number");
    cell(row, n("queued"), "number");
    cell(row, n("waiting"), "number");
    cell(row, seen.stalled, seen.stalled ? "number alert" : "number");
    cell(row, totals.steps, "number steps");
    cell(row, totals.cpu_ms.toFixed(1), "number");
    cell(row, bytes(totals.storage_bytes), "number");
    cell(row, "").appendChild(chart(usage[i]));
    const p = t.policy;
    cell(
      row,
      `${p.max_running_instances} running · ${p.creates_per_second} creates/s · ${p.max_storage_mb} MB`,
      "policy",
    );
    const edit = document.createElement("button");
    edit.type = "button";
    edit.textContent = "Edit policy";
    edit.addEventListener("click", () => openPolicy(t.name));
    cell(row, "").appendChild(edit);
    body.appendChild(row);
  });
  const stalled = $("stalled").tBodies[0];
  stalled.replaceChildren();
  for (const run of overview.stalled) {
    const row = document.createElement("tr");
    [run.tenant, run.workflow, run.id, run.since].forEach((v) => cell(row, v));
    stalled.appendChild(row);
  }
  $("stalled").hidden = overview.stalled.length === 0;
  $("stalled-none").hidden = overview.stalled.length !== 0;
  const entries = $("audit").tBodies[0];
  entries.replaceChildren();
  for (const e of audit.entries) {
    const row = document.createElement("tr");
    [e.time, e.actor, e.action, e.tenant, e.target, e.outcome].forEach((v) => cell(row, v));
    entries.appendChild(row);
  }
  $("updated").textContent = `as of ${new Date().toLocaleTimeString()}`;
}

async function refresh() {
  try {
    await load();
    banner("");
  } catch (error) {
    if (error.status === 401) {
      signOut("The admin token was refused: sign in again.");
      return;
    }
    banner(error.message);
  }
}

function openPolicy(tenant) {
  editing = tenant;
  $("policy-tenant").textContent = tenant;
  $("policy-json").value = JSON.stringify(policies.get(tenant), null, 2);
  $("policy-error").hidden = true;
  $("policy-editor").hidden = false;
  $("policy-json").focus();
}

async function savePolicy() {
  let edited;
  try {
    edited = JSON.parse($("policy-json").value);
  } catch (error) {
    showPolicyError(`Not JSON: ${error.message}`);
    return;
  }
  if (!edited || typeof edited !== "object" || Array.isArray(edited)) {
    showPolicyError("The policy must be a JSON object");
    return;
  }
  const before = policies.get(editing) || {};
  const changes = {};
  for (const [field, value] of Object.entries(edited)) {
    if (JSON.stringify(value) !== JSON.stringify(before[field])) changes[field] = value;
  }
  if (Object.keys(changes).length === 0) {
    showPolicyError("Nothing changed");
    return;
  }
  try {
    await api("PATCH", `/v1/admin/tenants/${encodeURIComponent(editing)}/policy`, changes);
  } catch (error) {
    showPolicyError(error.message);
    return;
  }
  $("policy-editor").hidden = true;
  editing = null;
  await refresh();
}

function showPolicyError(message) {
  $("policy-error").textContent = message;
  $("policy-error").hidden = false;
}

function signedIn(yes) {
  $("signin").hidden = yes;
  $("signed-in").hidden = !yes;
  $("console").hidden = !yes;
  $("signed-out").hidden = yes;
  clearInterval(timer);
  timer = yes ? setInterval(() => document.hidden || refresh(), REFRESH_MS) : null;
}

function signOut(message) {
  token = "";
  sessionStorage.removeItem(TOKEN);
  signedIn(false);
  banner(message || "");
}

async function signIn(event) {
  event.preventDefault();
  token = $("token").value.trim();
  if (!token) return;
  try {
    await api("GET", "/v1/admin/tenants");
  } catch (error) {
    token = "";
    banner(error.status === 401 ? "That admin token was refused." : error.message);
    return;
  }
  $("token").value = "";
  sessionStorage.setItem(TOKEN, token);
  signedIn(true);
  await refresh();
}

$("signin").addEventListener("submit", signIn);
$("signout").addEventListener("click", () => signOut(""));
$("refresh").addEventListener("click", refresh);
$("banner-close").addEventListener("click", () => banner(""));
$("policy-save").addEventListener("click", savePolicy);
$("policy-cancel").addEventListener("click", () => {
  $("policy-editor").hidden = true;
  editing = null;
});
if (token) {
  signedIn(true);
  refresh();
}

// A client of treadle's public HTTP API (docs/api.md), as the playground uses it.

export class ApiError extends Error {
  constructor(status, code, message, details = {}) {
    super(message);
    this.status = status; // 0: the server could not be reached
    this.code = code;
    this.details = details;
  }
}

const path = (...parts) => parts.map(encodeURIComponent).join("/");

export class Api {
  constructor(key) {
    this.key = key;
  }

  headers(extra = {}) {
    return { Authorization: `Bearer ${this.key}`, ...extra };
  }

  async request(method, url, body) {
    const init = { method, headers: this.headers({ Accept: "application/json" }) };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let reply;
    try {
      reply = await fetch(url, init);
    } catch (error) {
      throw new ApiError(0, "network", `Cannot reach the treadle server (${error.message}).`);
    }
    const text = await reply.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!reply.ok) throw errorOf(reply, data, text);
    return data;
  }

  workflows() {
    return this.request("GET", "/v1/workflows");
  }

  // `flow` (per-key flow control, docs/flow-control.md) is sent only when given: an upload
  // without it leaves the workflow with none.
  upload(name, source, sandbox, flow = null) {
    const body = { source, sandbox };
    if (flow !== null && flow !== undefined) body.flow = flow;
    return this.request("PUT", `/v1/workflows/${path(name)}`, body);
  }

  workflow(name) {
    return this.request("GET", `/v1/workflows/${path(name)}`);
  }

  // An upload that waits out the server's first start: while it builds the Python-in-Wasm
  // runtime, a wasm upload is answered 202 {"status": "building", "retry_after"} and nothing is
  // stored, so the same upload is sent again (at least every 5 s), telling onBuilding each time.
  async deploy(name, source, sandbox, onBuilding, waitSeconds = 600, flow = null) {
    const deadline = Date.now() + waitSeconds * 1000;
    for (;;) {
      const answer = await this.upload(name, source, sandbox, flow);
      if (!answer || answer.status !== "building") return answer;
      if (Date.now() >= deadline) {
        throw new ApiError(202, "wasm.building", `${answer.message}; gave up after ${waitSeconds} s.`);
      }
      onBuilding(answer);
      const delay = Math.min(answer.retry_after, 5) * 1000;
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }

  // `options`: the create's tags and flow control, each sent only when given: {tags, key,
  // priority, delay, start_at} (docs/api.md, docs/flow-control.md).
  create(name, params, options = {}) {
    const body = { params };
    for (const [field, value] of Object.entries(options)) {
      if (value !== null && value !== undefined && value !== "") body[field] = value;
    }
    return this.request("POST", `/v1/workflows/${path(name)}/instances`, body);
  }

  instances(name, limit = 20) {
    return this.request("GET", `/v1/workflows/${path(name)}/instances?limit=${limit}`);
  }

  // The newest instances of every workflow matching `filter`, the query of GET /v1/instances:
  // {status, "tag.<k>", key, id_prefix, ...}; a list value is a repeated parameter.
  allInstances(filter = {}, limit = 30) {
    const query = new URLSearchParams({ limit: String(limit) });
    for (const [name, value] of Object.entries(filter)) {
      for (const one of [].concat(value)) query.append(name, one);
    }
    return this.request("GET", `/v1/instances?${query}`);
  }

  instance(name, id) {
    return this.request("GET", `/v1/workflows/${path(name, "instances", id)}`);
  }

  // Bulk actions (docs/bulk.md): `filter` as the body takes it ({status: [...], tags: {...},
  // key, id_prefix, ...}); the answer is {job, matched}, the job's progress is bulkJob(job).
  bulk(filter, action) {
    return this.request("POST", "/v1/instances/bulk", { filter, action });
  }

  bulkJob(job) {
    return this.request("GET", `/v1/instances/bulk/${path(job)}`);
  }

  changeStatus(name, id, status) {
    return this.request("PATCH", `/v1/workflows/${path(name, "instances", id, "status")}`, {
      status,
    });
  }

  sendEvent(name, id, type, payload) {
    const url = `/v1/workflows/${path(name, "instances", id, "events", type)}`;
    return this.request("POST", url, payload);
  }

  // Schedules (docs/schedules.md): pausing or resuming one puts its spec back with `paused`.
  schedules(name) {
    return this.request("GET", `/v1/workflows/${path(name)}/schedules`);
  }

  putSchedule(name, id, spec) {
    return this.request("PUT", `/v1/workflows/${path(name, "schedules", id)}`, spec);
  }

  deleteSchedule(name, id) {
    return this.request("DELETE", `/v1/workflows/${path(name, "schedules", id)}`);
  }

  streamUrl(name, id) {
    return `/v1/workflows/${path(name, "instances", id, "stream")}`;
  }
}

function errorOf(reply, data, text) {
  const error = data && data.error;
  if (error && error.code) {
    const { code, message, ...details } = error;
    return new ApiError(reply.status, code, message, details);
  }
  return new ApiError(reply.status, `http.${reply.status}`, text || reply.statusText);
}

// Server-Sent Events over fetch(), since EventSource cannot send an Authorization header.
// The server ends the stream once the instance has finished and everything was sent. A stream
// that stops before that is opened again with Last-Event-ID, so no event is lost or repeated:
// a network error, the server stopping (its last event is server.closing, which says when to
// come back) or answering 429/502/503/504 while it starts or is busy. The waits between attempts
// double from 0.2 s to 5 s, from the first again once the server sends anything, for as long as
// the page follows the run. Only an answer that asking again cannot change (401, 404, ...) ends
// it for good ("failed").
const FIRST_DELAY_MS = 200;
const MAX_DELAY_MS = 5000;
const RETRY_STATUSES = [0, 429, 502, 503, 504]; // 0: the server could not be reached
const FINISHED_STATUSES = ["complete", "errored", "terminated"];
const CLOSING = "server.closing";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class Stream {
  constructor(api, name, id, { after = 0, onEvent, onState }) {
    this.api = api;
    this.name = name;
    this.id = id;
    this.url = api.streamUrl(name, id);
    this.after = after;
    this.onEvent = onEvent;
    this.onState = onState; // (state, why): connecting, live, reconnecting, ended, failed
    this.controller = null;
    this.closed = false;
    this.finished = false; // the last event said the run ended
    this.closing = null; // ms the server asked to wait, once it said it is stopping
    this.heard = false; // the current connection brought something
  }

  start() {
    this.done = this.loop();
    return this;
  }

  close() {
    this.closed = true;
    if (this.controller) this.controller.abort();
  }

  async loop() {
    let failures = 0;
    this.onState("connecting");
    while (!this.closed) {
      let wait;
      let why;
      try {
        await this.once();
        if (this.closed) return;
        if (this.finished || (this.closing === null && (await this.runFinished()))) {
          this.onState("ended");
          return;
        }
        why = this.closing === null ? "the stream ended early" : "the server is restarting";
        wait = this.closing || 0;
      } catch (error) {
        if (this.closed) return;
        if (!(error instanceof ApiError) || !RETRY_STATUSES.includes(error.status)) {
          this.onState("failed", error);
          return;
        }
        why = error.status ? `the server answered ${error.status}` : "cannot reach the server";
        wait = error.retryAfterMs || 0;
      }
      failures = this.heard ? 1 : failures + 1;
      const backoff = Math.min(FIRST_DELAY_MS * 2 ** (failures - 1), MAX_DELAY_MS);
      this.onState("reconnecting", why);
      await sleep(Math.max(backoff, Math.min(wait, MAX_DELAY_MS)));
    }
  }

  // After a stream ended without saying why: ask whether the run has finished (a stream opened
  // after its last event sends nothing more) rather than open it again and again.
  async runFinished() {
    try {
      const instance = await this.api.instance(this.name, this.id);
      return FINISHED_STATUSES.includes(instance.status);
    } catch {
      return false; // the next attempt finds out what is wrong
    }
  }

  async once() {
    this.controller = new AbortController();
    this.heard = false;
    this.closing = null;
    const headers = this.api.headers({ Accept: "text/event-stream" });
    if (this.after) headers["Last-Event-ID"] = String(this.after);
    let reply;
    try {
      reply = await fetch(this.url, { headers, signal: this.controller.signal, cache: "no-store" });
    } catch (error) {
      throw new ApiError(0, "network", `The live stream was cut (${error.message}).`);
    }
    if (!reply.ok) {
      const text = await reply.text();
      let data = null;
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
      const error = errorOf(reply, data, text);
      error.retryAfterMs = Number(reply.headers.get("Retry-After") || 0) * 1000;
      throw error;
    }
    this.onState("live");
    const reader = reply.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (error) {
        throw new ApiError(0, "network", `The live stream was cut (${error.message}).`);
      }
      if (chunk.done) return;
      this.heard = true;
      buffer += chunk.value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        this.dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  }

  dispatch(block) {
    const data = [];
    let id = null;
    let type = null;
    let retry = null;
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue; // a comment: the keep-alive
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "id") id = value;
      else if (field === "event") type = value;
      else if (field === "retry" && /^\d+$/.test(value)) retry = Number(value);
      else if (field === "data") data.push(value);
    }
    if (type === CLOSING) {
      // Not an event of the run, and without an id: Last-Event-ID stays where it was.
      this.closing = retry === null ? 1000 : retry;
      return;
    }
    if (!data.length) return;
    if (id !== null) this.after = Number(id);
    const event = JSON.parse(data.join("\n"));
    this.finished = event.type.startsWith("workflow.")
      && FINISHED_STATUSES.includes(event.type.slice("workflow.".length));
    this.onEvent(event);
  }
}

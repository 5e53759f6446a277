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

  upload(name, source, sandbox) {
    return this.request("PUT", `/v1/workflows/${path(name)}`, { source, sandbox });
  }

  create(name, params) {
    return this.request("POST", `/v1/workflows/${path(name)}/instances`, { params });
  }

  instances(name, limit = 20) {
    return this.request("GET", `/v1/workflows/${path(name)}/instances?limit=${limit}`);
  }

  instance(name, id) {
    return this.request("GET", `/v1/workflows/${path(name, "instances", id)}`);
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
// Reconnects with Last-Event-ID after a network error, so no event is lost or repeated; the
// server ends the stream once the instance has finished and everything was sent.
export class Stream {
  constructor(api, name, id, { after = 0, onEvent, onState }) {
    this.api = api;
    this.url = api.streamUrl(name, id);
    this.after = after;
    this.onEvent = onEvent;
    this.onState = onState;
    this.controller = null;
    this.closed = false;
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
    let delay = 500;
    while (!this.closed) {
      this.onState("connecting");
      try {
        await this.once();
        if (!this.closed) this.onState("ended");
        return;
      } catch (error) {
        if (this.closed) return;
        if (error instanceof ApiError && error.status !== 0 && error.status < 500) {
          this.onState("failed", error);
          return;
        }
        this.onState("reconnecting", error);
        await new Promise((resolve) => setTimeout(resolve, delay));
        delay = Math.min(delay * 2, 8000);
      }
    }
  }

  async once() {
    this.controller = new AbortController();
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
      throw errorOf(reply, data, text);
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
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue; // a comment: the keep-alive
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "id") id = value;
      else if (field === "data") data.push(value);
    }
    if (!data.length) return;
    if (id !== null) this.after = Number(id);
    this.onEvent(JSON.parse(data.join("\n")));
  }
}

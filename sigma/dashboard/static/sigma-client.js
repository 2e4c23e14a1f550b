// Sigma's browser client: one ES module, no dependencies, served at /static/sigma-client.js.
//
//   import { SigmaClient } from "/static/sigma-client.js";
//   const client = new SigmaClient({ types: ["system_status", "heartbeat"] });
//   client.on("system_status", (event) => console.log(event.data.cpu_usage));
//   client.on("state", ({ state, attempt }) => console.log(state, attempt));
//   client.connect();
//
// What it does for you: reconnects with exponential backoff and full jitter; resumes with
// `?since=<last seq>&epoch=<epoch>`; reports gaps (a resume that could not recover, dropped
// events, a hole in seq while subscribed to every type) and drops duplicates; keeps the wanted
// subscriptions across reconnects. Snapshot events (`"snapshot": true`, state on join) are
// delivered like events with `event.snapshot === true` and never count as duplicates.
//
// Callbacks (`on(name, fn)` returns a function that removes it):
//   "state"    {state: "connecting"|"connected"|"reconnecting"|"disconnected", attempt}
//   "welcome"  the welcome's data (client_id, epoch, last_seq, server_version, recovered, ...)
//   "event"    every event; and "<type>" (e.g. "heartbeat") for events of that type
//   "gap"      {reason: "not_recovered"|"events_dropped"|"seq_hole", missing}
//   "duplicate" the event that was dropped
//   "subscriptions" the list of subscribed types after each change
//   "error"    an error reply's data ({code, message, request_id})
//   "close"    {code, reason}

const ALL_TYPES = [
  "agent_status", "compression_update", "connection_error", "heartbeat", "notification",
  "rpc_error", "storage_update", "supervision", "system_status",
];

export { ALL_TYPES };

export class SigmaClient {
  /**
   * @param {object} options
   * @param {string} [options.url] the WebSocket URL (default: /ws on this page's origin)
   * @param {string} [options.token] a JWT, sent as ?token= (for `[auth] mode = "jwt"`)
   * @param {string[]} [options.types] the event types wanted (default: the server's defaults)
   * @param {number} [options.minDelayMs] first reconnect delay (500)
   * @param {number} [options.maxDelayMs] longest reconnect delay (15000)
   */
  constructor(options = {}) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    this.url = options.url || `${scheme}//${location.host}/ws`;
    this.token = options.token || null;
    this.wanted = options.types ? new Set(options.types) : null;
    this.minDelayMs = options.minDelayMs ?? 500;
    this.maxDelayMs = options.maxDelayMs ?? 15000;
    this.state = "disconnected";
    this.attempt = 0;
    this.epoch = null;
    this.lastSeq = null;
    this.clientId = null;
    this.serverVersion = null;
    this.welcomedAt = null; // the server's timestamp on the last welcome (ISO 8601)
    this.subscriptions = [];
    this.duplicates = 0;
    this.gaps = 0;
    this._handlers = new Map();
    this._socket = null;
    this._timer = null;
    this._stopped = true;
    this._nextId = 1;
  }

  /** Register `fn` for `name` (see the module comment); returns a function removing it. */
  on(name, fn) {
    if (!this._handlers.has(name)) this._handlers.set(name, new Set());
    this._handlers.get(name).add(fn);
    return () => this._handlers.get(name).delete(fn);
  }

  /** Connect, and keep reconnecting until `close()`. */
  connect() {
    this._stopped = false;
    this._open();
  }

  /** Close for good: no reconnect. */
  close() {
    this._stopped = true;
    clearTimeout(this._timer);
    if (this._socket) this._socket.close(1000, "client closed");
    this._setState("disconnected");
  }

  /** Add types to the wanted set and subscribe now if connected. */
  subscribe(types) {
    if (this.wanted === null) this.wanted = new Set(this.subscriptions);
    for (const type of types) this.wanted.add(type);
    this._send({ action: "subscribe", types });
  }

  /** Remove types from the wanted set and unsubscribe now if connected. */
  unsubscribe(types) {
    if (this.wanted === null) this.wanted = new Set(this.subscriptions);
    for (const type of types) this.wanted.delete(type);
    this._send({ action: "unsubscribe", types });
  }

  /** True when every event type is subscribed: only then is a hole in seq a loss. */
  get seesEverything() {
    return ALL_TYPES.every((type) => this.subscriptions.includes(type));
  }

  _emit(name, value) {
    const handlers = this._handlers.get(name);
    if (!handlers) return;
    for (const fn of handlers) {
      try { fn(value); } catch (error) { console.error(error); }
    }
  }

  _setState(state) {
    this.state = state;
    this._emit("state", { state, attempt: this.attempt });
  }

  _send(message) {
    if (this._socket && this._socket.readyState === WebSocket.OPEN) {
      this._socket.send(JSON.stringify({ ...message, id: this._nextId++ }));
    }
  }

  _resumeUrl() {
    const url = new URL(this.url);
    if (this.lastSeq !== null && this.epoch !== null) {
      url.searchParams.set("since", String(this.lastSeq));
      url.searchParams.set("epoch", this.epoch);
    }
    if (this.token) url.searchParams.set("token", this.token);
    return url.toString();
  }

  _open() {
    this._setState(this.attempt === 0 ? "connecting" : "reconnecting");
    const socket = new WebSocket(this._resumeUrl());
    this._socket = socket;
    this._resuming = this.lastSeq !== null;
    socket.onmessage = (message) => this._receive(message.data);
    socket.onclose = (close) => {
      if (this._socket !== socket) return;
      this._socket = null;
      this._emit("close", { code: close.code, reason: close.reason });
      if (this._stopped) return;
      this.attempt += 1;
      this._setState("reconnecting");
      const ceiling = Math.min(this.maxDelayMs, this.minDelayMs * 2 ** (this.attempt - 1));
      this._timer = setTimeout(() => this._open(), Math.random() * ceiling);
    };
  }

  _receive(text) {
    let message;
    try { message = JSON.parse(text); } catch { return; }
    if (message.seq === null || message.seq === undefined) {
      this._reply(message);
      return;
    }
    if (message.snapshot) {
      this._deliver(message);
      return;
    }
    if (this.lastSeq !== null && message.seq <= this.lastSeq) {
      this.duplicates += 1;
      this._emit("duplicate", message);
      return;
    }
    if (this.lastSeq !== null && message.seq > this.lastSeq + 1 && this.seesEverything) {
      this._gap("seq_hole", message.seq - this.lastSeq - 1);
    }
    this.lastSeq = message.seq;
    this._deliver(message);
  }

  _deliver(event) {
    this._emit("event", event);
    this._emit(event.type, event);
  }

  _gap(reason, missing) {
    this.gaps += 1;
    this._emit("gap", { reason, missing });
  }

  _reply(message) {
    const data = message.data || {};
    if (message.type === "notification" && data.kind === "welcome") {
      this._welcome(data, message.timestamp);
    } else if (message.type === "notification" && data.kind === "events_dropped") {
      this._gap("events_dropped", data.dropped);
    } else if (message.type === "subscriptions") {
      // Events up to last_seq of types we had are before this reply: a type just added had
      // events before it that never were ours, so they are no hole.
      if (typeof data.last_seq === "number" && this.lastSeq !== null) {
        this.lastSeq = Math.max(this.lastSeq, data.last_seq);
      }
      this.subscriptions = data.subscriptions;
      this._emit("subscriptions", this.subscriptions);
    } else if (message.type === "error") {
      this._emit("error", data);
    } else {
      this._emit("reply", message);
    }
  }

  _welcome(data, timestamp) {
    this.welcomedAt = timestamp ?? null;
    if (this._resuming && data.recovered === false) this._gap("not_recovered", null);
    if (!this._resuming || data.recovered === false) this.lastSeq = data.last_seq;
    this.epoch = data.epoch;
    this.clientId = data.client_id;
    this.serverVersion = data.server_version;
    this.node = data.node || null;
    this.heartbeatInterval = data.heartbeat_interval;
    this.subscriptions = data.subscriptions;
    this.attempt = 0;
    this._setState("connected");
    this._emit("welcome", data);
    this._emit("subscriptions", this.subscriptions);
    if (this.wanted !== null) {
      const have = new Set(data.subscriptions);
      const add = [...this.wanted].filter((type) => !have.has(type));
      const drop = data.subscriptions.filter((type) => !this.wanted.has(type));
      if (add.length) this._send({ action: "subscribe", types: add });
      if (drop.length) this._send({ action: "unsubscribe", types: drop });
    }
  }
}

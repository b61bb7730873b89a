// The Socket.IO session: connect with the join token, join (or wait), and reconnect with capped
// backoff. After a reconnect it joins again; the server remembers admission, so the participant
// goes straight back into the room and the `joined` payload restores chat and room state.
import { io } from "socket.io-client";

const ACK_TIMEOUT_MS = 10000;
// refusals worth retrying (the server restarting, a transient per-address limit)
const RETRY_CODES = new Set(["internal_error", "too_many_connections", "node_unavailable"]);
// scale-out: a room lives on one node; another node answers `wrong_node` with that node's URL
const MAX_REDIRECTS = 3;
const NODE_DEAD_AFTER_ATTEMPTS = 4;

/** Open this same page (/join?token=...) on another node's origin. */
function goToNode(origin) {
  location.replace(new URL(location.pathname + location.search + location.hash, origin).toString());
}
const FINAL_EVENTS = new Set(["lobby:denied", "removed", "replaced", "room:ended"]);

export class Session extends EventTarget {
  constructor(token) {
    super();
    this.token = token;
    this.claims = decodeClaims(token);
    this.socket = null;
    this.state = "idle"; // idle | connecting | connected | waiting | joined | ended
    this.joined = null; // last JoinedState
    this.card = null;
    this.wantJoin = false;
    this.finished = false;
    this.attempt = 0;
  }

  get identity() {
    return this.claims.sub;
  }

  get room() {
    return this.claims.room;
  }

  /** Connect; resolves with the round-trip time of the first ack, rejects with {code, message}. */
  connect() {
    if (this.socket) this.socket.close();
    this.state = "connecting";
    const connectStarted = performance.now();
    const socket = io(location.origin, {
      auth: { token: this.token },
      transports: ["websocket"],
      reconnection: true,
      reconnectionDelay: 500,
      reconnectionDelayMax: 8000, // capped backoff
      randomizationFactor: 0.5,
      timeout: 10000,
    });
    this.socket = socket;
    socket.onAny((event, ...args) => {
      if (event === "token:refresh") this.adoptToken(args[0] && args[0].token);
      if (FINAL_EVENTS.has(event)) {
        // the server says why it is about to close us: do not reconnect
        this.finished = true;
        socket.io.opts.reconnection = false;
      }
      this.emitLocal(event, args[0]);
    });
    socket.on("disconnect", (reason) => {
      if (this.finished) return;
      this.state = "connecting";
      this.emitLocal("connection", { status: "lost", reason });
      if (reason === "io server disconnect") {
        // the server closed us without a farewell event we recognise: try again
        setTimeout(() => !this.finished && socket.connect(), 1000);
      }
    });
    socket.io.on("reconnect_attempt", (n) => {
      this.attempt = n;
      this.emitLocal("connection", { status: "reconnecting", attempt: n });
      if (n >= NODE_DEAD_AFTER_ATTEMPTS) this.tryAnotherNode();
    });
    return new Promise((resolve, reject) => {
      let first = true;
      socket.on("connect", async () => {
        this.state = "connected";
        if (first) {
          first = false;
          resolve(Math.round(performance.now() - connectStarted));
          return;
        }
        this.emitLocal("connection", { status: "restored" });
        if (this.wantJoin) await this.join(this.card).catch((err) => this.emitLocal("fatal", err));
      });
      socket.on("connect_error", (err) => {
        const data = err && err.data ? err.data : null;
        const refusal = data && data.code ? { code: data.code, message: data.message || err.message } : null;
        if (refusal && refusal.code === "wrong_node" && data.url) {
          const hops = Number(sessionStorage.getItem("tc-redirects") || 0) + 1;
          if (hops <= MAX_REDIRECTS) {
            // the room is hosted elsewhere: continue there (docs/protocol.md, wrong_node)
            sessionStorage.setItem("tc-redirects", String(hops));
            socket.io.opts.reconnection = false;
            socket.close();
            this.finished = true;
            this.emitLocal("connection", { status: "redirecting", url: data.url });
            goToNode(data.url);
            return;
          }
        }
        if (refusal && !RETRY_CODES.has(refusal.code)) {
          // refused for good (expired token, locked, removed...): stop retrying
          socket.io.opts.reconnection = false;
          socket.close();
          this.finished = true;
          if (first) reject(refusal);
          else this.emitLocal("fatal", refusal);
          return;
        }
        if (first && !socket.active) reject({ code: "unreachable", message: err.message });
        this.emitLocal("connection", { status: "reconnecting", attempt: this.attempt, error: err.message, code: refusal ? refusal.code : "unreachable" });
      });
    });
  }

  /** A refreshed join token (`token:refresh`: same grant, later expiry): used from now on for
   * document requests, reconnects and a reload of this page. */
  adoptToken(token) {
    if (typeof token !== "string" || token.split(".").length !== 3) return;
    this.token = token;
    this.claims = decodeClaims(token);
    if (this.socket) this.socket.auth = { token };
    const url = new URL(location.href);
    if (url.searchParams.has("token")) {
      url.searchParams.set("token", token);
      history.replaceState(history.state, "", url.toString());
    }
  }

  emitLocal(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  on(type, fn) {
    const listener = (e) => fn(e.detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  /** Send an event and wait (bounded) for the ack; rejects with the server's error object. */
  async call(event, payload = {}) {
    if (!this.socket || !this.socket.connected) throw { code: "offline", message: "not connected" };
    const ack = await this.socket.timeout(ACK_TIMEOUT_MS).emitWithAck(event, payload);
    if (!ack || !ack.ok) throw (ack && ack.error) || { code: "unknown", message: "no answer" };
    return ack;
  }

  async join(card) {
    this.wantJoin = true;
    if (card) this.card = card;
    const payload = this.card ? { card: this.card } : {};
    const ack = await this.call("join", payload);
    this.applyJoin(ack);
    return ack;
  }

  /** The node we were on is gone: continue through another live node (it redirects us). */
  tryAnotherNode() {
    if (!this.wantJoin || this.finished) return;
    let nodes = [];
    try {
      nodes = JSON.parse(sessionStorage.getItem("tc-nodes") || "[]");
    } catch {
      nodes = [];
    }
    const other = nodes.find((url) => new URL(url).origin !== location.origin);
    if (!other) return;
    this.finished = true;
    this.socket.io.opts.reconnection = false;
    this.socket.close();
    sessionStorage.setItem("tc-redirects", "0");
    this.emitLocal("connection", { status: "redirecting", url: other });
    goToNode(other);
  }

  applyJoin(state) {
    if (state.status === "joined" || state.status === "waiting") {
      sessionStorage.setItem("tc-redirects", "0");
    }
    if (Array.isArray(state.nodes)) sessionStorage.setItem("tc-nodes", JSON.stringify(state.nodes));
    if (state.status === "joined") {
      this.state = "joined";
      this.joined = state;
      this.emitLocal("joined", state);
    } else {
      this.state = "waiting";
      this.emitLocal("waiting", state);
    }
  }

  async leave() {
    this.finished = true;
    this.wantJoin = false;
    try {
      await this.call("leave", {});
    } catch {
      /* already gone */
    }
    this.close();
  }

  close() {
    this.finished = true;
    if (this.socket) {
      this.socket.io.opts.reconnection = false;
      this.socket.close();
    }
  }
}

export function decodeClaims(token) {
  try {
    const part = token.split(".")[1];
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
    const bytes = Uint8Array.from(json, (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return {};
  }
}

// The open document's shared state: a Yjs doc (annotations, the presenter's view) and its
// awareness (pointers), synced with the server over `doc:*` events with y-protocols messages
// (docs/annotation.md), and the "saving / saved" state of our own changes.
import * as Y from "yjs";
import * as encoding from "lib0/encoding";
import * as decoding from "lib0/decoding";
import * as awarenessProtocol from "y-protocols/awareness";
import * as syncProtocol from "y-protocols/sync";
import { h, setI18n } from "../dom.js";

const MESSAGE_SYNC = 0;
const MESSAGE_AWARENESS = 1;
const REMOTE = "remote";

function toBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return new Uint8Array(0);
}

export class DocSync {
  /**
   * hooks: onMarks() (annotations changed), onView() (the shared view changed), onCursors()
   * (others' awareness changed), onError(err) (a sync message was refused).
   */
  constructor(session, hooks) {
    this.session = session;
    this.hooks = hooks;
    this.current = null; // {info, ydoc, amap, vmap, awareness, frame, preset, zoom, panX, panY, image}
    this.canWrite = false;
    this.seqSent = 0;
    this.seqSaved = 0;
    this.savedEl = h("span", { class: "hint saved-state", id: "saved-state", role: "status" });
    session.on("doc:sync", (msg) => {
      if (this.isOpen(msg.doc_id)) this.handleMessage(toBytes(msg.msg));
    });
    session.on("doc:awareness", (msg) => {
      if (this.isOpen(msg.doc_id)) this.applyAwareness(toBytes(msg.msg));
    });
    session.on("doc:saved", (msg) => {
      if (this.isOpen(msg.doc_id)) {
        this.seqSaved = Math.max(this.seqSaved || 0, msg.seq);
        this.renderSaved();
      }
    });
  }

  isOpen(docId) {
    return Boolean(this.current) && docId === this.current.info.id;
  }

  /** Open docId (closing another open one), or re-sync `existing` after a reconnect; the ack. */
  async open(docId, existing = null) {
    if (this.current && this.current.info.id !== docId) this.close();
    const ydoc = existing || new Y.Doc();
    const enc = encoding.createEncoder();
    encoding.writeVarUint(enc, MESSAGE_SYNC);
    syncProtocol.writeSyncStep1(enc, ydoc);
    const ack = await this.session.call("doc:open", { doc_id: docId, msg: encoding.toUint8Array(enc) });
    if (!existing) {
      this.seqSent = 0;
      this.seqSaved = 0;
      const cur = { info: ack.document, ydoc, amap: ydoc.getMap("annotations"), vmap: ydoc.getMap("view"), frame: 0, preset: "", zoom: 1, panX: 0, panY: 0 };
      this.current = cur;
      cur.awareness = new awarenessProtocol.Awareness(ydoc);
      cur.awareness.on("update", ({ added, updated, removed }, origin) => {
        if (origin === REMOTE) {
          this.hooks.onCursors();
          return;
        }
        const changed = added.concat(updated, removed).filter((id) => id === ydoc.clientID);
        if (!changed.length || this.current !== cur) return;
        const e = encoding.createEncoder();
        encoding.writeVarUint(e, MESSAGE_AWARENESS);
        encoding.writeVarUint8Array(e, awarenessProtocol.encodeAwarenessUpdate(cur.awareness, changed));
        this.session.call("doc:awareness", { doc_id: cur.info.id, msg: encoding.toUint8Array(e) }).catch(() => null);
      });
      ydoc.on("update", (update, origin) => {
        if (origin === REMOTE || this.current !== cur) return;
        const e = encoding.createEncoder();
        encoding.writeVarUint(e, MESSAGE_SYNC);
        syncProtocol.writeUpdate(e, update);
        this.send(encoding.toUint8Array(e));
      });
      cur.amap.observeDeep(() => this.hooks.onMarks());
      cur.vmap.observe(() => this.hooks.onView());
    } else {
      this.current.info = ack.document;
    }
    this.canWrite = Boolean(ack.can_write);
    for (const reply of ack.replies || []) this.handleMessage(toBytes(reply));
    if (ack.awareness) this.applyAwareness(toBytes(ack.awareness));
    return ack;
  }

  close() {
    this.session.call("doc:close", { doc_id: this.current.info.id }).catch(() => null);
    if (this.current.awareness) this.current.awareness.destroy();
    this.current.ydoc.destroy();
    this.current = null;
  }

  send(msg) {
    const cur = this.current;
    if (!cur) return;
    this.session
      .call("doc:sync", { doc_id: cur.info.id, msg })
      .then((ack) => {
        if (typeof ack.seq === "number") {
          this.seqSent = Math.max(this.seqSent || 0, ack.seq);
          this.renderSaved();
        }
        for (const reply of ack.replies || []) this.handleMessage(toBytes(reply));
      })
      .catch((err) => this.hooks.onError(err));
  }

  handleMessage(bytes) {
    if (!this.current || !bytes.length) return;
    const decoder = decoding.createDecoder(bytes);
    if (decoding.readVarUint(decoder) !== MESSAGE_SYNC) return;
    const enc = encoding.createEncoder();
    encoding.writeVarUint(enc, MESSAGE_SYNC);
    syncProtocol.readSyncMessage(decoder, enc, this.current.ydoc, REMOTE);
    if (encoding.length(enc) > 1) this.send(encoding.toUint8Array(enc));
  }

  applyAwareness(bytes) {
    if (!this.current || !bytes.length) return;
    const decoder = decoding.createDecoder(bytes);
    if (decoding.readVarUint(decoder) !== MESSAGE_AWARENESS) return;
    awarenessProtocol.applyAwarenessUpdate(this.current.awareness, decoding.readVarUint8Array(decoder), REMOTE);
  }

  /** "Saving…" until the server reports every change of ours committed (doc:saved). */
  renderSaved() {
    const el = this.savedEl;
    const sent = this.seqSent || 0;
    const saved = this.seqSaved || 0;
    if (!sent) {
      el.textContent = "";
      delete el.dataset.i18n; // nothing to relabel until our first change
    } else setI18n(el, saved >= sent ? "doc_saved" : "doc_saving");
    el.dataset.state = !sent ? "" : saved >= sent ? "saved" : "saving";
  }
}

/*
 * Switchboard client library: one WebSocket that survives network blips.
 *
 * - heartbeat: sends `beat` so the gateway keeps the connection;
 * - reconnect: exponential backoff with jitter after any close the page did not ask for;
 * - resend: every `say` waits for its `say_ack`; unacknowledged ones are sent again, with the
 *   same `cid`, after a reconnect (the server never delivers a cid twice);
 * - exactly once on screen: `message` events are emitted once per (thread, id), whether a
 *   message arrives live, in a login's history or in a catch-up `history` after a reconnect.
 *
 * Usage: const c = new SwitchboardClient('ws://host:7272/');
 *        c.on('open', () => c.send({method: 'visitor_login', bid: '1'}));
 *        c.on('message', m => show(m)); c.connect(); c.say({content: 'hi'});
 */
(function (global) {
  'use strict';

  function threadOf(m) {
    if (m.conversation_id) return 'c:' + m.conversation_id;
    if (m.room) return 'r:' + m.room;
    return 'd:' + [m.from_uid, m.to_uid || m.with_uid].sort().join('|');
  }

  class SwitchboardClient {
    constructor(url, options) {
      this.url = url;
      this.options = Object.assign({ heartbeatMs: 20000, minDelayMs: 300, maxDelayMs: 10000 }, options || {});
      this.handlers = {};
      this.pending = new Map(); // cid -> say request, until acknowledged
      this.seen = new Map(); // thread -> Set of message ids shown
      this.lastId = new Map(); // thread -> highest message id seen
      this.attempt = 0;
      this.opens = 0;
      this.stopped = false;
      this.seq = 0;
      this.ws = null;
      this.beat = null;
    }

    on(event, fn) {
      (this.handlers[event] = this.handlers[event] || []).push(fn);
      return this;
    }

    emit(event, data) {
      for (const fn of this.handlers[event] || []) {
        try { fn(data); } catch (e) { console.error('switchboard handler', event, e); }
      }
    }

    get connected() {
      return !!this.ws && this.ws.readyState === 1;
    }

    connect() {
      this.stopped = false;
      const ws = new WebSocket(this.url);
      this.ws = ws;
      ws.onopen = () => {
        this.attempt = 0;
        this.opens += 1;
        clearInterval(this.beat);
        this.beat = setInterval(() => this.sendRaw('beat'), this.options.heartbeatMs);
        // The page logs in first (on 'open'), then what was never acknowledged goes again.
        this.emit('open', { reconnect: this.opens > 1 });
        for (const msg of this.pending.values()) this.sendRaw(JSON.stringify(msg));
      };
      ws.onmessage = (ev) => {
        let m;
        try { m = JSON.parse(ev.data); } catch (e) { return; }
        if (!m || typeof m !== 'object') return;
        if (m.method === 'say_ack' && m.cid) this.pending.delete(m.cid);
        if (m.method === 'say') {
          this.accept(m);
        } else {
          if (Array.isArray(m.history)) m.history.forEach((h) => this.accept(h));
          if (m.method === 'history' && Array.isArray(m.messages)) m.messages.forEach((h) => this.accept(h));
          this.emit(m.method || 'error', m);
        }
        this.emit('frame', m);
      };
      ws.onclose = (ev) => {
        clearInterval(this.beat);
        this.emit('close', { code: ev.code, reason: ev.reason });
        if (this.stopped) return;
        const base = Math.min(this.options.maxDelayMs, this.options.minDelayMs * Math.pow(2, this.attempt));
        const delay = base / 2 + Math.random() * base / 2;
        this.attempt += 1;
        setTimeout(() => { if (!this.stopped) this.connect(); }, delay);
      };
      ws.onerror = () => { /* onclose follows and reconnects */ };
    }

    /** Emits `message` once per (thread, id). */
    accept(m) {
      if (m.id === undefined) return;
      const thread = threadOf(m);
      let ids = this.seen.get(thread);
      if (!ids) { ids = new Set(); this.seen.set(thread, ids); }
      const id = String(m.id);
      if (ids.has(id)) return;
      ids.add(id);
      if (Number(id) > (this.lastId.get(thread) || 0)) this.lastId.set(thread, Number(id));
      this.emit('message', m);
    }

    /** The highest message id seen in a thread, for catching up: `history` with `after_id`. */
    lastSeen(fields) {
      return this.lastId.get(threadOf(fields)) || 0;
    }

    sendRaw(text) {
      if (this.connected) { this.ws.send(text); return true; }
      return false;
    }

    send(obj) {
      return this.sendRaw(JSON.stringify(obj));
    }

    /** Sends a `say`; it is kept until acknowledged and resent after reconnects. Returns its cid. */
    say(fields) {
      const cid = fields.cid || (Date.now().toString(36) + '-' + Math.random().toString(36).slice(2, 8) + '-' + (++this.seq));
      const msg = Object.assign({ method: 'say' }, fields, { cid: cid });
      this.pending.set(cid, msg);
      this.send(msg);
      return cid;
    }

    close() {
      this.stopped = true;
      clearInterval(this.beat);
      if (this.ws) this.ws.close();
    }
  }

  SwitchboardClient.threadOf = threadOf;
  global.SwitchboardClient = SwitchboardClient;
})(typeof window !== 'undefined' ? window : globalThis);

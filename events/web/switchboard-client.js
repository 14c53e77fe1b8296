/*
 * Switchboard client library: one WebSocket that survives network blips.
 *
 * - heartbeat: sends `beat` so the gateway keeps the connection;
 * - reconnect: exponential backoff with jitter after any close the page did not ask for;
 * - resend: every `say` waits for its `say_ack`; unacknowledged ones are sent again, with the
 *   same `cid`, after a reconnect (the server never delivers a cid twice);
 * - exactly once on screen: `message` events are emitted once per (thread, id), whether a
 *   message arrives live, in a login's history or in a catch-up `history` after a reconnect;
 * - fallback: where WebSocket is missing or never opens (twice in a row, and never opened on
 *   this page), the same messages go over HTTP long polling (`PollSocket`) from then on;
 *   `options.transport` = 'websocket' or 'polling' forces one.
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
      this.options = Object.assign({ heartbeatMs: 20000, minDelayMs: 300, maxDelayMs: 10000, transport: 'auto' }, options || {});
      this.transport = this.options.transport === 'polling' ? 'polling' : 'websocket';
      this.wsOpened = false; // a WebSocket opened at least once on this page
      this.wsFailures = 0; // WebSockets in a row that closed without opening
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

    /** A WebSocket, or its long-polling stand-in once WebSocket has proved not to work here. */
    openSocket() {
      if (this.transport === 'websocket') {
        try {
          if (typeof WebSocket === 'undefined') throw new Error('no WebSocket');
          return new WebSocket(this.url);
        } catch (e) {
          if (this.options.transport === 'websocket') throw e;
          this.transport = 'polling';
        }
      }
      return new PollSocket(this.url);
    }

    connect() {
      this.stopped = false;
      const ws = this.openSocket();
      let opened = false;
      this.ws = ws;
      ws.onopen = () => {
        opened = true;
        if (this.transport === 'websocket') { this.wsOpened = true; this.wsFailures = 0; }
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
        if (!opened && this.transport === 'websocket' && this.options.transport === 'auto' && !this.wsOpened &&
            ++this.wsFailures >= 2) {
          this.transport = 'polling';
          this.attempt = 0;
          this.emit('fallback', { transport: 'polling' });
        }
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

  /**
   * HTTP long polling with a WebSocket's face (readyState, send, close, onopen, onmessage,
   * onclose), against the gateway's /poll endpoints (docs/protocol.md): every message carries a
   * sequence number and each poll acknowledges the last one seen, so nothing is lost or shown
   * twice; sends carry the number of their first line, so a retried send is not delivered twice.
   */
  class PollSocket {
    constructor(url) {
      this.base = url.replace(/^ws/, 'http').replace(/\/+$/, '') + '/poll';
      this.readyState = 0;
      this.sid = null;
      this.ack = 0; // last message sequence number received
      this.sent = 0; // lines the gateway has taken
      this.outbox = [];
      this.sending = false;
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      setTimeout(() => this.start(), 0);
    }

    async start() {
      try {
        const r = await fetch(this.base, { method: 'POST', cache: 'no-store' });
        const j = await r.json();
        if (!r.ok || !j.sid) throw new Error(j.error || String(r.status));
        this.sid = j.sid;
        this.readyState = 1;
        if (this.onopen) this.onopen({});
        this.loop();
        this.flush();
      } catch (e) {
        this.finish(1006, '');
      }
    }

    async loop() {
      let failures = 0;
      while (this.readyState === 1) {
        try {
          const r = await fetch(this.base + '?sid=' + this.sid + '&ack=' + this.ack, { cache: 'no-store' });
          if (r.status === 404) return this.finish(1006, 'session gone');
          const j = await r.json();
          failures = 0;
          for (const m of j.messages || []) {
            if (m.seq <= this.ack) continue;
            this.ack = m.seq;
            if (this.onmessage && this.readyState === 1) this.onmessage({ data: m.data });
          }
          if (j.closed) return this.finish(j.closed.code, j.closed.reason);
        } catch (e) {
          if (++failures >= 3) return this.finish(1006, '');
          await new Promise((ok) => setTimeout(ok, 500 * failures));
        }
      }
    }

    send(text) {
      if (this.readyState !== 1) throw new Error('not open');
      this.outbox.push(text);
      this.flush();
    }

    async flush() {
      if (this.sending || this.readyState !== 1) return;
      this.sending = true;
      let failures = 0;
      while (this.outbox.length && this.readyState === 1) {
        const batch = this.outbox.slice(0, 50);
        try {
          const r = await fetch(this.base + '/send?sid=' + this.sid + '&seq=' + this.sent,
            { method: 'POST', body: batch.join('\n'), headers: { 'content-type': 'text/plain' }, cache: 'no-store' });
          if (r.status === 404) { this.finish(1006, 'session gone'); break; }
          const j = await r.json();
          const taken = Math.max(0, (j.received || 0) - this.sent);
          this.outbox.splice(0, taken);
          this.sent += taken;
          if (j.closed) { this.finish(j.closed.code, j.closed.reason); break; }
          if (taken === 0) { this.finish(1006, 'send refused'); break; }
          failures = 0;
        } catch (e) {
          if (++failures >= 3) { this.finish(1006, ''); break; }
          await new Promise((ok) => setTimeout(ok, 300 * failures));
        }
      }
      this.sending = false;
    }

    close() {
      if (this.sid && this.readyState === 1) {
        fetch(this.base + '/close?sid=' + this.sid, { method: 'POST', keepalive: true }).catch(() => {});
      }
      this.finish(1000, '');
    }

    finish(code, reason) {
      if (this.readyState === 3) return;
      this.readyState = 3;
      if (this.onclose) this.onclose({ code: code, reason: reason || '' });
    }
  }

  SwitchboardClient.threadOf = threadOf;
  SwitchboardClient.PollSocket = PollSocket;
  global.SwitchboardClient = SwitchboardClient;
})(typeof window !== 'undefined' ? window : globalThis);

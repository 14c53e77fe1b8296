/*
 * Switchboard client library: one connection that survives network blips and lost servers.
 *
 * - heartbeat: sends `beat` so the gateway keeps the connection; when nothing has arrived for a
 *   heartbeat period it sends `{"method":"heartbeat"}` instead, which a worker answers, and a
 *   connection that stays silent `deadAfterMs` longer is given up as dead (a cut-off server
 *   closes nothing: the browser would wait minutes for TCP to notice);
 * - reconnect: exponential backoff with jitter after any close the page did not ask for; with
 *   several gateway URLs, each attempt goes to the next one, and an attempt that has not opened
 *   within `connectTimeoutMs` is abandoned for the next;
 * - resend: every `say` waits for its `say_ack`; unacknowledged ones are sent again, with the
 *   same `cid`, after a reconnect (the server never delivers a cid twice);
 * - catch-up: after a reconnect (and the page's login on 'open'), the library asks `history`
 *   with `after_id` for each thread it has shown (the `catchUpThreads` most recent), page after
 *   page, and holds that thread's live messages meanwhile, so the page sees what it missed in
 *   order, before anything newer;
 * - exactly once, in order: `message` events are emitted once per (thread, id), whether a
 *   message arrives live, in a login's history or in a catch-up `history` after a reconnect,
 *   and in id order within a thread (a message that overtook a lower id waits for it, at most
 *   `gapMs`, then the gap is asked of `history`);
 * - fallback: where WebSocket is missing or never opens (twice in a row, and never opened on
 *   this page), the same messages go over HTTP long polling (`PollSocket`) from then on;
 *   `options.transport` = 'websocket' or 'polling' forces one.
 *
 * Usage: const c = new SwitchboardClient(['wss://a.example/', 'wss://b.example/']);
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

  /** The fields `history` takes for a message's thread, as seen by `me` (null: not known). */
  function historyKey(m, me) {
    if (m.conversation_id) return { conversation_id: String(m.conversation_id) };
    if (m.room) return { room: String(m.room) };
    if (!me || !m.to_uid) return null;
    return { with_uid: String(m.from_uid === me ? m.to_uid : m.from_uid) };
  }

  /** The thread a `history` answer is about, as `threadOf` names it. */
  function threadOfHistory(m, me) {
    if (m.conversation_id || m.room) return threadOf(m);
    if (m.with_uid && me) return threadOf({ from_uid: me, with_uid: m.with_uid });
    return null;
  }

  class SwitchboardClient {
    constructor(urls, options) {
      this.urls = Array.isArray(urls) ? urls.slice() : [urls];
      if (!this.urls.length) throw new Error('SwitchboardClient: no URL');
      this.urlIndex = 0;
      this.options = Object.assign({
        heartbeatMs: 20000, deadAfterMs: 10000, connectTimeoutMs: 8000,
        minDelayMs: 300, maxDelayMs: 10000, transport: 'auto', catchUp: true, catchUpThreads: 20, catchUpTimeoutMs: 30000, gapMs: 1000,
      }, options || {});
      this.transport = this.options.transport === 'polling' ? 'polling' : 'websocket';
      this.wsOpened = false; // a WebSocket opened at least once on this page
      this.wsFailures = 0; // WebSockets in a row that closed without opening
      this.handlers = {};
      this.pending = new Map(); // cid -> say request, until acknowledged
      this.seen = new Map(); // thread -> Set of message ids shown
      this.lastId = new Map(); // thread -> highest message id seen
      this.keys = new Map(); // thread -> its `history` fields, most recently active last
      this.held = new Map(); // thread -> messages held while it catches up
      this.early = new Map(); // thread -> messages that came before a lower id
      this.gaps = new Map(); // thread -> timer: a gap not filled by then is asked of `history`
      this.catching = []; // threads still to catch up, the first one asked
      this.catchTimer = null;
      this.me = null; // our uid, from the login answer (for private threads)
      this.heardAt = 0; // when the current connection last delivered anything
      this.attempt = 0;
      this.opens = 0;
      this.stopped = false;
      this.seq = 0;
      this.ws = null;
      this.beat = null;
      this.deadCheck = null;
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

    /** The gateway the current (or next) connection goes to. */
    get url() {
      return this.urls[this.urlIndex];
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
      let done = false;
      this.ws = ws;
      this.heardAt = Date.now();
      // A connect into a cut-off network can hang for minutes: move on to the next gateway.
      const opening = setTimeout(() => { if (!opened) lost({ code: 4000, reason: 'connect timed out' }); }, this.options.connectTimeoutMs);
      const lost = (ev) => {
        if (done) return;
        done = true;
        clearTimeout(opening);
        clearInterval(this.beat);
        clearTimeout(this.deadCheck);
        this.deadCheck = null;
        clearTimeout(this.catchTimer); // what is still being caught up is asked again on reopen
        ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
        if (ev.code >= 4000) { try { ws.close(); } catch (e) { /* already closing */ } }
        if (this.ws === ws) this.ws = null;
        this.emit('close', { code: ev.code, reason: ev.reason });
        if (this.stopped) return;
        if (!opened && this.transport === 'websocket' && this.options.transport === 'auto' && !this.wsOpened &&
            ++this.wsFailures >= 2) {
          this.transport = 'polling';
          this.attempt = 0;
          this.emit('fallback', { transport: 'polling' });
        }
        // The next attempt goes to the next gateway: this one may be the one that is gone.
        this.urlIndex = (this.urlIndex + 1) % this.urls.length;
        const base = Math.min(this.options.maxDelayMs, this.options.minDelayMs * Math.pow(2, this.attempt));
        const delay = base / 2 + Math.random() * base / 2;
        this.attempt += 1;
        setTimeout(() => { if (!this.stopped) this.connect(); }, delay);
      };
      ws.onopen = () => {
        opened = true;
        clearTimeout(opening);
        if (this.transport === 'websocket') { this.wsOpened = true; this.wsFailures = 0; }
        this.attempt = 0;
        this.opens += 1;
        this.heardAt = Date.now();
        clearInterval(this.beat);
        this.beat = setInterval(() => this.tick(ws, lost), this.options.heartbeatMs);
        // The page logs in first (on 'open'), then what was never acknowledged goes again, then
        // the catch-up of every thread shown (the server takes one connection's messages in order).
        const reconnect = this.opens > 1;
        this.emit('open', { reconnect: reconnect });
        for (const msg of this.pending.values()) this.sendRaw(JSON.stringify(msg));
        if (reconnect && this.options.catchUp) this.startCatchUp();
      };
      ws.onmessage = (ev) => {
        this.heardAt = Date.now();
        let m;
        try { m = JSON.parse(ev.data); } catch (e) { return; }
        if (!m || typeof m !== 'object') return;
        if (m.method === 'say_ack' && m.cid) this.pending.delete(m.cid);
        if ((m.method === 'login' || m.method === 'visitor_login') && !m.code) {
          this.me = m.customer_id ? String(m.customer_id) : (m.visitor_id ? 'v:' + m.visitor_id : this.me);
        }
        if (m.method === 'say') {
          this.accept(m);
        } else {
          if (Array.isArray(m.history)) m.history.forEach((h) => this.accept(h));
          if (m.method === 'history') this.historyAnswer(m);
          this.emit(m.method || 'error', m);
        }
        this.emit('frame', m);
      };
      ws.onclose = (ev) => lost(ev);
      ws.onerror = () => { /* onclose follows and reconnects */ };
    }

    /** Every heartbeat period: keep the connection, and give it up once it has gone silent. */
    tick(ws, lost) {
      if (ws.readyState !== 1) return;
      if (Date.now() - this.heardAt < this.options.heartbeatMs) {
        ws.send('beat');
        return;
      }
      // Silent for a period: ask something a worker answers, which proves the whole path
      // (gateway and worker) still works, and give the connection up if nothing comes back.
      if (this.deadCheck !== null) return; // asked already; the check below is pending
      const asked = Date.now();
      ws.send('{"method":"heartbeat"}');
      this.deadCheck = setTimeout(() => {
        this.deadCheck = null;
        if (this.ws === ws && this.heardAt < asked) lost({ code: 4001, reason: 'no answer from the server' });
      }, this.options.deadAfterMs);
    }

    /** After a reconnect: `history` after the last id of each thread shown, one thread at a time. */
    startCatchUp() {
      const recent = [...this.keys.keys()].slice(-this.options.catchUpThreads);
      for (const t of recent) if (!this.catching.includes(t)) this.catching.push(t);
      this.catching = this.catching.filter((t) => historyKey(this.keys.get(t), this.me));
      for (const t of this.catching) if (!this.held.has(t)) this.held.set(t, []);
      this.askNext();
    }

    /** Catches a thread up too (after a gap that did not fill), after any already under way. */
    catchUp(thread) {
      if (this.catching.includes(thread)) return;
      this.catching.push(thread);
      if (this.catching.length === 1) this.askNext();
    }

    askNext(after) {
      clearTimeout(this.catchTimer);
      const thread = this.catching[0];
      if (thread === undefined) return;
      const fields = historyKey(this.keys.get(thread), this.me);
      const from = after !== undefined ? after : this.lastId.get(thread) || 0;
      this.send(Object.assign({ method: 'history', after_id: String(from), limit: 100 }, fields));
      // A lost connection asks again once reconnected (`lost` stops this timer); an answer that
      // never comes on a live one must not hold the thread's messages forever.
      this.catchTimer = setTimeout(() => this.caughtUp(thread, []), this.options.catchUpTimeoutMs);
    }

    historyAnswer(m) {
      const thread = this.catching[0];
      const about = threadOfHistory(m, this.me);
      if (thread === undefined || (about !== null && about !== thread)) {
        // The page's own history request: shown as usual.
        if (Array.isArray(m.messages)) m.messages.forEach((h) => this.accept(h));
        return;
      }
      const messages = Array.isArray(m.messages) ? m.messages : [];
      if (!m.code && messages.length >= 100) {
        // A full page: hold it and ask again from its last id.
        this.held.get(thread).push(...messages);
        this.askNext(Number(messages[messages.length - 1].id));
        return;
      }
      this.caughtUp(thread, messages);
    }

    /**
     * Shows a thread's caught-up and held messages in id order, then asks the next thread. The
     * server's answer is the thread as stored up to its newest message: an id missing from it
     * does not exist (an id may be skipped when a store fails halfway), so nothing waits for it.
     */
    caughtUp(thread, messages) {
      clearTimeout(this.catchTimer);
      this.catching = this.catching.filter((t) => t !== thread);
      const waiting = (this.held.get(thread) || []).concat(this.early.get(thread) || []);
      this.held.delete(thread);
      this.early.delete(thread);
      clearTimeout(this.gaps.get(thread));
      this.gaps.delete(thread);
      // The answer is the thread as stored up to its newest message: shown as it is. What came
      // live beyond that is taken in as any live message is, so one that overtook a message
      // stored after the answer was read waits for it.
      const upTo = messages.reduce((max, h) => Math.max(max, Number(h.id)), -Infinity);
      const all = messages.concat(waiting.filter((h) => Number(h.id) <= upTo));
      all.sort((a, b) => Number(a.id) - Number(b.id));
      all.forEach((h) => this.show(thread, h));
      waiting.filter((h) => Number(h.id) > upTo).sort((a, b) => Number(a.id) - Number(b.id)).forEach((h) => this.accept(h));
      this.askNext();
    }

    /**
     * Takes a message in: shown at once when it is the next of its thread (or older than what was
     * shown: a page of history), held while its thread catches up, and held a moment when it
     * came before one with a lower id. Two workers store two senders' messages side by side,
     * so the second id may arrive first; the first follows within milliseconds, or the gap is
     * filled from `history` after `gapMs`. So the page is shown each thread in id order, as
     * `history` would show it.
     */
    accept(m) {
      if (m.id === undefined) return;
      const thread = threadOf(m);
      const held = this.held.get(thread);
      if (held) { held.push(m); return; }
      const last = this.lastId.get(thread);
      if (last !== undefined && Number(m.id) > last + 1 && this.everyMessageOf(thread)) {
        const early = this.early.get(thread) || [];
        early.push(m);
        this.early.set(thread, early);
        if (!this.gaps.has(thread)) {
          this.gaps.set(thread, setTimeout(() => {
            this.gaps.delete(thread);
            if (historyKey(this.keys.get(thread), this.me)) this.catchUp(thread);
            else this.caughtUp(thread, []);
          }, this.options.gapMs));
        }
        return;
      }
      this.show(thread, m);
      const early = this.early.get(thread);
      if (!early) return;
      early.sort((a, b) => Number(a.id) - Number(b.id));
      while (early.length && Number(early[0].id) <= this.lastId.get(thread) + 1) this.show(thread, early.shift());
      if (!early.length) {
        this.early.delete(thread);
        clearTimeout(this.gaps.get(thread));
        this.gaps.delete(thread);
      }
    }

    /**
     * Whether this client is sent every message of a thread, so a missing id is a gap: rooms
     * and private threads, and a visitor's conversation. An agent is not sent the visitor's
     * messages of a conversation assigned to another, so there a missing id means nothing.
     */
    everyMessageOf(thread) {
      return !thread.startsWith('c:') || (this.me !== null && this.me.startsWith('v:'));
    }

    /** Emits `message` once per (thread, id). */
    show(thread, m) {
      this.keys.delete(thread);
      this.keys.set(thread, m);
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
      clearTimeout(this.deadCheck);
      this.deadCheck = null;
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

/*
 * The agent console: sign in with an agent token, see the bot's conversations (waiting / mine /
 * others, unread counts, last message) and online agents live, answer, claim, transfer, close,
 * and talk in rooms and privately. Everything shown comes from the server as data and is put
 * on the page with textContent only.
 */
(function () {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const wsUrl = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/';

  // Names are chosen by whoever logs in: a sender is always shown with its id beside the
  // name, so a copied name cannot pass for someone else.
  function label(name, id) {
    return (name || id) + ' (' + id + ')';
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  const state = {
    me: null, // {bid, customer_id, customer_name, token}
    conversations: new Map(), // id -> summary
    agents: new Map(), // customer_id -> name
    rooms: [],
    tab: 'waiting',
    active: null, // {kind: 'conversation'|'room'|'private', key, title}
    threads: new Map(), // thread -> [messages]
    unseen: 0,
  };
  let client = null;

  // ---------- helpers

  function threadKey(target) {
    if (target.kind === 'conversation') return 'c:' + target.key;
    if (target.kind === 'room') return 'r:' + target.key;
    return 'd:' + [state.me.customer_id, target.key].sort().join('|');
  }

  function targetFields(target) {
    if (target.kind === 'conversation') return { conversation_id: target.key };
    if (target.kind === 'room') return { room: target.key };
    return { to_uid: target.key };
  }

  function historyFields(target) {
    if (target.kind === 'private') return { with_uid: target.key };
    return targetFields(target);
  }

  function stateOf(c) {
    if (!c.assigned) return 'waiting';
    return c.assigned === state.me.customer_id ? 'mine' : 'others';
  }

  function badge() {
    document.title = (state.unseen > 0 ? '(' + state.unseen + ') ' : '') + 'Switchboard console';
  }

  function beep() {
    try {
      const ctx = new (window.AudioContext || window.webkitAudioContext)();
      const osc = ctx.createOscillator();
      osc.frequency.value = 880;
      osc.connect(ctx.destination);
      osc.start();
      osc.stop(ctx.currentTime + 0.12);
    } catch (e) { /* no sound available */ }
  }

  // ---------- rendering

  function renderConversations() {
    const list = $('conversations');
    list.replaceChildren();
    for (const c of state.conversations.values()) {
      if (stateOf(c) !== state.tab) continue;
      const li = el('li');
      li.dataset.conversation = c.conversation_id;
      if (state.active && state.active.kind === 'conversation' && state.active.key === c.conversation_id) li.classList.add('active');
      const row = el('div', 'row');
      row.append(el('span', 'name', c.visitor_name));
      if (String(c.visitor_id || '').startsWith('line:')) row.append(el('span', 'channel', c.followed === false ? 'LINE · unfollowed' : 'LINE'));
      if (c.unread > 0) row.append(el('span', 'badge', c.unread));
      li.append(row);
      const who = c.assigned ? label(state.agents.get(c.assigned), c.assigned) : 'waiting';
      li.append(el('span', 'last', (c.last_message ? c.last_message.content : '') + ' · ' + who));
      li.addEventListener('click', () => open({ kind: 'conversation', key: c.conversation_id, title: c.visitor_name }));
      list.append(li);
    }
    for (const b of document.querySelectorAll('.tabs button')) {
      const n = [...state.conversations.values()].filter((c) => stateOf(c) === b.dataset.tab).length;
      b.textContent = b.dataset.tab[0].toUpperCase() + b.dataset.tab.slice(1) + ' (' + n + ')';
      b.classList.toggle('active', b.dataset.tab === state.tab);
    }
  }

  function renderAgents() {
    const list = $('agents');
    list.replaceChildren();
    const select = $('transfer-to');
    select.replaceChildren();
    for (const [id, name] of state.agents) {
      const li = el('li', null, label(name, id) + (id === state.me.customer_id ? ' · you' : ''));
      if (id !== state.me.customer_id) {
        li.title = 'Private message';
        li.addEventListener('click', () => open({ kind: 'private', key: id, title: 'Private: ' + name }));
        const opt = el('option', null, label(name, id));
        opt.value = id;
        select.append(opt);
      }
      list.append(li);
    }
  }

  function renderRooms() {
    const list = $('rooms');
    list.replaceChildren();
    for (const room of state.rooms) {
      const li = el('li', null, '# ' + room);
      li.addEventListener('click', () => open({ kind: 'room', key: room, title: '# ' + room }));
      list.append(li);
    }
  }

  function renderPane() {
    const a = state.active;
    const log = $('log');
    log.replaceChildren();
    const conv = a && a.kind === 'conversation' ? state.conversations.get(a.key) : null;
    $('pane-title').textContent = a ? a.title + (conv ? ' — ' + (conv.assigned ? 'with ' + label(state.agents.get(conv.assigned), conv.assigned) : 'waiting') : '') : 'Pick a conversation';
    $('reply').classList.toggle('hidden', !a);
    $('older').classList.toggle('hidden', !a);
    $('claim').classList.toggle('hidden', !conv || !!conv.assigned);
    const holder = !!conv && conv.assigned === state.me.customer_id;
    $('transfer').classList.toggle('hidden', !holder);
    $('transfer-to').classList.toggle('hidden', !holder);
    $('close').classList.toggle('hidden', !conv);
    if (!a) return;
    for (const m of state.threads.get(threadKey(a)) || []) {
      const mine = m.from_uid === state.me.customer_id;
      const div = el('div', 'msg ' + (mine ? 'me' : 'them'));
      div.dataset.testid = 'message';
      div.append(el('span', 'who', label(m.from_name, m.from_uid)));
      const picture = m.image || (m.sticker && m.sticker.url);
      if (picture && /^https?:\/\//.test(picture)) {
        const img = el('img', m.image ? 'image' : 'sticker');
        img.src = picture;
        img.alt = m.content;
        img.dataset.testid = m.image ? 'image' : 'sticker';
        // A picture that cannot load (LINE's sticker CDN unreachable, an expired file) shows its text.
        img.addEventListener('error', () => {
          const text = el('span', 'text', m.content);
          text.dataset.testid = img.dataset.testid;
          img.replaceWith(text);
        });
        div.append(img);
      } else {
        div.append(el('span', 'text', m.content));
      }
      if (m.delivery) {
        const d = el('span', 'delivery ' + m.delivery, m.delivery + (m.delivery_error ? ': ' + m.delivery_error : ''));
        d.dataset.testid = 'delivery';
        div.append(d);
      }
      log.append(div);
    }
    log.scrollTop = log.scrollHeight;
  }

  // ---------- actions

  function open(target) {
    state.active = target;
    const key = threadKey(target);
    if (!state.threads.has(key)) client.send(Object.assign({ method: 'history', limit: 50 }, historyFields(target)));
    markRead();
    renderConversations();
    renderPane();
  }

  function markRead() {
    const a = state.active;
    if (!a || document.hidden) return;
    const msgs = state.threads.get(threadKey(a)) || [];
    if (!msgs.length) return;
    client.send(Object.assign({ method: 'read', id: msgs[msgs.length - 1].id }, historyFields(a)));
    if (a.kind === 'conversation') {
      const c = state.conversations.get(a.key);
      if (c) c.unread = 0;
    }
    state.unseen = 0;
    badge();
  }

  function addMessage(m) {
    let key;
    if (m.conversation_id) key = 'c:' + m.conversation_id;
    else if (m.room) key = 'r:' + m.room;
    else key = 'd:' + [m.from_uid, m.to_uid].sort().join('|');
    const list = state.threads.get(key) || [];
    list.push(m);
    list.sort((x, y) => Number(x.id) - Number(y.id));
    state.threads.set(key, list);
    return key;
  }

  // ---------- the connection

  function start(me) {
    state.me = me;
    $('signin').classList.add('hidden');
    $('app').classList.remove('hidden');
    $('me').textContent = me.customer_name + ' · bot ' + me.bid;
    client = new SwitchboardClient(wsUrl);
    client.on('open', (info) => {
      $('conn').textContent = 'online';
      $('conn').classList.remove('down');
      // presence: 'compact' — the agents online as rows [id, name, 1], and a tick's arrivals
      // (1) and departures (0) in one agents_push: a big bot's login storm is mostly these.
      client.send({ method: 'login', bid: me.bid, customer_id: me.customer_id, customer_name: me.customer_name, token: me.token, presence: 'compact' });
      if (info.reconnect) {
        for (const room of state.rooms) client.send({ method: 'join', room: room });
        // Catch up on the open thread: everything after the last message we saw.
        if (state.active) {
          client.send(Object.assign({ method: 'history', after_id: String(client.lastSeen(Object.assign({ from_uid: me.customer_id }, targetFields(state.active)))) }, historyFields(state.active)));
        }
      }
    });
    client.on('close', () => {
      $('conn').textContent = 'reconnecting…';
      $('conn').classList.add('down');
    });
    client.on('login', (m) => {
      if (m.code) {
        sessionStorage.removeItem('switchboard:agent');
        $('signin-error').textContent = m.msg;
        $('signin').classList.remove('hidden');
        $('app').classList.add('hidden');
        client.close();
        return;
      }
      state.agents = new Map((m.agents || []).map(([id, name]) => [id, name]));
      state.conversations = new Map((m.conversations || []).map((c) => [c.conversation_id, c]));
      if (m.conversations_more) morePages(m.conversations);
      renderAgents();
      renderConversations();
      renderPane();
    });
    // The login answer carries the first page of open conversations; the rest come in pages.
    const morePages = (page) => {
      if (page.length) client.send({ method: 'conversation_list', after: page[page.length - 1].conversation_id });
    };
    client.on('conversation_list', (m) => {
      for (const c of m.conversations || []) state.conversations.set(c.conversation_id, c);
      if (m.more) morePages(m.conversations || []);
      renderConversations();
    });
    // The token expired or was revoked: the server closes the connection after this frame.
    client.on('logout', (m) => {
      sessionStorage.removeItem('switchboard:agent');
      $('signin-error').textContent = (m.msg || 'Signed out') + '';
      $('signin').classList.remove('hidden');
      $('app').classList.add('hidden');
      client.close();
    });
    const presence = (m) => {
      if (m.method === 'login_push') state.agents.set(m.customer_id, m.customer_name);
      if (m.method === 'logout_push') state.agents.delete(m.customer_id);
    };
    client.on('login_push', (m) => { presence(m); renderAgents(); });
    client.on('logout_push', (m) => { presence(m); renderAgents(); });
    client.on('agents_push', (m) => {
      for (const [id, name, online] of m.agents || []) {
        if (online) state.agents.set(id, name); else state.agents.delete(id);
      }
      renderAgents();
    });
    client.on('conversation_push', (m) => {
      const c = state.conversations.get(m.conversation_id) || { unread: 0, last_message: null };
      Object.assign(c, { conversation_id: m.conversation_id, visitor_id: m.visitor_id, visitor_name: m.visitor_name, assigned: m.assigned });
      state.conversations.set(m.conversation_id, c);
      renderConversations();
    });
    client.on('assign_push', (m) => {
      const c = state.conversations.get(m.conversation_id);
      if (c) c.assigned = m.assigned ? m.assigned.customer_id : null;
      renderConversations();
      renderPane();
    });
    client.on('close_push', (m) => {
      state.conversations.delete(m.conversation_id);
      if (state.active && state.active.key === m.conversation_id) state.active = null;
      renderConversations();
      renderPane();
    });
    client.on('message', (m) => {
      const key = addMessage(m);
      const activeKey = state.active ? threadKey(state.active) : null;
      if (m.conversation_id) {
        const c = state.conversations.get(m.conversation_id);
        if (c) {
          c.last_message = m;
          if (m.line_event) c.followed = m.line_event === 'follow';
          if (key !== activeKey && m.from_uid !== me.customer_id) c.unread = (c.unread || 0) + 1;
        }
      }
      if (m.from_uid !== me.customer_id && (key !== activeKey || document.hidden)) {
        state.unseen += 1;
        badge();
        beep();
      }
      if (key === activeKey) { renderPane(); markRead(); }
      renderConversations();
    });
    client.on('history', () => renderPane());
    client.on('delivery_push', (m) => {
      const msg = (state.threads.get('c:' + m.conversation_id) || []).find((x) => String(x.id) === String(m.id));
      if (msg) Object.assign(msg, { delivery: m.delivery, delivery_error: m.delivery_error });
      if (state.active && state.active.key === m.conversation_id) renderPane();
    });
    client.on('join', (m) => {
      if (!state.rooms.includes(m.room)) state.rooms.push(m.room);
      renderRooms();
    });
    client.on('claim', () => renderPane());
    client.on('transfer', () => renderPane());
    let typingTimer = null;
    client.on('typing_push', (m) => {
      if (!state.active || state.active.key !== m.conversation_id) return;
      $('typing').textContent = label(m.from_name, m.from_uid) + ' is typing…';
      clearTimeout(typingTimer);
      typingTimer = setTimeout(() => { $('typing').textContent = ''; }, 3000);
    });
    client.connect();
  }

  // ---------- wiring (no inline handlers)

  $('signin').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const me = { bid: f.get('bid'), customer_id: f.get('customer_id'), customer_name: f.get('customer_name'), token: f.get('token') };
    sessionStorage.setItem('switchboard:agent', JSON.stringify(me));
    start(me);
  });
  for (const b of document.querySelectorAll('.tabs button')) {
    b.addEventListener('click', () => { state.tab = b.dataset.tab; renderConversations(); });
  }
  $('reply').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = ev.target.elements.content;
    const text = input.value.trim();
    if (!text || !state.active) return;
    input.value = '';
    client.say(Object.assign({ content: text }, targetFields(state.active)));
  });
  let lastTyping = 0;
  $('reply').elements.content.addEventListener('input', () => {
    if (!state.active || state.active.kind !== 'conversation' || Date.now() - lastTyping < 2000) return;
    lastTyping = Date.now();
    client.send({ method: 'typing', conversation_id: state.active.key });
  });
  $('older').addEventListener('click', () => {
    const a = state.active;
    const msgs = a ? state.threads.get(threadKey(a)) || [] : [];
    if (!a) return;
    client.send(Object.assign({ method: 'history', limit: 50 }, msgs.length ? { before_id: msgs[0].id } : {}, historyFields(a)));
  });
  $('claim').addEventListener('click', () => client.send({ method: 'claim', conversation_id: state.active.key }));
  $('transfer').addEventListener('click', () => {
    const to = $('transfer-to').value;
    if (to) client.send({ method: 'transfer', conversation_id: state.active.key, to: to });
  });
  $('close').addEventListener('click', () => client.send({ method: 'close', conversation_id: state.active.key }));
  $('join').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const room = ev.target.elements.room.value.trim();
    if (room) client.send({ method: 'join', room: room });
    ev.target.reset();
  });
  document.addEventListener('visibilitychange', markRead);

  const saved = sessionStorage.getItem('switchboard:agent');
  if (saved) {
    try { start(JSON.parse(saved)); } catch (e) { sessionStorage.removeItem('switchboard:agent'); }
  }
})();

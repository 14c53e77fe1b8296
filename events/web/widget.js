/*
 * The visitor widget: <script src="https://chat.example.com:7272/widget.js" data-bid="1"></script>
 * adds a chat button and window to any page. The visitor id is kept in localStorage, so a reload
 * resumes the same conversation with its history. All text is shown with textContent.
 */
(function () {
  'use strict';
  const script = document.currentScript;
  if (!script || !window.SwitchboardClient) return;
  const bid = script.dataset.bid || '1';
  const title = script.dataset.title || 'Chat with us';
  const src = new URL(script.src, location.href);
  // Several servers: data-gateways="wss://a.example/,wss://b.example/" (tried in turn when one
  // is lost); by default, the gateway that served this script.
  const wsUrls = (script.dataset.gateways || '').split(',').map((u) => u.trim()).filter(Boolean);
  if (!wsUrls.length) wsUrls.push((src.protocol === 'https:' ? 'wss://' : 'ws://') + src.host + '/');
  const storeKey = 'switchboard:visitor:' + bid;

  const host = document.createElement('div');
  host.id = 'switchboard-widget';
  document.body.appendChild(host);
  const root = host.attachShadow({ mode: 'open' });
  const style = document.createElement('style');
  style.textContent = `
    :host { all: initial; }
    .btn { position: fixed; right: 20px; bottom: 20px; z-index: 2147483000; border: 0; border-radius: 24px;
      padding: 12px 18px; background: #0a58ca; color: #fff; font: 600 15px system-ui, sans-serif; cursor: pointer;
      box-shadow: 0 4px 14px rgba(0,0,0,.2); }
    .panel { position: fixed; right: 20px; bottom: 76px; z-index: 2147483000; width: min(360px, calc(100vw - 40px));
      height: min(520px, calc(100vh - 110px)); display: none; flex-direction: column; background: #fff;
      border-radius: 12px; box-shadow: 0 8px 30px rgba(0,0,0,.25); font: 14px system-ui, sans-serif; color: #1b1f24; overflow: hidden; }
    .panel.open { display: flex; }
    header { background: #0a58ca; color: #fff; padding: 12px 14px; }
    header .t { font-weight: 600; }
    header .agent { font-size: 12px; margin-top: 2px; }
    .log { flex: 1; overflow-y: auto; padding: 10px; background: #f6f8fa; }
    .msg { max-width: 80%; margin: 6px 0; padding: 8px 10px; border-radius: 10px; white-space: pre-wrap; word-wrap: break-word; }
    .msg.me { margin-left: auto; background: #0a58ca; color: #fff; }
    .msg.them { background: #fff; border: 1px solid #d0d7de; }
    .msg .who { display: block; font-size: 11px; opacity: .75; margin-bottom: 2px; }
    .msg .state { display: block; font-size: 10px; text-align: right; margin-top: 2px; }
    .typing { font-size: 12px; color: #57606a; padding: 0 12px 4px; min-height: 16px; }
    .status { font-size: 11px; color: #9a6700; padding: 2px 12px; }
    form { display: flex; border-top: 1px solid #d0d7de; }
    input { flex: 1; border: 0; padding: 12px; font: inherit; outline: none; }
    input:focus-visible, button:focus-visible { outline: 2px solid #0a58ca; outline-offset: -2px; }
    .btn:focus-visible { outline: 3px solid #1b1f24; outline-offset: 2px; }
    button.send { border: 0; background: none; color: #0a58ca; font-weight: 600; padding: 0 14px; cursor: pointer; }`;
  root.appendChild(style);

  // An agent's name is its own choice: its id goes beside it, so a copied name cannot pass
  // for someone else.
  function label(name, id) {
    return (name || 'Agent') + (id ? ' (' + id + ')' : '');
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // Screen readers: the launcher says whether the chat is open and which element it opens;
  // the chat is a (non-modal) dialog named by its title; new messages and the agent's state
  // are announced politely as they come (role=log / role=status).
  const button = el('button', 'btn', title);
  button.setAttribute('part', 'button');
  button.setAttribute('aria-expanded', 'false');
  button.setAttribute('aria-controls', 'switchboard-panel');
  const panel = el('div', 'panel');
  panel.id = 'switchboard-panel';
  panel.setAttribute('role', 'dialog');
  panel.setAttribute('aria-label', title);
  const header = el('header');
  header.append(el('div', 't', title));
  const agentLine = el('div', 'agent', 'We will answer shortly');
  agentLine.setAttribute('role', 'status');
  header.append(agentLine);
  const status = el('div', 'status');
  status.setAttribute('role', 'status');
  const log = el('div', 'log');
  log.setAttribute('role', 'log');
  log.setAttribute('aria-label', 'Messages');
  const typing = el('div', 'typing');
  typing.setAttribute('aria-live', 'polite');
  const form = el('form');
  const input = el('input');
  input.placeholder = 'Type a message…';
  input.setAttribute('aria-label', 'Your message');
  input.maxLength = 4000;
  const send = el('button', 'send', 'Send');
  send.type = 'submit';
  form.append(input, send);
  panel.append(header, status, log, typing, form);
  root.append(button, panel);

  let visitorId = localStorage.getItem(storeKey) || '';
  let conversation = '';
  const bubbles = new Map(); // cid or id -> bubble element

  function scroll() { log.scrollTop = log.scrollHeight; }

  function bubble(m, mine) {
    const key = m.cid && mine ? 'cid:' + m.cid : 'id:' + m.id;
    let b = bubbles.get(key);
    if (!b) {
      b = el('div', 'msg ' + (mine ? 'me' : 'them'));
      b.dataset.testid = 'message';
      if (!mine) b.append(el('span', 'who', label(m.from_name, m.from_uid)));
      b.append(el('span', 'text', m.content));
      b.append(el('span', 'state', ''));
      log.appendChild(b);
      bubbles.set(key, b);
      scroll();
    }
    return b;
  }

  function setState(b, text) {
    b.querySelector('.state').textContent = text;
  }

  const client = new SwitchboardClient(wsUrls);
  client.on('open', () => {
    status.textContent = '';
    client.send({ method: 'visitor_login', bid: bid, visitor_id: visitorId || undefined });
  });
  client.on('close', () => { status.textContent = 'Reconnecting…'; });
  client.on('visitor_login', (m) => {
    visitorId = m.visitor_id;
    conversation = m.conversation_id;
    localStorage.setItem(storeKey, visitorId);
    if (m.assigned) agentLine.textContent = label(m.assigned.customer_name, m.assigned.customer_id) + ' is here to help';
  });
  client.on('message', (m) => {
    const mine = m.from_uid === 'v:' + visitorId;
    const b = bubble(m, mine);
    if (mine) setState(b, 'delivered');
    if (!mine) typing.textContent = '';
  });
  client.on('say_ack', (m) => {
    const b = bubbles.get('cid:' + m.cid);
    if (b) setState(b, 'delivered');
  });
  client.on('assign_push', (m) => {
    if (m.assigned) agentLine.textContent = label(m.assigned.customer_name, m.assigned.customer_id) + ' is here to help';
  });
  client.on('close_push', () => {
    agentLine.textContent = 'This conversation was closed';
    client.send({ method: 'visitor_login', bid: bid, visitor_id: visitorId });
  });
  let typingTimer = null;
  client.on('typing_push', (m) => {
    typing.textContent = label(m.from_name, m.from_uid) + ' is typing…';
    clearTimeout(typingTimer);
    typingTimer = setTimeout(() => { typing.textContent = ''; }, 3000);
  });
  client.on('error', (m) => {
    if (m.code) status.textContent = m.msg || 'Something went wrong';
  });

  let lastTyping = 0;
  input.addEventListener('input', () => {
    const now = Date.now();
    if (now - lastTyping > 2000 && conversation) {
      lastTyping = now;
      client.send({ method: 'typing' });
    }
  });
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = '';
    const cid = client.say({ content: text });
    const b = bubble({ cid: cid, content: text }, true);
    setState(b, 'sending…');
  });
  // Opening moves the focus into the chat; closing (the launcher again, or Escape in the
  // chat) brings it back to the launcher, so a keyboard user never loses their place.
  function setOpen(open) {
    panel.classList.toggle('open', open);
    button.setAttribute('aria-expanded', String(open));
    if (open) input.focus();
    else button.focus();
  }
  button.addEventListener('click', () => setOpen(!panel.classList.contains('open')));
  panel.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape') {
      ev.stopPropagation();
      setOpen(false);
    }
  });

  client.connect();
  window.SwitchboardWidget = { client: client, open: () => setOpen(true), close: () => setOpen(false) };
})();

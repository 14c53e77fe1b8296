// End-to-end: a visitor page (the demo page with the widget) and two agent consoles in headless
// Chromium against a running system. Run by tests/web.rs:
//   node web/e2e/e2e.mjs <base-url> <token a1> <token b2> <switchboard binary> <run dir> <screenshot dir>
//                        <LINE webhook URL> <LINE channel secret>
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';

// Evaluated through the DevTools protocol, so the console's Content-Security-Policy (no inline
// scripts) stays in force for the page's own code.
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

const [base, tokenA, tokenB, bin, dir, shots, lineWebhook, lineSecret] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
    '--no-first-run', '--disable-component-update', '--disable-sync'],
});
let alerts = 0;
const T = 15000;

function step(name) { console.log('step:', name); }

async function open(url, viewport) {
  const ctx = await browser.newContext({ viewport: viewport || { width: 1200, height: 800 } });
  const page = await ctx.newPage();
  page.on('dialog', (d) => { alerts += 1; d.dismiss(); });
  page.on('pageerror', (e) => console.error('page error:', e.message));
  await page.goto(url);
  return page;
}

async function signIn(page, id, name, token) {
  await page.fill('input[name=customer_id]', id);
  await page.fill('input[name=customer_name]', name);
  await page.fill('input[name=token]', token);
  await page.click('#signin button[type=submit]');
  await page.locator('#conn', { hasText: 'online' }).waitFor({ timeout: T });
}

/** axe-core's WCAG 2.1 A and AA rules on the page as it is (the widget's shadow DOM included):
 * every violation fails the run, with what and where. */
async function accessible(page, what) {
  await page.evaluate(axeSource);
  const result = await page.evaluate(() => window.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } }));
  const found = result.violations.map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
  if (found.length) throw new Error(`${what}: ${found.length} accessibility violation(s):\n` + found.join('\n'));
  console.log(`a11y: ${what}: 0 violations (${result.passes.length} rules passed)`);
}

/** How many message bubbles on the page show exactly `text`. */
async function count(page, text) {
  return page.locator('.msg .text').evaluateAll((els, t) => els.filter((e) => e.textContent === t).length, text);
}

async function waitCount(page, text, n) {
  const deadline = Date.now() + T;
  for (;;) {
    const c = await count(page, text);
    if (c === n) return;
    if (Date.now() > deadline) throw new Error(`expected ${n} × ${JSON.stringify(text)}, saw ${c}`);
    await page.waitForTimeout(100);
  }
}

/** Posts LINE webhook events, signed as LINE signs them. */
async function lineWebhookPost(events) {
  const body = JSON.stringify({ destination: 'U00000000000000000000000000000000', events });
  const signature = createHmac('sha256', lineSecret).update(body).digest('base64');
  const r = await fetch(lineWebhook, { method: 'POST', body, headers: { 'content-type': 'application/json', 'x-line-signature': signature } });
  if (r.status !== 200) throw new Error('webhook answered ' + r.status);
}

function lineEvent(id, message) {
  return { type: 'message', mode: 'active', timestamp: Date.now(), webhookEventId: id, deliveryContext: { isRedelivery: false },
    source: { type: 'user', userId: 'Uweb1' }, replyToken: 'rt-' + id, message };
}

async function tabCount(page, tab) {
  const label = await page.locator(`.tabs button[data-tab=${tab}]`).textContent();
  return Number((label.match(/\((\d+)\)/) || [0, 0])[1]);
}

try {
  step('two agents sign in');
  const alice = await open(base + '/console/');
  await signIn(alice, 'a1', 'Alice', tokenA);
  const bob = await open(base + '/console/');
  await signIn(bob, 'b2', 'Bob', tokenB);
  await alice.locator('#agents li', { hasText: 'Bob' }).waitFor({ timeout: T });

  step('a visitor opens the widget and writes, with HTML in the text');
  const visitor = await open(base + '/demo.html', { width: 420, height: 720 });
  await visitor.click('.btn');
  const evil = 'hello <img src=x onerror=alert(1)>';
  await visitor.fill('.panel input', evil);
  await visitor.press('.panel input', 'Enter');
  await visitor.locator('.msg.me .state', { hasText: 'delivered' }).waitFor({ timeout: T });

  step('one agent is assigned and the other sees it');
  let holder = null, other = null, holderName = '', holderId = '';
  const deadline = Date.now() + T;
  while (!holder) {
    if (await tabCount(alice, 'mine') === 1) { holder = alice; other = bob; holderName = 'Alice'; holderId = 'a1'; }
    else if (await tabCount(bob, 'mine') === 1) { holder = bob; other = alice; holderName = 'Bob'; holderId = 'b2'; }
    else if (Date.now() > deadline) throw new Error('no agent got the conversation');
    else await alice.waitForTimeout(100);
  }
  await other.waitForFunction(() => /Others \(1\)/.test(document.querySelector('.tabs button[data-tab=others]').textContent), null, { timeout: T });
  // A name is shown with its id, so a copied name cannot pass for someone else.
  await visitor.locator('.agent', { hasText: holderName + ' (' + holderId + ') is here to help' }).waitFor({ timeout: T });

  step('the unread count moves');
  await holder.click('.tabs button[data-tab=mine]');
  await holder.locator('#conversations li .badge', { hasText: '1' }).waitFor({ timeout: T });
  await holder.click('#conversations li');
  await holder.locator('#conversations li .badge').waitFor({ state: 'detached', timeout: T });

  step('the HTML is shown as text');
  await waitCount(holder, evil, 1);
  if (await holder.locator('.log img').count() !== 0) throw new Error('an <img> from a message reached the console DOM');
  if (await visitor.locator('#switchboard-widget .msg img').count() !== 0) throw new Error('an <img> reached the widget');

  step('the agent answers, with typing seen by the visitor');
  await holder.type('#reply input', 'hi there', { delay: 20 });
  await visitor.locator('.typing', { hasText: 'is typing' }).waitFor({ timeout: T });
  await holder.press('#reply input', 'Enter');
  await waitCount(visitor, 'hi there', 1);
  await visitor.locator('#switchboard-widget .msg.them .who', { hasText: holderName + ' (' + holderId + ')' }).first().waitFor({ timeout: T });
  await holder.locator('.log .msg.them .who', { hasText: '(v:' }).first().waitFor({ timeout: T });
  await other.locator('#agents li', { hasText: holderName + ' (' + holderId + ')' }).waitFor({ timeout: T });

  step('the gateway is killed; both pages reconnect; nothing is lost or shown twice');
  const rows = JSON.parse(execFileSync(bin, ['status', '--json'], { cwd: dir }).toString());
  const gw = rows.find((r) => r.role === 'gateway');
  process.kill(gw.pid, 'SIGKILL');
  await holder.locator('#conn', { hasText: 'reconnecting' }).waitFor({ timeout: T });
  await visitor.fill('.panel input', 'after the cut');
  await visitor.press('.panel input', 'Enter');
  await holder.fill('#reply input', 'agent after the cut');
  await holder.press('#reply input', 'Enter');
  await holder.locator('#conn', { hasText: 'online' }).waitFor({ timeout: 30000 });
  await visitor.locator('.msg.me .state', { hasText: 'delivered' }).last().waitFor({ timeout: T });
  for (const [page, text] of [[holder, 'after the cut'], [visitor, 'agent after the cut'], [holder, evil], [visitor, evil],
    [visitor, 'hi there'], [holder, 'hi there'], [holder, 'agent after the cut'], [visitor, 'after the cut']]) {
    await waitCount(page, text, 1);
  }
  await visitor.waitForTimeout(1000);
  for (const [page, text] of [[holder, 'after the cut'], [visitor, 'agent after the cut']]) {
    const c = await count(page, text);
    if (c !== 1) throw new Error(`${JSON.stringify(text)} shown ${c} times after the reconnect`);
  }
  const states = await visitor.locator('.msg.me .state').allTextContents();
  if (states.some((s) => s !== 'delivered')) throw new Error('a visitor message is not delivered: ' + states.join(','));

  step('a page reload resumes the same conversation, each message once');
  await visitor.reload();
  await visitor.click('.btn');
  for (const text of [evil, 'hi there', 'after the cut', 'agent after the cut']) await waitCount(visitor, text, 1);
  // A name is shown with its id, so a copied name cannot pass for someone else.
  await visitor.locator('.agent', { hasText: holderName + ' (' + holderId + ') is here to help' }).waitFor({ timeout: T });

  step('the visitor types; the agent sees it');
  await visitor.type('.panel input', 'thinking', { delay: 20 });
  await holder.locator('#typing', { hasText: 'is typing' }).waitFor({ timeout: T });

  step('accessibility: axe-core (WCAG 2.1 AA) finds nothing on the widget or the console');
  await accessible(visitor, 'the visitor widget');
  // The launcher says the chat is open and the focus is in it; Escape closes it and gives the
  // focus back to the launcher; the launcher opens it again with the focus in the input.
  const widgetFocus = () => visitor.evaluate(() => {
    const a = document.getElementById('switchboard-widget').shadowRoot.activeElement;
    return a ? a.tagName + (a.className ? '.' + a.className : '') : 'none';
  });
  const expanded = () => visitor.locator('.btn').getAttribute('aria-expanded');
  if (await expanded() !== 'true') throw new Error('the open launcher does not say so: aria-expanded=' + await expanded());
  if (await visitor.locator('.panel').getAttribute('role') !== 'dialog') throw new Error('the chat is not a dialog');
  await visitor.focus('.panel input');
  await visitor.keyboard.press('Escape');
  if (await visitor.locator('.panel').isVisible()) throw new Error('Escape did not close the chat');
  if (await expanded() !== 'false' || await widgetFocus() !== 'BUTTON.btn') throw new Error('after Escape: aria-expanded=' + await expanded() + ', focus on ' + await widgetFocus());
  await visitor.keyboard.press('Enter');
  if (await expanded() !== 'true' || await widgetFocus() !== 'INPUT') throw new Error('reopened from the keyboard: aria-expanded=' + await expanded() + ', focus on ' + await widgetFocus());
  if (await visitor.locator('.log').getAttribute('role') !== 'log') throw new Error('new messages are not announced (no role=log)');
  await accessible(holder, 'the agent console');
  await accessible(await open(base + '/console/'), 'the console sign-in');

  step('screenshots');
  await visitor.screenshot({ path: shots + '/visitor-widget.png' });
  await holder.screenshot({ path: shots + '/agent-console.png' });

  step('a LINE user writes: text, a sticker and an image reach the console');
  await lineWebhookPost([lineEvent('w1', { id: '7001', type: 'text', text: 'Hello from LINE' })]);
  await lineWebhookPost([
    lineEvent('w2', { id: '7002', type: 'sticker', packageId: '446', stickerId: '1988', stickerResourceType: 'STATIC' }),
    lineEvent('w3', { id: '7003', type: 'image', contentProvider: { type: 'line' } }),
  ]);
  // Least-busy assignment gives it to the agent without a conversation.
  await other.click('.tabs button[data-tab=mine]');
  await other.locator('#conversations li', { hasText: 'Yuki Tanaka' }).waitFor({ timeout: T });
  await other.locator('#conversations li .channel', { hasText: 'LINE' }).waitFor({ timeout: T });
  await other.click('#conversations li >> text=Yuki Tanaka');
  await waitCount(other, 'Hello from LINE', 1);
  // The sticker's picture is on LINE's CDN, out of reach here: its text stands in.
  await other.locator('.log [data-testid=sticker]').waitFor({ timeout: T });
  const image = other.locator('.log img[data-testid=image]');
  await image.waitFor({ timeout: T });
  await other.waitForFunction(() => { const i = document.querySelector('.log img[data-testid=image]'); return i && i.complete && i.naturalWidth === 1; }, null, { timeout: T });

  step('the agent answers; the console shows it sent');
  await other.fill('#reply input', 'Thanks, we are on it!');
  await other.press('#reply input', 'Enter');
  await other.locator('.msg.me .delivery', { hasText: 'sent' }).waitFor({ timeout: T });
  await other.screenshot({ path: shots + '/agent-console-line.png' });

  step('a visitor whose network blocks WebSocket: the widget falls back to long polling by itself');
  const blocked = await browser.newContext({ viewport: { width: 420, height: 720 } });
  await blocked.addInitScript(() => {
    // As behind a proxy that refuses the upgrade: every WebSocket fails before it opens.
    window.WebSocket = class {
      constructor() {
        this.readyState = 0;
        setTimeout(() => { this.readyState = 3; if (this.onerror) this.onerror({}); if (this.onclose) this.onclose({ code: 1006, reason: '' }); }, 10);
      }
      send() { throw new Error('not open'); }
      close() {}
    };
  });
  const polling = await blocked.newPage();
  let sockets = 0, pollSends = 0;
  polling.on('websocket', () => { sockets += 1; });
  polling.on('request', (r) => { if (r.url().includes('/poll/send')) pollSends += 1; });
  polling.on('pageerror', (e) => console.error('page error:', e.message));
  await polling.goto(base + '/demo.html');
  await polling.click('.btn');
  await polling.fill('.panel input', 'via polling');
  await polling.press('.panel input', 'Enter');
  await polling.locator('.msg.me .state', { hasText: 'delivered' }).waitFor({ timeout: T });
  let answering = null;
  const found = Date.now() + T;
  while (!answering) {
    for (const p of [alice, bob]) {
      await p.click('.tabs button[data-tab=mine]');
      if (!answering && await p.locator('#conversations li', { hasText: 'via polling' }).count() > 0) answering = p;
    }
    if (!answering && Date.now() > found) throw new Error('no agent got the polling visitor');
    if (!answering) await alice.waitForTimeout(200);
  }
  await answering.locator('#conversations li', { hasText: 'via polling' }).click();
  await waitCount(answering, 'via polling', 1);
  await answering.fill('#reply input', 'answer over polling');
  await answering.press('#reply input', 'Enter');
  await waitCount(polling, 'answer over polling', 1);
  await polling.waitForTimeout(500);
  await waitCount(polling, 'answer over polling', 1);
  if (sockets !== 0) throw new Error(sockets + ' WebSocket(s) opened on the blocked page');
  if (pollSends === 0) throw new Error('the blocked page never used /poll/send');
  if (alerts) throw new Error(alerts + ' alert(s) ran: text was executed as HTML');
  console.log('e2e: ok');
} catch (e) {
  console.error('e2e failed:', e.message);
  process.exitCode = 1;
} finally {
  await browser.close();
}

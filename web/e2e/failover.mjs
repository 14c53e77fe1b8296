// Agents in headless Chromium, each a SwitchboardClient (the library as a gateway serves it)
// given several gateways, chatting in room "r" while the test cuts their gateway's host off.
// Run by tests/hosts.rs:
//   node web/e2e/failover.mjs <library URL> <gateway URLs as JSON> <agents as JSON [{id, token}]>
// Then, over stdin/stdout, one line each:
//   prints `ready`     every agent has logged in and joined the room (each says something every
//                      300 ms from then on, as `<id>-<n>` with that cid);
//   reads  `stop`      they stop saying; prints `quiet` once every say is acknowledged;
//   reads  `report`    prints one JSON line per agent: {id, url, opens, acked: [cid],
//                      shown: [{id, content}] (room "r", in the order the page was shown them)},
//                      then exits.
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';

const [libraryUrl, urlsJson, agentsJson] = process.argv.slice(2);
const urls = JSON.parse(urlsJson);
const agents = JSON.parse(agentsJson);
const library = await (await fetch(libraryUrl)).text();

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
    '--no-first-run', '--disable-component-update', '--disable-sync'],
});
const page = await browser.newPage();
page.on('pageerror', (e) => console.error('page error:', e.message));
page.on('console', (m) => { if (m.type() === 'error') console.error('page console:', m.text()); });
// The page comes from a gateway, as a site's would: Chromium lets a page reach private
// addresses (the test hosts') only from a private origin.
await page.goto(libraryUrl);
await page.addScriptTag({ content: library });

// Short heartbeats so a cut is noticed within seconds (the defaults take 20 s + 10 s).
await page.evaluate(({ urls, agents }) => {
  window.agents = agents.map((a) => {
    const c = new SwitchboardClient(urls, { heartbeatMs: 1000, deadAfterMs: 2000, connectTimeoutMs: 3000, maxDelayMs: 2000 });
    const state = { id: a.id, client: c, joined: false, acked: [], shown: [], sent: 0, saying: null };
    c.on('close', (e) => console.error('close', a.id, e.code, e.reason, c.url));
    c.on('open', () => {
      c.send({ method: 'login', bid: '5', customer_id: a.id, customer_name: a.id, token: a.token });
      c.send({ method: 'join', room: 'r' });
    });
    c.on('join', (m) => { if (m.room === 'r') state.joined = true; });
    c.on('say_ack', (m) => { if (!m.code) state.acked.push(m.cid); });
    c.on('message', (m) => { if (m.room === 'r') state.shown.push({ id: String(m.id), content: m.content }); });
    c.connect();
    return state;
  });
}, { urls, agents });
await page.waitForFunction(() => window.agents.every((s) => s.joined), null, { timeout: 20000 });
await page.evaluate(() => {
  for (const s of window.agents) {
    s.saying = setInterval(() => {
      const cid = s.id + '-' + (++s.sent);
      s.client.say({ room: 'r', content: cid, cid: cid });
    }, 300);
  }
});
console.log('ready');

for await (const line of createInterface({ input: process.stdin })) {
  if (line === 'stop') {
    await page.evaluate(() => window.agents.forEach((s) => clearInterval(s.saying)));
    try {
      await page.waitForFunction(() => window.agents.every((s) => s.client.pending.size === 0), null, { timeout: 30000 });
      console.log('quiet');
    } catch (e) {
      const state = await page.evaluate(() => window.agents.map((s) => ({
        id: s.id, url: s.client.url, opens: s.client.opens, connected: s.client.connected, pending: [...s.client.pending.keys()],
      })));
      console.error('still unacknowledged after 30 s:', JSON.stringify(state));
      process.exit(1);
    }
  } else if (line === 'report') {
    const report = await page.evaluate(() => window.agents.map((s) => ({
      id: s.id, url: s.client.url, opens: s.client.opens, acked: s.acked, shown: s.shown,
    })));
    for (const r of report) console.log(JSON.stringify(r));
    break;
  }
}
await browser.close();
process.exit(0);

// Opens an HTML file in headless Chromium (Debian's `chromium`) over the DevTools protocol on a
// pipe (no npm packages), and prints as JSON what the browser drew: every SVG plot's points and
// bars with their data values and on-screen boxes, the tables' row counts, and every console
// error, uncaught exception and failed load. Optionally saves a full-page screenshot.
//   node scripts/browser_check.js PAGE.html [SCREENSHOT.png]
// Exit 0 with the JSON on stdout; 1 when the browser cannot be driven (message on stderr).
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const [page, screenshot] = process.argv.slice(2);
if (!page) {
  console.error('usage: node browser_check.js PAGE.html [SCREENSHOT.png]');
  process.exit(1);
}
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'sparq_chromium_'));
const browser = spawn(process.env.SPARQ_CHROMIUM || 'chromium',
  ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-extensions', '--hide-scrollbars',
   '--remote-debugging-pipe', `--user-data-dir=${profile}`, 'about:blank'],
  { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
let stderr = '';
browser.stderr.on('data', (d) => { stderr += d; });
const removeProfile = () => {
  try { fs.rmSync(profile, { recursive: true, force: true, maxRetries: 5 }); } catch (e) { /* a temp folder */ }
};
const fail = (msg) => {
  console.error(`browser_check: ${msg}`);
  try { browser.kill('SIGKILL'); } catch (e) { /* gone already */ }
  removeProfile();
  process.exit(1);
};
const timer = setTimeout(() => fail(`timed out; chromium said: ${stderr.slice(-400)}`), 60000);
browser.on('error', (e) => fail(`cannot start chromium: ${e.message}`));

// The protocol: JSON messages ending in NUL, commands on fd 3, answers and events on fd 4.
const out = browser.stdio[3], inp = browser.stdio[4];
let next = 1, buffer = '';
const pending = new Map(), listeners = [];
inp.on('data', (chunk) => {
  buffer += chunk.toString('utf8');
  for (let end; (end = buffer.indexOf('\0')) >= 0;) {
    const msg = JSON.parse(buffer.slice(0, end));
    buffer = buffer.slice(end + 1);
    if (msg.id && pending.has(msg.id)) {
      const { resolve, reject } = pending.get(msg.id);
      pending.delete(msg.id);
      msg.error ? reject(new Error(JSON.stringify(msg.error))) : resolve(msg.result);
    } else {
      for (const l of listeners) l(msg);
    }
  }
});
const send = (method, params = {}, sessionId) => new Promise((resolve, reject) => {
  const id = next++;
  pending.set(id, { resolve, reject });
  out.write(JSON.stringify({ id, method, params, sessionId }) + '\0');
});

const errors = [];
listeners.push((msg) => {
  const p = msg.params || {};
  if (msg.method === 'Runtime.exceptionThrown') errors.push(`exception: ${p.exceptionDetails.text} ${p.exceptionDetails.exception ? p.exceptionDetails.exception.description : ''}`);
  if (msg.method === 'Runtime.consoleAPICalled' && (p.type === 'error' || p.type === 'assert'))
    errors.push(`console.${p.type}: ${p.args.map((a) => a.value !== undefined ? a.value : a.description).join(' ')}`);
  if (msg.method === 'Log.entryAdded' && p.entry.level === 'error') errors.push(`log: ${p.entry.text} ${p.entry.url || ''}`);
  if (msg.method === 'Network.loadingFailed') errors.push(`load failed: ${p.errorText}`);
});

// What the page drew: each plot's circles and bars with their values and boxes (in page pixels).
const probe = `(() => {
  const box = (e) => { const r = e.getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height}; };
  const plots = [...document.querySelectorAll('svg.plot')].map((svg) => ({
    id: svg.dataset.plot,
    box: box(svg),
    series: [...svg.querySelectorAll('g.series')].map((g) => ({
      name: g.dataset.series,
      points: [...g.querySelectorAll('circle')].map((c) => ({x: Number(c.dataset.x), y: Number(c.dataset.y), box: box(c)})),
      line: !!g.querySelector('polyline'),
    })),
    bars: [...svg.querySelectorAll('rect.bar')].map((r) => ({label: r.dataset.label, value: Number(r.dataset.value), box: box(r)})),
  }));
  const tables = {};
  for (const t of document.querySelectorAll('table[data-table]')) tables[t.dataset.table] = t.rows.length - 1;
  return JSON.stringify({title: document.title, plots, tables});
})()`;

(async () => {
  const { targetInfos } = await send('Target.getTargets');
  const target = targetInfos.find((t) => t.type === 'page');
  if (!target) fail('no page target');
  const { sessionId } = await send('Target.attachToTarget', { targetId: target.targetId, flatten: true });
  for (const domain of ['Runtime', 'Log', 'Page', 'Network']) await send(`${domain}.enable`, {}, sessionId);
  await send('Emulation.setDeviceMetricsOverride', { width: 1300, height: 900, deviceScaleFactor: 1, mobile: false }, sessionId);
  const loaded = new Promise((resolve) => listeners.push((m) => { if (m.method === 'Page.loadEventFired') resolve(); }));
  const nav = await send('Page.navigate', { url: 'file://' + path.resolve(page) }, sessionId);
  if (nav.errorText) fail(`cannot open ${page}: ${nav.errorText}`);
  await loaded;
  const { result } = await send('Runtime.evaluate', { expression: probe, returnByValue: true }, sessionId);
  const report = JSON.parse(result.value);
  if (screenshot) {
    const metrics = await send('Page.getLayoutMetrics', {}, sessionId);
    const size = metrics.cssContentSize || metrics.contentSize;
    const shot = await send('Page.captureScreenshot', {
      format: 'png', captureBeyondViewport: true,
      clip: { x: 0, y: 0, width: Math.ceil(size.width), height: Math.ceil(size.height), scale: 1 },
    }, sessionId);
    fs.writeFileSync(screenshot, Buffer.from(shot.data, 'base64'));
  }
  await new Promise((r) => setTimeout(r, 100));  // late console messages
  report.errors = errors;
  process.stdout.write(JSON.stringify(report) + '\n');
  clearTimeout(timer);
  const exited = new Promise((resolve) => { browser.on('exit', resolve); setTimeout(resolve, 5000); });
  send('Browser.close').catch(() => {});
  await exited;
  try { browser.kill('SIGKILL'); } catch (e) { /* gone already */ }
  removeProfile();
  process.exit(0);
})().catch((e) => fail(e.message));

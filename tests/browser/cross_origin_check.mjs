// Headless Chromium plays a hostile web page against a vllm-batch server that has no API keys
// (run by tests/e2e/web.rs). Without keys the server trusts loopback clients, and the operator's
// browser is one: this script checks that trust does not extend to pages of other sites.
//
// 1. Cross-site request forgery: a page of another origin (served here on 127.0.0.1:<other port>)
//    posts a multipart upload to the API with `mode: 'no-cors'` (a "simple" request: no preflight,
//    the browser sends it and only hides the answer) and tries to read the file list.
// 2. DNS rebinding: Chromium resolves `attacker.example` to 127.0.0.1 (--host-resolver-rules), so
//    a page loaded from http://attacker.example:<API port>/ is same-origin with the API as far as
//    the browser knows; it reads and uploads with plain fetch() — only the server's Host check
//    stands in the way.
//
// Environment: BASE_URL (the API, http://127.0.0.1:PORT), CHROMIUM (default /usr/bin/chromium).
// Prints one JSON line `RESULT {...}` with what each attempt saw; the Rust test judges it and
// checks through the API that nothing was uploaded. Exit status 0 when the script ran.
import http from 'node:http';
import { launchChromium } from './chromium.mjs';

const BASE_URL = (process.env.BASE_URL || '').replace(/\/$/, '');
if (!BASE_URL) {
  console.error('cross_origin_check: BASE_URL is not set');
  process.exit(2);
}
const apiPort = new URL(BASE_URL).port;

// The attacker's page: it runs the forgery attempts as soon as it loads and publishes what it saw.
const attackerPage = (api) => `<!doctype html><meta charset="utf-8"><title>attacker</title><script>
window.results = (async () => {
  const out = {};
  const form = new FormData();
  form.append('purpose', 'batch');
  form.append('file', new Blob(['{"custom_id":"x","method":"POST","url":"/v1/chat/completions","body":{}}\\n']), 'evil.jsonl');
  try {
    const r = await fetch(${JSON.stringify(api)} + '/v1/files', { method: 'POST', body: form, mode: 'no-cors' });
    out.upload = 'sent (' + r.type + ')';
  } catch (e) { out.upload = 'error: ' + e; }
  try {
    const r = await fetch(${JSON.stringify(api)} + '/v1/files');
    out.read = 'status ' + r.status + ': ' + (await r.text()).slice(0, 200);
  } catch (e) { out.read = 'blocked: ' + e; }
  return out;
})();
</script>`;

const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/html' });
  res.end(attackerPage(BASE_URL));
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const attackerOrigin = `http://127.0.0.1:${server.address().port}`;

const browser = await launchChromium(['--host-resolver-rules=MAP attacker.example 127.0.0.1']);
const result = {};
try {
  const page = await browser.newPage();
  page.on('console', (m) => console.log(`cross_origin_check: page console: ${m.text()}`));

  // 1. The cross-site page.
  await page.goto(attackerOrigin);
  result.cross_site = await page.evaluate(() => window.results);

  // 2. The rebound name: any page the server serves at that name will do, so the server's own
  //    `/` (public) stands in for the attacker's copy; the script then runs in that origin.
  const rebound = `http://attacker.example:${apiPort}`;
  const landing = await page.goto(rebound + '/');
  result.rebinding_landing_status = landing ? landing.status() : null;
  result.rebinding = await page.evaluate(async () => {
    const out = {};
    const r = await fetch('/v1/files');
    out.read_status = r.status;
    out.read_body = (await r.text()).slice(0, 300);
    const form = new FormData();
    form.append('purpose', 'batch');
    form.append('file', new Blob(['{}\n']), 'evil.jsonl');
    const u = await fetch('/v1/files', { method: 'POST', body: form });
    out.upload_status = u.status;
    return out;
  });
} finally {
  await browser.close();
  server.close();
}
console.log('RESULT ' + JSON.stringify({ attacker_origin: attackerOrigin, ...result }));

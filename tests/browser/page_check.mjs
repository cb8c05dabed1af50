// Headless Chromium drives vllm-batch's web status page (run by tests/e2e/web.rs, which starts
// the server, a slow simulated vLLM, Prometheus and the batches). It loads `/`, watches the
// running batch's completed count grow, checks the system panel shows Prometheus's figures,
// sends an API key, opens the batch's detail view, saves its results so far, cancels it,
// downloads its output, opens a batch that failed validation, and writes screenshots to OUT_DIR.
//
// Environment: BASE_URL, BATCH_ID (a batch running for ~20 s), FAILED_BATCH_ID (optional: a
// batch that failed validation on line 2), EXPECT_PROMETHEUS=1 (optional), EXPECT_GPUS (optional:
// how many GPU cards the system panel shows; GPU 0 is tests/e2e/web.rs's H200), OUT_DIR, API_KEY
// (optional; default: a made-up key the server ignores until it enforces keys),
// CHROMIUM (default /usr/bin/chromium). Exit status 0 when every check passed.
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { launchChromium } from './chromium.mjs';

function need(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`page_check: ${name} is not set`);
    process.exit(2);
  }
  return value;
}

const BASE_URL = need('BASE_URL').replace(/\/$/, '');
const BATCH_ID = need('BATCH_ID');
const FAILED_BATCH_ID = process.env.FAILED_BATCH_ID || '';
const EXPECT_PROMETHEUS = process.env.EXPECT_PROMETHEUS === '1';
const EXPECT_GPUS = Number(process.env.EXPECT_GPUS || 0);
const OUT_DIR = need('OUT_DIR');
const API_KEY = process.env.API_KEY || 'page-check-key';
mkdirSync(OUT_DIR, { recursive: true });

const log = (message) => console.log(`page_check: ${message}`);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/// Polls `read` until `good(value)` holds; throws with the last value after `timeoutMs`.
async function until(what, read, good, timeoutMs = 45000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await read();
    if (good(last)) return last;
    if (Date.now() > deadline) throw new Error(`${what}: gave up; last value ${JSON.stringify(last)}`);
    await sleep(250);
  }
}

const browser = await launchChromium([]);
const context = await browser.newContext({ viewport: { width: 1360, height: 900 }, acceptDownloads: true });
const page = await context.newPage();
page.setDefaultTimeout(45000);
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(e.message));
page.on('console', (m) => {
  if (m.type() === 'error') pageErrors.push(`console: ${m.text()}`);
});

let failed = false;
try {
  await page.goto(`${BASE_URL}/`);

  // The batches table, with the running batch's progress advancing.
  const row = page.locator(`tr[data-batch-id="${BATCH_ID}"]`);
  await row.waitFor();
  const completed = async () => Number(await row.locator('.count-completed').getAttribute('data-value'));
  await until('the batch runs', () => row.locator('.batch-status').innerText(), (s) => s === 'in progress');
  const first = await completed();
  const second = await until('the completed count grows', completed, (n) => n > first, 15000);
  log(`completed count went from ${first} to ${second}`);
  const total = Number((await row.locator('.count-total').innerText()).replace(/\D/g, ''));
  if (second >= total) throw new Error(`the batch was done (${second}/${total}) before it could be cancelled`);

  // The system panel.
  const running = await until(
    'the system panel shows requests running',
    () => page.locator('#stat-running').innerText(),
    (t) => Number(t.replace(/,/g, '')) > 0,
  );
  const source = await page.locator('#system-source').innerText();
  log(`system panel: running ${running}, ${source}`);
  if (EXPECT_PROMETHEUS && source !== 'from Prometheus') throw new Error(`system panel source is "${source}"`);
  // Prometheus may have scraped the upstream before vllm-batch itself: give it a few scrapes.
  for (const id of ['#stat-waiting', '#stat-queue', '#stat-tokens']) {
    await until(`${id} shows a number`, () => page.locator(id).innerText(), (t) => /^[\d.,]+$/.test(t), 15000);
  }
  if (EXPECT_GPUS > 0) {
    const cards = page.locator('#gpus .gpu');
    await until('the system panel shows the GPUs', () => cards.count(), (n) => n === EXPECT_GPUS);
    const gpu0 = await cards.first().innerText();
    for (const needle of ['NVIDIA H200', '67 °C', '113.0 / 140.4 GiB', '93 %']) {
      if (!gpu0.includes(needle)) throw new Error(`GPU 0 lacks ${JSON.stringify(needle)}: ${gpu0}`);
    }
    log(`GPU panel: ${gpu0.replace(/\s+/g, ' ')}`);
  }
  await page.screenshot({ path: path.join(OUT_DIR, 'overview.png'), fullPage: true });

  // An API key typed once is kept for the session and sent on every request.
  await page.fill('#api-key', API_KEY);
  const withKey = page.waitForRequest(
    (r) => r.url().includes('/v1/batches') && r.headers().authorization === `Bearer ${API_KEY}`,
  );
  await page.click('#key-form button[type=submit]');
  await withKey;
  const stored = await page.evaluate(() => sessionStorage.getItem('vllm-batch.api-key'));
  if (stored !== API_KEY) throw new Error(`sessionStorage holds ${JSON.stringify(stored)}`);
  log('the API key is sent as a bearer token');

  // The detail view: server strings are text, never markup.
  await row.locator('a').click();
  await page.locator('#detail-status').waitFor();
  const detail = page.locator('#detail-view');
  const text = await detail.innerText();
  for (const needle of [BATCH_ID, '<b>web</b> check', '<img src=x onerror="window.__xss=1">']) {
    if (!text.includes(needle)) throw new Error(`the detail view lacks ${JSON.stringify(needle)}`);
  }
  for (const heading of ['timeline', 'requests', 'usage', 'files', 'metadata']) {
    if (!text.toLowerCase().includes(heading)) throw new Error(`the detail view lacks its ${heading} card`);
  }
  if ((await detail.locator('b, img').count()) > 0) throw new Error('metadata was rendered as markup');
  if (await page.evaluate(() => window.__xss)) throw new Error('metadata ran as script');

  // Results so far, while the batch runs: the output lines that exist, whole and distinct.
  const soFarButton = page.locator('#results-so-far');
  await soFarButton.waitFor();
  const [partial] = await Promise.all([page.waitForEvent('download'), soFarButton.click()]);
  const partialPath = path.join(OUT_DIR, 'output-so-far.jsonl');
  await partial.saveAs(partialPath);
  const partialText = readFileSync(partialPath, 'utf8');
  if (partialText && !partialText.endsWith('\n')) throw new Error('results so far end mid-line');
  const partialIds = partialText.split('\n').filter(Boolean).map((l) => JSON.parse(l).custom_id);
  if (partialIds.length === 0) throw new Error('no results so far while the batch runs');
  if (new Set(partialIds).size !== partialIds.length) throw new Error('results so far repeat a line');
  log(`results so far: ${partial.suggestedFilename()}: ${partialIds.length} lines`);

  // Cancel: the button asks for a second click.
  const cancel = page.locator('#cancel-button');
  await cancel.click();
  await until('the cancel button asks to confirm', () => cancel.innerText(), (t) => /again/i.test(t), 5000);
  await cancel.click();
  const status = await until(
    'the detail view shows the cancellation',
    () => page.locator('#detail-status').innerText(),
    (s) => s === 'cancelling' || s === 'cancelled',
  );
  log(`status after cancel: ${status}`);
  await until('the batch ends cancelled', () => page.locator('#detail-status').innerText(), (s) => s === 'cancelled', 30000);

  // Download the output file through fetch (it carries the key).
  const outputButton = page.locator('[data-file="output"] button.download');
  await outputButton.waitFor();
  const [download] = await Promise.all([page.waitForEvent('download'), outputButton.click()]);
  const saved = path.join(OUT_DIR, 'output.jsonl');
  await download.saveAs(saved);
  const lines = readFileSync(saved, 'utf8').split('\n').filter(Boolean);
  const shown = Number(await page.locator('.detail-progress .count-completed').getAttribute('data-value'));
  if (lines.length !== shown) throw new Error(`downloaded ${lines.length} output lines, the page shows ${shown} completed`);
  for (const line of lines) {
    if (!JSON.parse(line).custom_id) throw new Error(`output line without custom_id: ${line}`);
  }
  log(`downloaded ${download.suggestedFilename()}: ${lines.length} lines`);
  await page.screenshot({ path: path.join(OUT_DIR, 'detail-cancelled.png'), fullPage: true });

  // The cancelled batch's unsent lines become a new batch: the page opens it, retry_of shown.
  await page.locator('#retry-button').click();
  const retried = await until(
    'the page opens the retry batch',
    () => page.locator('.detail-title h2').innerText(),
    (t) => t.startsWith('batch_') && t !== BATCH_ID,
    15000,
  );
  const detailText = await page.locator('#detail-view').innerText();
  if (!detailText.includes('retry_of') || !detailText.includes(BATCH_ID)) {
    throw new Error(`the retry batch ${retried} does not show retry_of ${BATCH_ID}: ${detailText}`);
  }
  log(`retried the cancelled batch's lines as ${retried}`);

  // A batch that failed validation shows its errors with line numbers.
  if (FAILED_BATCH_ID) {
    await page.goto(`${BASE_URL}/#/batches/${encodeURIComponent(FAILED_BATCH_ID)}`);
    const errors = page.locator('#validation-errors');
    await errors.waitFor();
    const errorsText = await errors.innerText();
    if (!errorsText.includes('line 2') || !errorsText.includes('invalid_json_line')) {
      throw new Error(`validation errors shown as: ${errorsText}`);
    }
    if ((await page.locator('#detail-status').innerText()) !== 'failed') throw new Error('the failed batch is not shown failed');
    log('validation errors show their line numbers');
    await page.screenshot({ path: path.join(OUT_DIR, 'detail-failed.png'), fullPage: true });
  }

  // Back to the table: the cancelled batch is shown so.
  await page.click('text=← All batches');
  await until('the table shows the cancellation', () => row.locator('.batch-status').innerText(), (s) => s === 'cancelled');
  await page.screenshot({ path: path.join(OUT_DIR, 'overview-after.png'), fullPage: true });
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.screenshot({ path: path.join(OUT_DIR, 'overview-dark.png'), fullPage: true });
  await page.setViewportSize({ width: 420, height: 900 });
  await page.screenshot({ path: path.join(OUT_DIR, 'overview-narrow.png'), fullPage: true });

  if (pageErrors.length > 0) throw new Error(`errors in the page:\n${pageErrors.join('\n')}`);
  log('all checks passed');
} catch (e) {
  failed = true;
  console.error(`page_check: FAILED: ${e.stack || e}`);
  if (pageErrors.length > 0) console.error(`page errors:\n${pageErrors.join('\n')}`);
  await page.screenshot({ path: path.join(OUT_DIR, 'failure.png'), fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);

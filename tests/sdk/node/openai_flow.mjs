// OpenAI SDK conformance, Node edition: drives vllm-batch's Files and Batches API with the
// official `openai` npm package (pinned in package.json / package-lock.json), unmodified, the way
// a user would. It mirrors tests/sdk/openai_flow.py step for step.
//
// Environment: OPENAI_BASE_URL (e.g. http://127.0.0.1:8080/v1), OPENAI_API_KEY (any string),
// SIM_MODEL (default "sim-model"; the upstream must echo chat prompts as "echo: <prompt>").
//
// Every field the script reads is asserted, including that the server actually sent it (the SDK
// hands back the parsed JSON without validation, so a missing field would otherwise pass as
// undefined). Prints one line per check and closes with "N passed, M failed"; exits non-zero on any
// failure. Install the package first: `bash tests/sdk/node/install.sh`.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isDeepStrictEqual, inspect } from 'node:util';

import OpenAI, { toFile } from 'openai';
import { VERSION } from 'openai/version';

const MODEL = process.env.SIM_MODEL || 'sim-model';
const POLL_TIMEOUT_MS = 120_000;
const TERMINAL = new Set(['completed', 'failed', 'expired', 'cancelled']);
const BATCH_STAMPS = [
  'in_progress_at',
  'finalizing_at',
  'completed_at',
  'failed_at',
  'expired_at',
  'cancelling_at',
  'cancelled_at',
];

let passed = 0;
let failed = 0;

class StepFailed extends Error {}

const show = (v) => (typeof v === 'string' ? v : inspect(v, { depth: 4, breakLength: Infinity, maxArrayLength: 20 }));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const nowS = () => Date.now() / 1000;

/** Records one check; a failed check aborts the current step. */
function check(name, ok, detail) {
  if (ok) {
    passed += 1;
    console.log(`  ok    ${name}`);
  } else {
    failed += 1;
    console.log(`  FAIL  ${name}${detail === undefined ? '' : ': ' + show(detail)}`);
    throw new StepFailed(name);
  }
}

const KINDS = {
  int: (v) => Number.isInteger(v),
  str: (v) => typeof v === 'string',
  bool: (v) => typeof v === 'boolean',
  object: (v) => v !== null && typeof v === 'object' && !Array.isArray(v),
  array: (v) => Array.isArray(v),
};

/** Asserts that the server sent `name` on `obj` with a value of kind `kind`; returns it. */
function field(obj, name, kind, label) {
  const sent = obj !== null && typeof obj === 'object' && Object.hasOwn(obj, name);
  const value = sent ? obj[name] : undefined;
  check(`${label} present and ${kind}`, sent && KINDS[kind](value), `sent=${sent} value=${show(value)}`);
  return value;
}

/** Asserts that `name` is null or absent on `obj`. */
function nullField(obj, name, label) {
  const value = obj[name];
  check(`${label} is null`, value === null || value === undefined, value);
}

function recentStamp(obj, name, label) {
  const value = field(obj, name, 'int', label);
  const now = nowS();
  check(`${label} is a recent unix time`, now - 3600 < value && value <= now + 60, value);
  return value;
}

/** A batch input of `n` chat requests; returns [jsonl Buffer, Map custom_id -> prompt]. */
function chatLines(n, prefix) {
  const prompts = new Map();
  const lines = [];
  for (let i = 0; i < n; i++) {
    const customId = `${prefix}-${i}`;
    const prompt = `${prefix} prompt ${i}`;
    prompts.set(customId, prompt);
    const body = { model: MODEL, messages: [{ role: 'user', content: prompt }], max_tokens: 8 };
    lines.push(JSON.stringify({ custom_id: customId, method: 'POST', url: '/v1/chat/completions', body }));
  }
  return [Buffer.from(lines.join('\n') + '\n'), prompts];
}

function checkFile(f, label, { fileId, size, filename, purpose } = {}) {
  const fid = field(f, 'id', 'str', `${label}.id`);
  check(`${label}.id starts with 'file-'`, fid.startsWith('file-'), fid);
  if (fileId !== undefined) check(`${label}.id is ${fileId}`, fid === fileId, fid);
  check(`${label}.object is 'file'`, field(f, 'object', 'str', `${label}.object`) === 'file', f.object);
  const n = field(f, 'bytes', 'int', `${label}.bytes`);
  if (size !== undefined) check(`${label}.bytes == ${size}`, n === size, n);
  const name = field(f, 'filename', 'str', `${label}.filename`);
  if (filename !== undefined) check(`${label}.filename == '${filename}'`, name === filename, name);
  const p = field(f, 'purpose', 'str', `${label}.purpose`);
  if (purpose !== undefined) check(`${label}.purpose == '${purpose}'`, p === purpose, p);
  recentStamp(f, 'created_at', `${label}.created_at`);
  const status = field(f, 'status', 'str', `${label}.status`);
  check(`${label}.status is one of the SDK's values`, ['uploaded', 'processed', 'error'].includes(status), status);
  return fid;
}

/** Uploads in-memory bytes through the SDK's `toFile` helper. */
async function upload(client, data, filename) {
  return client.files.create({ file: await toFile(data, filename, { type: 'application/jsonl' }), purpose: 'batch' });
}

function createBatch(client, fileId, metadata) {
  const body = { input_file_id: fileId, endpoint: '/v1/chat/completions', completion_window: '24h' };
  if (metadata !== undefined) body.metadata = metadata;
  return client.batches.create(body);
}

async function waitTerminal(client, batchId, label) {
  const deadline = Date.now() + POLL_TIMEOUT_MS;
  const seen = [];
  for (;;) {
    const b = await client.batches.retrieve(batchId);
    if (seen.length === 0 || seen[seen.length - 1] !== b.status) seen.push(b.status);
    if (TERMINAL.has(b.status)) {
      console.log(`  ..    ${label} statuses seen while polling: ${seen.join(' -> ')}`);
      return b;
    }
    if (Date.now() > deadline) {
      check(`${label} reaches a terminal status within ${POLL_TIMEOUT_MS / 1000}s`, false, `last status ${b.status}`);
    }
    await sleep(200);
  }
}

function checkUsage(b, label) {
  const usage = field(b, 'usage', 'object', `${label}.usage`);
  const i = field(usage, 'input_tokens', 'int', `${label}.usage.input_tokens`);
  const o = field(usage, 'output_tokens', 'int', `${label}.usage.output_tokens`);
  const t = field(usage, 'total_tokens', 'int', `${label}.usage.total_tokens`);
  check(`${label}.usage.total_tokens == input + output`, t === i + o, [i, o, t]);
  const itd = field(usage, 'input_tokens_details', 'object', `${label}.usage.input_tokens_details`);
  field(itd, 'cached_tokens', 'int', `${label}.usage.input_tokens_details.cached_tokens`);
  const otd = field(usage, 'output_tokens_details', 'object', `${label}.usage.output_tokens_details`);
  field(otd, 'reasoning_tokens', 'int', `${label}.usage.output_tokens_details.reasoning_tokens`);
  return [i, o];
}

function checkCounts(b, label, total, completed, failedN) {
  const counts = field(b, 'request_counts', 'object', `${label}.request_counts`);
  for (const [name, want] of [
    ['total', total],
    ['completed', completed],
    ['failed', failedN],
  ]) {
    const got = field(counts, name, 'int', `${label}.request_counts.${name}`);
    check(`${label}.request_counts.${name} == ${want}`, got === want, got);
  }
}

/** Downloads a file with files.content (a fetch Response) and parses it as JSONL. */
async function readJsonl(client, fileId, label) {
  const res = await client.files.content(fileId);
  check(`${label} files.content responds 200`, res.status === 200, res.status);
  const bytes = Buffer.from(await res.arrayBuffer());
  const meta = await client.files.retrieve(fileId);
  check(`${label} file size matches its bytes field`, meta.bytes === bytes.length, [meta.bytes, bytes.length]);
  const lines = bytes
    .toString('utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l));
  return [lines, meta];
}

function checkOutputLine(line, prompts, label) {
  const cid = line.custom_id;
  check(`${label} line custom_id '${cid}' is one of the inputs`, prompts.has(cid), cid);
  check(`${label} ${cid} id starts with 'batch_req_'`, String(line.id ?? '').startsWith('batch_req_'), line.id);
  check(`${label} ${cid} error is null`, Object.hasOwn(line, 'error') && line.error === null, line.error);
  const resp = line.response ?? {};
  check(`${label} ${cid} response.status_code == 200`, resp.status_code === 200, resp.status_code);
  check(`${label} ${cid} response.request_id is a string`, typeof resp.request_id === 'string', resp.request_id);
  const body = resp.body ?? {};
  const content = body.choices?.[0]?.message?.content;
  const want = 'echo: ' + prompts.get(cid);
  check(`${label} ${cid} content == '${want}'`, content === want, content);
  const usage = body.usage ?? {};
  check(
    `${label} ${cid} body.usage has integer token counts`,
    Number.isInteger(usage.prompt_tokens) && Number.isInteger(usage.completion_tokens),
    usage,
  );
  return [cid, usage.prompt_tokens, usage.completion_tokens];
}

const sameSet = (a, b) => a.size === b.size && [...a].every((x) => b.has(x));

class Flow {
  constructor(client) {
    this.client = client;
    this.inputId = null;
    [this.inputData, this.prompts] = chatLines(5, 'sdk');
    this.batchId = null;
    this.batch = null;
  }

  // 1. Files: create, retrieve, list.
  async filesCreate() {
    const f = await upload(this.client, this.inputData, 'sdk-input.jsonl');
    this.inputId = checkFile(f, 'files.create', {
      size: this.inputData.length,
      filename: 'sdk-input.jsonl',
      purpose: 'batch',
    });
  }

  async filesCreateFromStream() {
    // The other way the SDK's README uploads: a fs.ReadStream, whose path names the file.
    const [data] = chatLines(2, 'stream');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vllm-batch-sdk-'));
    const file = path.join(dir, 'stream-input.jsonl');
    fs.writeFileSync(file, data);
    try {
      const f = await this.client.files.create({ file: fs.createReadStream(file), purpose: 'batch' });
      checkFile(f, 'files.create(fs.ReadStream)', { size: data.length, filename: 'stream-input.jsonl', purpose: 'batch' });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  async filesRetrieve() {
    const f = await this.client.files.retrieve(this.inputId);
    checkFile(f, 'files.retrieve', {
      fileId: this.inputId,
      size: this.inputData.length,
      filename: 'sdk-input.jsonl',
      purpose: 'batch',
    });
  }

  async filesList() {
    const page = await this.client.files.list({ purpose: 'batch' });
    const body = page.body ?? {};
    check("files.list(purpose=batch).object is 'list'", body.object === 'list', body.object);
    check('files.list(purpose=batch).data is an array', Array.isArray(page.data), page.data);
    const ids = page.data.map((f) => f.id);
    check('files.list(purpose=batch) contains the upload', ids.includes(this.inputId), ids);
    const purposes = new Set(page.data.map((f) => f.purpose));
    check('files.list(purpose=batch) holds only batch files', sameSet(purposes, new Set(['batch'])), purposes);
    const other = await this.client.files.list({ purpose: 'batch_output' });
    check(
      'files.list(purpose=batch_output) omits the upload',
      !other.data.map((f) => f.id).includes(this.inputId),
      other.data.map((f) => f.id),
    );
  }

  // 2. Batches: create, poll, results.
  async batchesCreate() {
    const b = await createBatch(this.client, this.inputId, { suite: 'sdk' });
    this.batchId = field(b, 'id', 'str', 'batches.create.id');
    check("batches.create.id starts with 'batch_'", this.batchId.startsWith('batch_'), this.batchId);
    check("batches.create.object is 'batch'", field(b, 'object', 'str', 'batches.create.object') === 'batch', b.object);
    check(
      "batches.create.status is 'validating'",
      field(b, 'status', 'str', 'batches.create.status') === 'validating',
      b.status,
    );
    check(
      'batches.create.input_file_id echoed',
      field(b, 'input_file_id', 'str', 'batches.create.input_file_id') === this.inputId,
      b.input_file_id,
    );
    check(
      'batches.create.endpoint echoed',
      field(b, 'endpoint', 'str', 'batches.create.endpoint') === '/v1/chat/completions',
      b.endpoint,
    );
    check(
      'batches.create.completion_window echoed',
      field(b, 'completion_window', 'str', 'batches.create.completion_window') === '24h',
      b.completion_window,
    );
    check(
      'batches.create.metadata echoed',
      isDeepStrictEqual(field(b, 'metadata', 'object', 'batches.create.metadata'), { suite: 'sdk' }),
      b.metadata,
    );
    const created = recentStamp(b, 'created_at', 'batches.create.created_at');
    const expires = field(b, 'expires_at', 'int', 'batches.create.expires_at');
    check('batches.create.expires_at == created_at + 24h', expires === created + 86400, [created, expires]);
    for (const stamp of BATCH_STAMPS) nullField(b, stamp, `batches.create.${stamp}`);
    nullField(b, 'output_file_id', 'batches.create.output_file_id');
    nullField(b, 'error_file_id', 'batches.create.error_file_id');
  }

  async batchesPoll() {
    const b = await waitTerminal(this.client, this.batchId, 'batch');
    this.batch = b;
    check("batch.status is 'completed'", b.status === 'completed', `${b.status}; errors=${show(b.errors)}`);
    check('batch.id unchanged', b.id === this.batchId, b.id);
    check('batch.metadata still echoed', isDeepStrictEqual(b.metadata, { suite: 'sdk' }), b.metadata);
    check("batch.model is the input's model", field(b, 'model', 'str', 'batch.model') === MODEL, b.model);
    checkCounts(b, 'batch', this.prompts.size, this.prompts.size, 0);
    const created = field(b, 'created_at', 'int', 'batch.created_at');
    const tProg = recentStamp(b, 'in_progress_at', 'batch.in_progress_at');
    const tFin = recentStamp(b, 'finalizing_at', 'batch.finalizing_at');
    const tDone = recentStamp(b, 'completed_at', 'batch.completed_at');
    check(
      'created_at <= in_progress_at <= finalizing_at <= completed_at',
      created <= tProg && tProg <= tFin && tFin <= tDone,
      [created, tProg, tFin, tDone],
    );
    for (const stamp of ['failed_at', 'expired_at', 'cancelling_at', 'cancelled_at']) {
      nullField(b, stamp, `batch.${stamp}`);
    }
    const [i, o] = checkUsage(b, 'batch');
    check('batch.usage counts tokens', i > 0 && o > 0, [i, o]);
    const out = field(b, 'output_file_id', 'str', 'batch.output_file_id');
    check("batch.output_file_id starts with 'file-'", out.startsWith('file-'), out);
    nullField(b, 'error_file_id', 'batch.error_file_id');
    check('batch.errors is null', b.errors === null || b.errors === undefined, b.errors);
  }

  async batchOutput() {
    const [lines, meta] = await readJsonl(this.client, this.batch.output_file_id, 'output');
    check("output file purpose is 'batch_output'", meta.purpose === 'batch_output', meta.purpose);
    const outputs = await this.client.files.list({ purpose: 'batch_output' });
    check(
      'output file listed under purpose=batch_output',
      outputs.data.some((f) => f.id === meta.id),
      outputs.data.map((f) => f.id),
    );
    check(`output has ${this.prompts.size} lines`, lines.length === this.prompts.size, lines.length);
    const seen = [];
    let usageIn = 0;
    let usageOut = 0;
    for (const line of lines) {
      const [cid, pi, po] = checkOutputLine(line, this.prompts, 'output');
      seen.push(cid);
      usageIn += pi;
      usageOut += po;
    }
    check(
      'every custom_id appears exactly once',
      isDeepStrictEqual([...seen].sort(), [...this.prompts.keys()].sort()),
      [...seen].sort(),
    );
    const u = this.batch.usage;
    check(
      "batch.usage sums the output lines' usage",
      u.input_tokens === usageIn && u.output_tokens === usageOut,
      [
        [u.input_tokens, u.output_tokens],
        [usageIn, usageOut],
      ],
    );
  }

  // 2b. A batch of OpenAI Responses API requests (`/v1/responses`).
  async responsesBatch() {
    const prompts = new Map([0, 1, 2].map((i) => [`resp-${i}`, `responses prompt ${i}`]));
    const lines = [...prompts].map(([cid, p]) =>
      JSON.stringify({
        custom_id: cid,
        method: 'POST',
        url: '/v1/responses',
        body: { model: MODEL, input: [{ role: 'user', content: p }], max_output_tokens: 6 },
      }),
    );
    const fid = (await upload(this.client, Buffer.from(lines.join('\n') + '\n'), 'responses.jsonl')).id;
    let b = await this.client.batches.create({ input_file_id: fid, endpoint: '/v1/responses', completion_window: '24h' });
    check("batches.create({endpoint: '/v1/responses'}) echoes it", b.endpoint === '/v1/responses', b.endpoint);
    b = await waitTerminal(this.client, b.id, 'responses batch');
    check('responses batch completed', b.status === 'completed', `${b.status}; errors=${show(b.errors)}`);
    checkCounts(b, 'responses batch', 3, 3, 0);
    const [out] = await readJsonl(this.client, b.output_file_id, 'responses output');
    check('responses output has 3 lines', out.length === 3, out.length);
    let [usageIn, usageOut] = [0, 0];
    for (const line of out) {
      const cid = line.custom_id;
      check(`${cid} is one of the input's custom_ids`, prompts.has(cid), cid);
      const body = line.response?.body ?? {};
      check(`${cid} body.object is 'response'`, body.object === 'response', body.object);
      const text = body.output?.[0]?.content?.[0]?.text;
      check(`${cid} output text echoes its prompt`, text === 'echo: ' + prompts.get(cid), text);
      const u = body.usage ?? {};
      check(`${cid} usage in the Responses API's names`, u.input_tokens > 0 && u.output_tokens > 0, u);
      usageIn += u.input_tokens;
      usageOut += u.output_tokens;
    }
    const [i, o] = checkUsage(b, 'responses batch');
    check("responses batch.usage sums the answers' input/output tokens", i === usageIn && o === usageOut, [
      [i, o],
      [usageIn, usageOut],
    ]);
  }

  // 3. Listing batches with cursor pagination.
  async batchesList() {
    const [data] = chatLines(1, 'page');
    const fid = (await upload(this.client, data, 'page.jsonl')).id;
    const created = [];
    for (let n = 0; n < 3; n++) created.push((await createBatch(this.client, fid)).id);
    console.log(`  ..    created ${created.join(', ')}`);
    const first = await this.client.batches.list({ limit: 1 });
    check('batches.list({limit: 1}).data has one batch', first.data.length === 1, first.data.length);
    check('batches.list({limit: 1}).has_more is true', first.has_more === true, first.has_more);
    check('batches.list({limit: 1}).body.has_more sent', first.body?.has_more === true, first.body?.has_more);
    check(
      'batches.list({limit: 1}) starts with the newest batch',
      first.data[0].id === created[created.length - 1],
      first.data[0].id,
    );
    check("batches.list items are batch objects", first.data[0].object === 'batch', first.data[0].object);
    check('batches.list({limit: 1}).hasNextPage() is true', first.hasNextPage() === true);
    // Follow the cursor by hand: after = last id of the page, until has_more is false.
    const manual = [first.data[0].id];
    let page = first;
    while (page.has_more) {
      check(`page ${manual.length} reports a next page`, page.hasNextPage());
      const after = page.data[page.data.length - 1].id;
      page = await this.client.batches.list({ limit: 1, after });
      check(`page after ${after} has one batch`, page.data.length === 1, page.data.length);
      check(`page after ${after} has_more is a bool`, typeof page.body?.has_more === 'boolean', page.body?.has_more);
      manual.push(page.data[0].id);
      if (manual.length > 1000) check('manual paging ends', false, 'over 1000 pages');
    }
    check('the last page reports no next page', !page.hasNextPage());
    check('manual paging visits every batch once', manual.length === new Set(manual).size, manual);
    const want = [...created].reverse().concat([this.batchId]);
    check(
      'manual paging visits the created batches, newest first',
      isDeepStrictEqual(
        manual.filter((id) => want.includes(id)),
        want,
      ),
      manual,
    );
    // getNextPage() from the SDK's page object.
    const second = await first.getNextPage();
    check("first page's getNextPage() gives the second batch", second.data[0]?.id === manual[1], second.data[0]?.id);
    // Auto-pagination across all pages with for await.
    const auto = [];
    for await (const b of this.client.batches.list({ limit: 1 })) {
      auto.push(b.id);
      if (auto.length > 1000) check('auto-pagination ends', false, 'over 1000 items');
    }
    check('auto-pagination visits the same batches as manual paging', isDeepStrictEqual(auto, manual), [auto, manual]);
    check(
      'auto-pagination visits every created batch',
      want.every((id) => auto.includes(id)),
      auto,
    );
    for (const bid of created) {
      const b = await waitTerminal(this.client, bid, bid);
      check(`${bid} completed`, b.status === 'completed', b.status);
    }
  }

  // 4. Cancelling a running batch.
  async batchesCancel() {
    const [data, prompts] = chatLines(3000, 'cancel');
    const fid = (await upload(this.client, data, 'cancel.jsonl')).id;
    let b = await createBatch(this.client, fid);
    // Cancel once requests are flowing, so the cancel has to stop a running batch.
    const deadline = Date.now() + POLL_TIMEOUT_MS;
    while (b.status === 'validating' && Date.now() < deadline) {
      await sleep(20);
      b = await this.client.batches.retrieve(b.id);
    }
    check('3000-line batch is in_progress before the cancel', b.status === 'in_progress', b.status);
    const c = await this.client.batches.cancel(b.id);
    check('batches.cancel returns the batch', c.id === b.id, c.id);
    check(
      "batches.cancel.status is 'cancelling' or 'cancelled'",
      c.status === 'cancelling' || c.status === 'cancelled',
      c.status,
    );
    recentStamp(c, 'cancelling_at', 'batches.cancel.cancelling_at');
    b = await waitTerminal(this.client, b.id, 'cancelled batch');
    check("cancelled batch status is 'cancelled'", b.status === 'cancelled', b.status);
    const tCing = recentStamp(b, 'cancelling_at', 'cancelled batch.cancelling_at');
    const tCd = recentStamp(b, 'cancelled_at', 'cancelled batch.cancelled_at');
    check('cancelling_at <= cancelled_at', tCing <= tCd, [tCing, tCd]);
    for (const stamp of ['completed_at', 'failed_at', 'expired_at']) nullField(b, stamp, `cancelled batch.${stamp}`);
    let outLines = [];
    if (b.output_file_id !== null && b.output_file_id !== undefined) {
      [outLines] = await readJsonl(this.client, b.output_file_id, 'cancelled output');
    }
    const errId = field(b, 'error_file_id', 'str', 'cancelled batch.error_file_id');
    const [errLines] = await readJsonl(this.client, errId, 'cancelled errors');
    console.log(`  ..    ${outLines.length} sent before the cancel, ${errLines.length} cancelled`);
    checkCounts(b, 'cancelled batch', 3000, outLines.length, errLines.length);
    checkUsage(b, 'cancelled batch');
    const seen = outLines.concat(errLines).map((l) => l.custom_id);
    const seenSet = new Set(seen);
    check(
      'output + error files hold every custom_id exactly once',
      seen.length === 3000 && sameSet(seenSet, new Set(prompts.keys())),
      [seen.length, seenSet.size],
    );
    for (const line of outLines) {
      const cid = line.custom_id;
      const content = line.response?.body?.choices?.[0]?.message?.content;
      if (line.error !== null || content !== 'echo: ' + prompts.get(cid)) {
        check(`output line ${cid} is the echo of its prompt`, false, line);
      }
    }
    check(`all ${outLines.length} output lines are echoes of their own prompts`, true);
    const codes = {};
    for (const line of errLines) {
      const code = line.error?.code;
      codes[code] = (codes[code] ?? 0) + 1;
      if (!String(line.id ?? '').startsWith('batch_req_') || !line.error?.message) {
        check(`error line ${line.custom_id} has id and message`, false, line);
      }
      if (line.response !== null) check(`error line ${line.custom_id} has a null response`, false, line);
    }
    check('cancel stopped some requests', errLines.length > 0, errLines.length);
    check(
      "every error line has code 'batch_cancelled'",
      isDeepStrictEqual(Object.keys(codes), ['batch_cancelled']),
      codes,
    );
  }

  // 5. Errors surface as the SDK's exception types.
  async errors() {
    let err = null;
    try {
      await this.client.batches.create({
        input_file_id: this.inputId,
        endpoint: '/v1/images',
        completion_window: '24h',
      });
    } catch (e) {
      err = e;
    }
    check('endpoint /v1/images throws OpenAI.BadRequestError', err instanceof OpenAI.BadRequestError, err ?? 'no error');
    check('BadRequestError is an OpenAI.APIError', err instanceof OpenAI.APIError);
    check('BadRequestError.status == 400', err.status === 400, err.status);
    check("BadRequestError.type is 'invalid_request_error'", err.type === 'invalid_request_error', err.type);
    check("BadRequestError.param is 'endpoint'", err.param === 'endpoint', err.param);
    check(
      'BadRequestError.error.message is not empty',
      typeof err.error?.message === 'string' && err.error.message !== '',
      err.error,
    );
    check('BadRequestError.message carries the server message', err.message.includes(err.error.message), err.message);

    err = null;
    try {
      await this.client.batches.retrieve('batch_doesnotexist');
    } catch (e) {
      err = e;
    }
    check('unknown batch throws OpenAI.NotFoundError', err instanceof OpenAI.NotFoundError, err ?? 'no error');
    check('NotFoundError.status == 404', err.status === 404, err.status);
  }

  // 6. Deleting a file.
  async filesDelete() {
    const d = await this.client.files.delete(this.inputId);
    check('files.delete.deleted is true', field(d, 'deleted', 'bool', 'files.delete.deleted') === true, d.deleted);
    check('files.delete.id is the file', field(d, 'id', 'str', 'files.delete.id') === this.inputId, d.id);
    check("files.delete.object is 'file'", field(d, 'object', 'str', 'files.delete.object') === 'file', d.object);
    let err = null;
    try {
      await this.client.files.retrieve(this.inputId);
    } catch (e) {
      err = e;
    }
    check(
      'files.retrieve of a deleted file throws OpenAI.NotFoundError',
      err instanceof OpenAI.NotFoundError && err.status === 404,
      err ?? 'no error',
    );
    const ids = (await this.client.files.list({ purpose: 'batch' })).data.map((f) => f.id);
    check('files.list no longer shows the deleted file', !ids.includes(this.inputId), ids);
  }
}

async function main() {
  const baseURL = process.env.OPENAI_BASE_URL;
  if (!baseURL) {
    console.error('OPENAI_BASE_URL is not set (e.g. http://127.0.0.1:8080/v1)');
    return 2;
  }
  console.log(`openai (node) ${VERSION} on node ${process.version} against ${baseURL}, model ${MODEL}`);
  // No SDK retries: a 5xx or 429 must show up here, not be papered over.
  const client = new OpenAI({
    baseURL,
    apiKey: process.env.OPENAI_API_KEY || 'sk-test',
    maxRetries: 0,
    timeout: 60_000,
  });
  const flow = new Flow(client);
  const steps = [
    ['files.create', () => flow.filesCreate()],
    ['files.create from a fs.ReadStream', () => flow.filesCreateFromStream()],
    ['files.retrieve', () => flow.filesRetrieve()],
    ['files.list', () => flow.filesList()],
    ['batches.create', () => flow.batchesCreate()],
    ['batches.retrieve until terminal', () => flow.batchesPoll()],
    ['files.content of the output', () => flow.batchOutput()],
    ['a /v1/responses batch', () => flow.responsesBatch()],
    ['batches.list pagination', () => flow.batchesList()],
    ['batches.cancel', () => flow.batchesCancel()],
    ['error types', () => flow.errors()],
    ['files.delete', () => flow.filesDelete()],
  ];
  for (const [name, step] of steps) {
    console.log(`== ${name}`);
    try {
      await step();
    } catch (e) {
      if (!(e instanceof StepFailed)) {
        failed += 1;
        console.log(`  FAIL  ${name} threw:`);
        console.log(e?.stack ?? show(e));
        if (e instanceof OpenAI.APIError) console.log(`  ..    status=${e.status} error=${show(e.error)}`);
        if (e?.cause) console.log(`  ..    cause: ${e.cause?.stack ?? show(e.cause)}`);
      }
      break;
    }
  }
  console.log(`${passed} passed, ${failed} failed`);
  return failed ? 1 : 0;
}

process.exitCode = await main();

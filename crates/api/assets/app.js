// vllm-batch's web status page: the batches table, a batch's detail view (with cancel,
// downloads, and a running batch's results so far) and the system panel, refreshed every two
// seconds. Served at /assets/app.js, embedded in the binary by crates/api/src/web.rs; plain
// JavaScript, no framework, no build.
//
// Everything the server sends is rendered as text through DOM nodes (`el` below), never parsed
// as HTML. An API key typed once is kept in sessionStorage and sent as a bearer token on every
// request; downloads go through fetch so they carry it too.
'use strict';

(() => {
  const REFRESH_MS = 2000;
  const PAGE_SIZE = 20;
  const KEY_STORAGE = 'vllm-batch.api-key';
  const CANCELLABLE = new Set(['validating', 'in_progress', 'finalizing']);
  const TERMINAL = new Set(['completed', 'failed', 'expired', 'cancelled']);
  const STATUSES = new Set([...CANCELLABLE, ...TERMINAL, 'cancelling']);
  const CONFIRM_MS = 5000;

  const state = {
    cursors: [null], // the `after` of every page up to the one shown
    page: null, // the last list answer
    detailId: null, // the batch of the detail view, when it is open
    detail: null, // its last Batch object
    files: new Map(), // file id → File object, fetched once for the detail view
    actionError: null, // {id, message}: the last failed cancel or download
    confirmCancel: null, // {id, until}: the cancel button asks for a second click
    busy: false,
    timer: null,
  };

  const $ = (id) => document.getElementById(id);

  /// Builds an element. Children that are not nodes become text nodes; attributes are set with
  /// setAttribute or properties, never by parsing markup.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'dataset') Object.assign(node.dataset, v);
      else if (k === 'style') Object.assign(node.style, v);
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  /// Replaces a node's children, leaving out the absent ones (null, undefined, false).
  function fill(node, ...children) {
    node.replaceChildren(...children.flat(Infinity).filter((c) => c !== undefined && c !== null && c !== false));
  }

  // ---- API access ------------------------------------------------------------------------

  const apiKey = {
    get() {
      try {
        return sessionStorage.getItem(KEY_STORAGE) || '';
      } catch {
        return '';
      }
    },
    set(key) {
      try {
        if (key) sessionStorage.setItem(KEY_STORAGE, key);
        else sessionStorage.removeItem(KEY_STORAGE);
      } catch {
        /* storage off: the key lasts until the page reloads */
      }
    },
  };

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /// fetch with the API key; a non-2xx answer throws with the message of OpenAI's envelope.
  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    const key = apiKey.get();
    if (key) headers.set('Authorization', `Bearer ${key}`);
    let resp;
    try {
      resp = await fetch(path, { ...options, headers, cache: 'no-store' });
    } catch (e) {
      throw new ApiError(0, `The server did not answer (${e.message}).`);
    }
    if (!resp.ok) {
      let message = `${resp.status} ${resp.statusText}`;
      try {
        const body = await resp.json();
        if (body && body.error && body.error.message) message = String(body.error.message);
      } catch {
        /* not JSON: keep the status line */
      }
      throw new ApiError(resp.status, message);
    }
    return resp;
  }

  const apiJson = async (path, options) => (await api(path, options)).json();
  const batchPath = (id) => `/v1/batches/${encodeURIComponent(id)}`;
  const batchHref = (id) => `#/batches/${encodeURIComponent(id)}`;
  const isAuthError = (e) => e instanceof ApiError && (e.status === 401 || e.status === 403);

  // ---- Formatting ------------------------------------------------------------------------

  const fmtInt = (n) => (typeof n === 'number' && Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '—');

  function fmtRate(n) {
    if (typeof n !== 'number' || !Number.isFinite(n)) return '—';
    if (n >= 100) return fmtInt(n);
    return n.toFixed(1);
  }

  const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

  /// The binary unit `n` is best shown in, as an index into BYTE_UNITS.
  function byteUnit(n) {
    let i = 0;
    while (n >= 1024 ** (i + 1) && i < BYTE_UNITS.length - 1) i += 1;
    return i;
  }

  const inUnit = (n, i) => `${i === 0 ? n : (n / 1024 ** i).toFixed(1)}`;

  function fmtBytes(n) {
    if (typeof n !== 'number' || !Number.isFinite(n)) return '—';
    const i = byteUnit(n);
    return `${inUnit(n, i)} ${BYTE_UNITS[i]}`;
  }

  /// `used / total` in the total's unit: `113.0 / 140.4 GiB`.
  function fmtBytesOf(used, total) {
    if (typeof used !== 'number' || typeof total !== 'number') return `${fmtBytes(used)} / ${fmtBytes(total)}`;
    const i = byteUnit(total);
    return `${inUnit(used, i)} / ${inUnit(total, i)} ${BYTE_UNITS[i]}`;
  }

  const pad = (n) => String(n).padStart(2, '0');

  function fmtTime(ts) {
    if (typeof ts !== 'number') return '—';
    const d = new Date(ts * 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(
      d.getMinutes(),
    )}:${pad(d.getSeconds())}`;
  }

  function fmtSpan(seconds) {
    if (typeof seconds !== 'number' || !Number.isFinite(seconds)) return '—';
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${pad(s % 60)} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${pad(Math.floor((s % 3600) / 60))} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  const now = () => Date.now() / 1000;
  const ago = (ts) => (typeof ts === 'number' ? `${fmtSpan(now() - ts)} ago` : '—');

  /// When the batch ended, or null while it runs.
  const endedAt = (b) => b.completed_at ?? b.failed_at ?? b.expired_at ?? b.cancelled_at ?? null;
  const elapsed = (b) => (endedAt(b) ?? now()) - b.created_at;

  function statusBadge(status, id) {
    const known = STATUSES.has(status) ? status : '';
    return el('span', { class: `status ${known}`, id }, String(status).replace('_', ' '));
  }

  /// Completed and failed segments on a track, with the counts under it.
  function progress(b, big) {
    const c = b.request_counts || {};
    const total = Number(c.total) || 0;
    const done = Number(c.completed) || 0;
    const failed = Number(c.failed) || 0;
    const pct = (n) => (total > 0 ? Math.min(100, (n * 100) / total) : 0);
    if (total === 0) {
      const errors = (b.errors && Array.isArray(b.errors.data) && b.errors.data.length) || 0;
      const why =
        b.status === 'validating'
          ? 'validating the input file…'
          : b.status === 'failed' && errors > 0
            ? `input rejected: ${errors} validation error${errors === 1 ? '' : 's'}`
            : 'no requests';
      return el('div', { class: 'progress' }, el('div', { class: 'progress-text' }, why));
    }
    return el(
      'div',
      { class: 'progress' },
      el(
        'div',
        {
          class: big ? 'bar big' : 'bar',
          role: 'progressbar',
          'aria-valuemin': 0,
          'aria-valuemax': total,
          'aria-valuenow': done + failed,
        },
        el('div', { class: 'seg ok', style: { width: `${pct(done)}%` } }),
        el('div', { class: 'seg bad', style: { width: `${pct(failed)}%` } }),
      ),
      el(
        'div',
        { class: 'progress-text' },
        el('span', { class: 'completed count-completed', dataset: { value: done } }, fmtInt(done)),
        ' completed',
        failed > 0 ? [' · ', el('span', { class: 'failed count-failed', dataset: { value: failed } }, fmtInt(failed)), ' failed'] : null,
        ' of ',
        el('span', { class: 'count-total' }, fmtInt(total)),
        total > 0 ? ` · ${Math.floor(pct(done + failed))} %` : null,
      ),
    );
  }

  // ---- System panel ----------------------------------------------------------------------

  async function refreshSystem() {
    const [vllm, gpu] = await Promise.allSettled([apiJson('/api/metrics/vllm'), apiJson('/api/metrics/gpu')]);
    const failure = [vllm, gpu].find((r) => r.status === 'rejected');
    if (failure && isAuthError(failure.reason)) throw failure.reason;
    $('system-error').hidden = !failure;
    $('system-error').textContent = failure ? failure.reason.message : '';
    if (vllm.status === 'fulfilled') renderVllm(vllm.value);
    if (gpu.status === 'fulfilled') renderGpus(gpu.value);
    const source = (vllm.value || gpu.value || {}).source;
    $('system-source').textContent =
      source === 'prometheus' ? 'from Prometheus' : source === 'process' ? 'from this process' : '';
  }

  function renderVllm(v) {
    $('stat-running').textContent = fmtInt(v.running);
    $('stat-waiting').textContent = fmtInt(v.waiting);
    $('stat-queue').textContent = fmtInt(v.queue_depth);
    $('stat-tokens').textContent = fmtRate(v.tokens_per_second);
    // Upstreams that are down: their batches wait (retries unspent) until a probe gets an answer.
    const down = Array.isArray(v.upstreams_down) ? v.upstreams_down : [];
    const box = $('upstreams-down');
    box.hidden = down.length === 0;
    box.textContent = down
      .map((d) => {
        const since = typeof d.since === 'number' ? ` since ${new Date(d.since * 1000).toLocaleTimeString()}` : '';
        const why = d.error ? ` (${d.error})` : '';
        return `Upstream ${d.upstream}${d.url ? ` ${d.url}` : ''} is down${since}${why}: its batches wait for it.`;
      })
      .join(' ');
  }

  function meter(label, fraction, value, warnAbove) {
    const pct = typeof fraction === 'number' && Number.isFinite(fraction) ? Math.min(100, Math.max(0, fraction * 100)) : 0;
    const seg = pct >= warnAbove ? 'seg bad' : 'seg use';
    return el(
      'div',
      { class: 'meter' },
      el('span', { class: 'label' }, label),
      el('div', { class: 'bar' }, el('div', { class: seg, style: { width: `${pct}%` } })),
      el('span', { class: 'value' }, value),
    );
  }

  function renderGpus(g) {
    const gpus = Array.isArray(g.gpus) ? g.gpus : [];
    if (gpus.length === 0) {
      const why =
        g.source === 'prometheus'
          ? 'No GPU readings: Prometheus holds no vllm_gpu_* series.'
          : 'No GPU readings: NVML found no GPU for this process.';
      fill($('gpus'), el('p', { class: 'empty' }, why));
      return;
    }
    fill(
      $('gpus'),
      ...gpus.map((x) => {
        const t = x.temperature_celsius;
        const tempClass = typeof t === 'number' ? (t >= 85 ? 'gpu-temp hot' : t >= 75 ? 'gpu-temp warm' : 'gpu-temp') : 'gpu-temp';
        const used = x.memory_used_bytes;
        const total = x.memory_total_bytes;
        const util = x.utilization_percent;
        return el(
          'div',
          { class: 'gpu', dataset: { gpu: x.gpu } },
          el(
            'div',
            { class: 'gpu-head' },
            el('span', { class: 'muted mono' }, `GPU ${x.gpu}`),
            el('span', { class: 'gpu-name', title: x.uuid || null }, x.name || 'unnamed GPU'),
            el('span', { class: tempClass }, typeof t === 'number' ? `${Math.round(t)} °C` : '— °C'),
          ),
          meter('Memory', used / total, fmtBytesOf(used, total), 95),
          meter('Utilization', typeof util === 'number' ? util / 100 : null, typeof util === 'number' ? `${Math.round(util)} %` : '—', 101),
          x.instance || typeof x.power_watts === 'number'
            ? el(
                'div',
                { class: 'gpu-foot' },
                typeof x.power_watts === 'number' ? el('span', {}, `${Math.round(x.power_watts)} W`) : null,
                x.instance ? el('span', { class: 'mono', title: 'Prometheus instance' }, x.instance) : null,
              )
            : null,
        );
      }),
    );
  }

  // ---- Batches table ---------------------------------------------------------------------

  async function refreshList() {
    const after = state.cursors[state.cursors.length - 1];
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (after) query.set('after', after);
    const page = await apiJson(`/v1/batches?${query}`);
    if (state.detailId) return;
    state.page = page;
    renderList(page);
  }

  function renderList(page) {
    const batches = Array.isArray(page.data) ? page.data : [];
    fill(
      $('batch-rows'),
      ...batches.map((b) =>
        el(
          'tr',
          { dataset: { batchId: b.id }, onclick: () => (location.hash = batchHref(b.id)) },
          el('td', {}, el('a', { href: batchHref(b.id), class: 'mono' }, b.id)),
          el('td', { class: 'batch-status' }, statusBadge(b.status)),
          el('td', { class: 'wide-only' }, el('div', { class: 'mono' }, b.endpoint), b.model ? el('div', { class: 'model' }, b.model) : null),
          el('td', {}, progress(b)),
          el('td', { class: 'when wide-only', title: fmtTime(b.created_at) }, ago(b.created_at)),
          el('td', { class: 'when num wide-only' }, fmtSpan(elapsed(b))),
        ),
      ),
    );
    $('batches-empty').hidden = batches.length > 0 || state.cursors.length > 1;
    $('page-newer').disabled = state.cursors.length <= 1;
    $('page-older').disabled = !page.has_more;
    const paged = state.cursors.length > 1 || !!page.has_more;
    $('page-label').textContent = paged ? `page ${state.cursors.length}` : '';
    $('pager').hidden = !paged;
  }

  // ---- Detail view -----------------------------------------------------------------------

  async function refreshDetail() {
    const id = state.detailId;
    const batch = await apiJson(batchPath(id));
    if (state.detailId !== id) return;
    state.detail = batch;
    renderDetail(batch);
    for (const fileId of [batch.input_file_id, batch.output_file_id, batch.error_file_id]) {
      if (fileId && !state.files.has(fileId)) {
        state.files.set(fileId, null);
        apiJson(`/v1/files/${encodeURIComponent(fileId)}`)
          .then((f) => {
            state.files.set(fileId, f);
            if (state.detail && state.detailId === id) renderDetail(state.detail);
          })
          .catch(() => state.files.delete(fileId));
      }
    }
  }

  function kv(pairs) {
    const rows = pairs.filter(([, v]) => v !== null && v !== undefined);
    if (rows.length === 0) return el('p', { class: 'muted' }, 'none');
    return el('dl', { class: 'kv' }, rows.map(([k, v, title]) => [el('dt', {}, k), el('dd', { title }, v)]));
  }

  const card = (title, ...body) => el('div', { class: 'card' }, el('h3', {}, title), ...body);

  function timestampsCard(b) {
    const stamp = (label, ts) => [label, typeof ts === 'number' ? fmtTime(ts) : null, typeof ts === 'number' ? new Date(ts * 1000).toISOString() : null];
    return card(
      'Timeline',
      kv([
        stamp('created', b.created_at),
        stamp('in progress', b.in_progress_at),
        stamp('finalizing', b.finalizing_at),
        stamp('completed', b.completed_at),
        stamp('failed', b.failed_at),
        stamp('cancelling', b.cancelling_at),
        stamp('cancelled', b.cancelled_at),
        stamp('expired', b.expired_at),
        stamp('expires', endedAt(b) === null ? b.expires_at : null),
        ['duration', fmtSpan(elapsed(b))],
      ]),
    );
  }

  function requestsCard(b) {
    const c = b.request_counts || {};
    const left = (c.total || 0) - (c.completed || 0) - (c.failed || 0);
    return card(
      'Requests',
      kv([
        ['total', fmtInt(c.total)],
        ['completed', fmtInt(c.completed)],
        ['failed', fmtInt(c.failed)],
        ['remaining', TERMINAL.has(b.status) ? null : fmtInt(left)],
      ]),
    );
  }

  function usageCard(b) {
    const u = b.usage || {};
    const started = b.in_progress_at;
    const span = typeof started === 'number' ? (endedAt(b) ?? now()) - started : null;
    return card(
      'Usage',
      kv([
        ['input tokens', fmtInt(u.input_tokens)],
        ['cached', u.input_tokens_details && u.input_tokens_details.cached_tokens ? fmtInt(u.input_tokens_details.cached_tokens) : null],
        ['output tokens', fmtInt(u.output_tokens)],
        ['reasoning', u.output_tokens_details && u.output_tokens_details.reasoning_tokens ? fmtInt(u.output_tokens_details.reasoning_tokens) : null],
        ['total tokens', fmtInt(u.total_tokens)],
        ['output tokens / s', span && span > 0 && u.output_tokens ? fmtRate(u.output_tokens / span) : null],
      ]),
    );
  }

  function fileRow(kind, fileId, b) {
    if (!fileId) {
      const why = TERMINAL.has(b.status) ? 'none' : 'not yet';
      // While the batch runs, the output lines so far (GET …/output) can be saved already.
      const soFar =
        kind === 'output' && !TERMINAL.has(b.status) && b.status !== 'validating'
          ? el('button', { type: 'button', id: 'results-so-far', class: 'download', onclick: (e) => downloadSoFar(b.id, e.currentTarget) }, 'Download results so far')
          : null;
      return el(
        'div',
        { class: 'file-row', dataset: { file: kind } },
        el('span', { class: 'file-kind' }, kind),
        el('span', { class: 'file-id muted' }, why),
        soFar,
      );
    }
    const info = state.files.get(fileId);
    return el(
      'div',
      { class: 'file-row', dataset: { file: kind } },
      el('span', { class: 'file-kind' }, kind),
      el('span', { class: 'file-id mono', title: fileId }, fileId),
      info ? el('span', { class: 'muted' }, fmtBytes(info.bytes)) : null,
      el('button', { type: 'button', class: 'download', onclick: (e) => download(fileId, e.currentTarget) }, 'Download'),
    );
  }

  function filesCard(b) {
    return card(
      'Files',
      fileRow('input', b.input_file_id, b),
      fileRow('output', b.output_file_id, b),
      fileRow('errors', b.error_file_id, b),
    );
  }

  function metadataCard(b) {
    const entries = Object.entries(b.metadata || {});
    return card('Metadata', kv(entries.map(([k, v]) => [k, String(v)])));
  }

  function errorsCard(b) {
    const errors = (b.errors && Array.isArray(b.errors.data) && b.errors.data) || [];
    if (errors.length === 0) return null;
    return el(
      'div',
      { class: 'card errors-card', id: 'validation-errors' },
      el('h3', {}, `Validation errors (${errors.length})`),
      el(
        'div',
        { class: 'table-wrap' },
        el(
          'table',
          {},
          el('thead', {}, el('tr', {}, el('th', {}, 'Line'), el('th', {}, 'Code'), el('th', {}, 'Param'), el('th', {}, 'Message'))),
          el(
            'tbody',
            {},
            errors.map((e) =>
              el(
                'tr',
                {},
                el('td', { class: 'line' }, e.line != null ? `line ${e.line}` : '—'),
                el('td', {}, el('code', {}, e.code)),
                el('td', { class: 'mono' }, e.param || ''),
                el('td', {}, e.message),
              ),
            ),
          ),
        ),
      ),
    );
  }

  function cancelButton(b) {
    if (!CANCELLABLE.has(b.status) && b.status !== 'cancelling') return null;
    const confirming = state.confirmCancel && state.confirmCancel.id === b.id && state.confirmCancel.until > Date.now();
    return el(
      'button',
      {
        type: 'button',
        id: 'cancel-button',
        class: confirming ? 'danger' : '',
        disabled: b.status === 'cancelling',
        onclick: (e) => cancelBatch(b.id, e.currentTarget),
      },
      b.status === 'cancelling' ? 'Cancelling…' : confirming ? 'Click again to cancel' : 'Cancel batch',
    );
  }

  // An ended batch with lines that did not succeed can be retried as a new batch (POST …/retry).
  function retryButton(b) {
    if (!TERMINAL.has(b.status) || b.status === 'failed' || !b.error_file_id) return null;
    return el(
      'button',
      { type: 'button', id: 'retry-button', onclick: (e) => retryBatch(b.id, e.currentTarget) },
      'Retry failed lines',
    );
  }

  function renderDetail(b) {
    const error = state.actionError && state.actionError.id === b.id ? state.actionError.message : null;
    document.title = `${b.id} · ${b.status} · vllm-batch`;
    fill(
      $('detail-view'),
      el(
        'div',
        { class: 'panel-head' },
        el('a', { href: '#/' }, '← All batches'),
        el(
          'div',
          { class: 'actions' },
          error ? el('span', { class: 'action-error', id: 'action-error' }, error) : null,
          cancelButton(b),
          retryButton(b),
        ),
      ),
      el('div', { class: 'detail-title' }, el('h2', {}, b.id), statusBadge(b.status, 'detail-status')),
      el(
        'div',
        { class: 'detail-sub' },
        el('span', { class: 'mono' }, b.endpoint),
        b.model ? [' · ', b.model] : null,
        ` · window ${b.completion_window}`,
      ),
      el('div', { class: 'detail-progress' }, progress(b, true)),
      el('div', { class: 'cards' }, timestampsCard(b), requestsCard(b), usageCard(b), filesCard(b), metadataCard(b)),
      errorsCard(b),
    );
  }

  async function cancelBatch(id, button) {
    const c = state.confirmCancel;
    if (!c || c.id !== id || c.until <= Date.now()) {
      state.confirmCancel = { id, until: Date.now() + CONFIRM_MS };
      if (state.detail) renderDetail(state.detail);
      setTimeout(() => state.detail && state.detail.id === id && renderDetail(state.detail), CONFIRM_MS + 50);
      return;
    }
    state.confirmCancel = null;
    button.disabled = true;
    try {
      const batch = await apiJson(`${batchPath(id)}/cancel`, { method: 'POST' });
      state.actionError = null;
      if (state.detailId === id) {
        state.detail = batch;
        renderDetail(batch);
      }
    } catch (e) {
      state.actionError = { id, message: `Cancel failed: ${e.message}` };
      if (state.detail) renderDetail(state.detail);
    }
  }

  async function retryBatch(id, button) {
    button.disabled = true;
    try {
      const batch = await apiJson(`${batchPath(id)}/retry`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'Idempotency-Key': `web-retry-${id}-${Date.now()}` },
        body: '{}',
      });
      state.actionError = null;
      location.hash = batchHref(batch.id);
    } catch (e) {
      state.actionError = { id, message: `Retry failed: ${e.message}` };
      if (state.detail) renderDetail(state.detail);
    }
  }

  // Runs a download behind its button: `fetchFile` gets [blob, file name]; the browser saves it.
  async function saveFrom(button, fetchFile) {
    button.disabled = true;
    try {
      const [blob, name] = await fetchFile();
      const url = URL.createObjectURL(blob);
      const link = el('a', { href: url, download: name, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    } catch (e) {
      state.actionError = { id: state.detailId, message: `Download failed: ${e.message}` };
      if (state.detail) renderDetail(state.detail);
    } finally {
      button.disabled = false;
    }
  }

  function download(fileId, button) {
    return saveFrom(button, async () => {
      const resp = await api(`/v1/files/${encodeURIComponent(fileId)}/content`);
      const info = state.files.get(fileId);
      const name = String((info && info.filename) || `${fileId}.jsonl`).split(/[\\/]/).pop();
      return [await resp.blob(), name];
    });
  }

  // The output lines a running batch has so far: GET …/output from the start, following its
  // x-next-cursor until nothing more is available right now (each answer is bounded).
  function downloadSoFar(id, button) {
    return saveFrom(button, async () => {
      const parts = [];
      let after = null;
      for (let page = 0; page < 10000; page++) {
        const query = after ? `?after=${encodeURIComponent(after)}` : '';
        const resp = await api(`${batchPath(id)}/output${query}`);
        const body = await resp.blob();
        parts.push(body);
        after = resp.headers.get('x-next-cursor');
        if (body.size === 0 || resp.headers.get('x-incomplete') !== 'true' || !after) break;
      }
      return [new Blob(parts, { type: 'application/jsonl' }), `${id}.output-so-far.jsonl`];
    });
  }

  // ---- Routing, refresh loop, key form -----------------------------------------------------

  function route() {
    const m = /^#\/batches\/(.+)$/.exec(location.hash);
    const id = m ? decodeURIComponent(m[1]) : null;
    if (id !== state.detailId) {
      state.detailId = id;
      state.detail = null;
      state.actionError = null;
      state.confirmCancel = null;
    }
    $('list-view').hidden = !!id;
    $('detail-view').hidden = !id;
    if (id) {
      fill($('detail-view'), el('p', { class: 'muted' }, `Loading ${id}…`));
    } else {
      document.title = 'vllm-batch';
    }
    refresh();
  }

  function showNotice(message) {
    $('notice').hidden = !message;
    $('notice').textContent = message || '';
  }

  async function refresh() {
    if (state.busy) {
      state.again = true;
      return;
    }
    state.busy = true;
    const results = await Promise.allSettled([refreshSystem(), state.detailId ? refreshDetail() : refreshList()]);
    const failure = results.find((r) => r.status === 'rejected');
    const stamp = fmtTime(now()).slice(11);
    if (!failure) {
      showNotice(null);
      $('refresh-state').textContent = `updated ${stamp}`;
      $('refresh-state').classList.remove('stale');
    } else {
      const e = failure.reason;
      showNotice(
        isAuthError(e)
          ? `The server asks for an API key (${e.message}). Enter it at the top right.`
          : e instanceof ApiError && e.status === 404 && state.detailId
            ? `No batch ${state.detailId}: ${e.message}`
            : e.message,
      );
      $('refresh-state').textContent = `update failed ${stamp}`;
      $('refresh-state').classList.add('stale');
    }
    state.busy = false;
    if (state.again) {
      state.again = false;
      refresh();
    }
  }

  function loop() {
    clearTimeout(state.timer);
    state.timer = setTimeout(async () => {
      if (!document.hidden) await refresh();
      loop();
    }, REFRESH_MS);
  }

  function setupKeyForm() {
    const input = $('api-key');
    const forget = $('key-forget');
    input.value = apiKey.get();
    forget.hidden = !input.value;
    $('key-form').addEventListener('submit', (e) => {
      e.preventDefault();
      apiKey.set(input.value.trim());
      forget.hidden = !apiKey.get();
      refresh();
    });
    forget.addEventListener('click', () => {
      apiKey.set('');
      input.value = '';
      forget.hidden = true;
      refresh();
    });
  }

  function setupPager() {
    $('page-older').addEventListener('click', () => {
      if (state.page && state.page.has_more && state.page.last_id) {
        state.cursors.push(state.page.last_id);
        refresh();
      }
    });
    $('page-newer').addEventListener('click', () => {
      if (state.cursors.length > 1) {
        state.cursors.pop();
        refresh();
      }
    });
  }

  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) refresh();
  });
  window.addEventListener('hashchange', route);
  setupKeyForm();
  setupPager();
  route();
  loop();
})();

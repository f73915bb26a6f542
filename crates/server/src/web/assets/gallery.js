// Collections and gallery statistics; ingest jobs: upload photos, videos or archives into a
// collection (with the source, its legal basis and jurisdiction), watch the running jobs'
// progress (polled every second), read each job's summary and report.
import { get, post, ApiError } from './api.js';
import { h, mount, msg, errorBox, table, fmtBytes, fmtTime, field } from './ui.js';

const POLL_MS = 1000;
const ACTIVE = new Set(['queued', 'running']);
const STATUS = {
  completed: ['ok', '✓ completed'],
  failed: ['bad', '✗ failed'],
  cancelled: ['warn', '■ cancelled'],
  interrupted: ['warn', '! interrupted'],
  running: ['', '▶ running'],
  queued: ['', '… queued'],
};

function statusBadge(s) {
  const [kind, text] = STATUS[s] || ['', s];
  return h('span.badge' + (kind ? '.' + kind : ''), text);
}

function plural(n, one, many) { return `${n} ${n === 1 ? one : (many || one + 's')}`; }

function fmtSecs(s) {
  if (typeof s !== 'number') return '—';
  if (s < 10) return `${s.toFixed(1)} s`;
  s = Math.round(s);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function codes(m) {
  const e = Object.entries(m || {});
  return e.length ? e.map(([k, n]) => `${k} ${n}`).join(', ') : '';
}

export async function galleryPage({ main }) {
  document.title = 'Collections · visage';
  const colSection = h('section#collections-section', { 'aria-label': 'Collections' });
  const jobsSection = h('section#ingest', { 'aria-labelledby': 'ingest-title' }, h('p.muted', 'Loading the ingest jobs…'));
  mount(main, h('h1', 'Collections'), colSection, h('h2#ingest-title', 'Ingest jobs'), jobsSection);
  const names = await renderCollections(colSection);
  let list;
  try {
    list = await get('/v1/ingest/jobs?limit=20');
  } catch (e) {
    if (e.status === 403) {
      mount(jobsSection, msg('info', 'Ingest is done by administrators',
        'Your role can search and read the gallery, not add to it (' + e.code + '). Administrators upload photos here, or run `visage ingest` on the server.'));
      return;
    }
    mount(jobsSection, errorBox(e, 'Cannot load the ingest jobs'));
    return;
  }
  ingestSection(jobsSection, colSection, names, list);
}

/** The statistics and the collections table; returns the collection names. */
async function renderCollections(section) {
  const [cols, stats] = await Promise.all([get('/v1/collections'), get('/v1/stats')]);
  const byName = Object.fromEntries((stats.collections || []).map((c) => [c.name, c]));
  const bytes = stats.bytes_on_disk;
  // A cluster leaves out what its storage servers measure themselves (null).
  const kv = [
    ['Faces', String(stats.faces)],
    ['Images', String(stats.images)],
    ['Subjects', String(stats.subjects)],
    stats.tombstones != null && ['Erased (tombstones)', String(stats.tombstones)],
    bytes && ['On disk', `${fmtBytes(bytes.total)} (metadata ${fmtBytes(bytes.metadata)}, blobs ${fmtBytes(bytes.blobs)}, index ${fmtBytes(bytes.index)})`],
    stats.bytes_in_memory != null && ['In memory', fmtBytes(stats.bytes_in_memory)],
  ].filter(Boolean);
  mount(section,
    h('div.card', h('dl.kv#stats', kv.flatMap(([k, v]) => [h('dt', k), h('dd', v)]))),
    table(null, [
      { label: 'Collection', value: (c) => c.name },
      { label: 'Model pack', value: (c) => h('code', c.pack) },
      { label: 'Dimensions', value: (c) => String(c.dim), num: true },
      { label: 'Faces', value: (c) => String(c.faces), num: true },
      { label: 'Images', value: (c) => String(c.images), num: true },
      { label: 'Subjects', value: (c) => String(c.subjects), num: true },
      { label: 'Sources', value: (c) => ((byName[c.name] || {}).sources || []).map((s) => `${s.name} (${s.faces})`).join(', ') || '—', wrap: true },
      { label: 'Jurisdictions', value: (c) => ((byName[c.name] || {}).jurisdictions || []).map((j) => `${j.name} (${j.faces})`).join(', ') || '—', wrap: true },
    ], cols, { id: 'collections-table', empty: 'No collection yet: upload photos below, or run `visage ingest` on the server.' }));
  return cols.map((c) => c.name);
}

/** POST /v1/ingest/jobs with upload progress (fetch cannot report it). */
function upload(fd, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/v1/ingest/jobs');
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.responseType = 'json';
    xhr.upload.addEventListener('progress', (ev) => { if (ev.lengthComputable) onProgress(ev.loaded, ev.total); });
    xhr.addEventListener('load', () => {
      const d = xhr.response;
      if (xhr.status >= 200 && xhr.status < 300 && d) { resolve(d); return; }
      const err = d && d.error ? d.error : { code: 'http_' + xhr.status, message: xhr.statusText || 'The upload failed.' };
      // A 401 ends the session: let the app's handler take the user to the sign-in page.
      if (xhr.status === 401) get('/v1/auth/me').catch(() => {});
      reject(new ApiError(xhr.status, err.code, err.message));
    });
    xhr.addEventListener('error', () => reject(new ApiError(0, 'network', 'The upload failed: the connection to the server was lost (a file over the upload limit ends the connection).')));
    xhr.send(fd);
  });
}

/** The fields every job declares: collection, source, legal basis, jurisdiction, licence. */
function sourceFields(prefix) {
  return [
    field('Collection', { name: 'collection', type: 'text', required: true, id: `${prefix}-collection`, list: 'ing-collections', autocomplete: 'off' },
      'An existing collection, or a new name (created with this server\'s model pack).'),
    field('Source name', { name: 'source', type: 'text', required: true, id: `${prefix}-source` },
      'Where the photos come from, e.g. "custody photos 2024" (an existing source keeps its declarations).'),
    field('Legal basis', { name: 'legal_basis', tag: 'textarea', rows: 2, required: true, id: `${prefix}-legal` },
      'The legal basis on which these images are held; recorded with every face and in the audit log.'),
    field('Jurisdiction', { name: 'jurisdiction', type: 'text', id: `${prefix}-jurisdiction`, autocomplete: 'off', placeholder: 'e.g. GB, FR, US-NY' },
      'ISO 3166 code of where the photos were taken (optional; a photo\'s GPS position comes first). Jurisdictions the policy excludes are refused.'),
    field('Licence', { name: 'licence', type: 'text', id: `${prefix}-licence` }, 'Optional.'),
  ];
}

/** The declared fields of `form` as the API's job body, or the first one missing. */
function jobMeta(form) {
  const v = (k) => form.elements[k].value.trim();
  const missing = [['collection', 'the collection'], ['source', 'the source name'], ['legal_basis', 'the legal basis']].find(([k]) => !v(k));
  if (missing) return { missing };
  const meta = { collection: v('collection'), source: { name: v('source'), legal_basis: v('legal_basis') } };
  if (v('jurisdiction')) meta.source.jurisdiction = v('jurisdiction');
  if (v('licence')) meta.source.licence = v('licence');
  return { meta };
}

/**
 * A job on a server-side file or folder (`POST /v1/ingest/jobs` with a JSON `path`): shown
 * where the server names ingest roots; the only way in on a cluster, whose workers read the
 * path themselves.
 */
function pathForm(onStarted) {
  const formMsg = h('div#path-form-msg', { 'aria-live': 'polite' });
  const submit = h('button.primary#pj-submit', { type: 'submit' }, 'Queue the folder');
  const form = h('form.card.form#path-form', { novalidate: true },
    h('h3', 'Ingest a folder on the server'),
    h('div.grid2.ingest-grid',
      h('div', ...sourceFields('pj')),
      h('div',
        field('Path on the server', { name: 'path', type: 'text', required: true, id: 'pj-path', autocomplete: 'off', placeholder: '/srv/collections/custody-2024' },
          'A file or folder inside the server\'s ingest roots (walked in name order; links are not followed). On a cluster every worker reads it at this same path.'),
        h('label.check', h('input#pj-subjects', { type: 'checkbox', name: 'subject_from_parent' }), 'Name subjects after the folder holding each photo'))),
    h('div.actions', submit), formMsg);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const { meta, missing } = jobMeta(form);
    const path = form.elements.path.value.trim();
    if (missing || !path) {
      const [k, what] = missing || ['path', 'the path on the server'];
      mount(formMsg, errorBox({ message: `Fill in ${what}.` }, 'Cannot queue the job'));
      form.elements[k].focus();
      return;
    }
    const body = { ...meta, path };
    if (form.elements.subject_from_parent.checked) body.options = { subject_from_parent: true };
    submit.disabled = true;
    form.setAttribute('aria-busy', 'true');
    try {
      const job = await post('/v1/ingest/jobs', body);
      mount(formMsg, msg('ok', `Job ${job.id} queued${typeof job.items_total === 'number' ? ': ' + plural(job.items_total, 'file') : ''}.`, ' Its progress is shown below; you can leave this page, the job goes on.'));
      onStarted(job);
    } catch (e) {
      mount(formMsg, errorBox(e, 'The job could not be queued'));
    } finally {
      submit.disabled = false;
      form.removeAttribute('aria-busy');
    }
  });
  return form;
}

function ingestSection(section, colSection, names, first) {
  const limit = first.upload_limit;
  const datalist = h('datalist#ing-collections', names.map((n) => h('option', { value: n })));
  // --- the upload form (servers that take uploads: not a cluster) -----------------------------
  const files = h('input#ing-files', { type: 'file', name: 'file', multiple: true, 'aria-describedby': 'ing-chosen' });
  const chosen = h('p.help#ing-chosen', 'No file chosen.');
  function showChosen() {
    const fs = [...files.files];
    const total = fs.reduce((a, f) => a + f.size, 0);
    chosen.textContent = fs.length ? `${plural(fs.length, 'file')}, ${fmtBytes(total)} (at most ${fmtBytes(limit)} per upload).` : 'No file chosen.';
  }
  files.addEventListener('change', showChosen);
  const drop = h('label.drop', { for: 'ing-files' },
    h('strong', 'Drop photos, videos or archives here'), h('br'),
    h('span.muted', 'or choose files: JPEG, PNG, WebP and other images, videos, zip/tar/tar.gz archives, WARC files'), h('br'), files);
  drop.addEventListener('dragover', (ev) => { ev.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (ev) => {
    ev.preventDefault();
    drop.classList.remove('over');
    if (!ev.dataTransfer.files.length) return;
    files.files = ev.dataTransfer.files;
    showChosen();
  });
  const formMsg = h('div#ingest-form-msg', { 'aria-live': 'polite' });
  const uploadBar = h('progress#ing-upload-bar', { max: 100, value: 0, 'aria-label': 'Upload progress', hidden: true });
  const submit = h('button.primary#ing-submit', { type: 'submit' }, 'Upload and ingest');
  const form = h('form.card.form#ingest-form', { novalidate: true },
    h('h3', 'Add photos to a collection'),
    h('div.grid2.ingest-grid',
      h('div', ...sourceFields('ing')),
      h('div', drop, chosen,
        h('p.help', 'Manifests (CSV, JSON Lines) are not read over HTTP; each file is checked on its own, and files that cannot be used are listed in the job\'s report with the reason.'))),
    h('div.actions', submit, uploadBar, h('span.muted#ing-upload-text')),
    formMsg);

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    delete formMsg.dataset.job;
    const { meta, missing } = jobMeta(form);
    if (missing) {
      mount(formMsg, errorBox({ message: `Fill in ${missing[1]}.` }, 'Cannot start the job'));
      form.elements[missing[0]].focus();
      return;
    }
    const fs = [...files.files];
    if (!fs.length) { mount(formMsg, errorBox({ message: 'Choose or drop the files to ingest.' }, 'No file')); files.focus(); return; }
    const total = fs.reduce((a, f) => a + f.size, 0);
    if (total > limit) {
      mount(formMsg, errorBox({ message: `The files make ${fmtBytes(total)}; this server takes at most ${fmtBytes(limit)} per upload. Upload them in several jobs.`, code: 'payload_too_large' }, 'Too large'));
      return;
    }
    const fd = new FormData();
    fd.append('meta', JSON.stringify(meta)); // first: the server checks it before reading the files
    for (const f of fs) fd.append('file', f, f.name);
    const text = form.querySelector('#ing-upload-text');
    submit.disabled = true;
    form.setAttribute('aria-busy', 'true');
    uploadBar.hidden = false;
    uploadBar.value = 0;
    mount(formMsg, msg('info', `Uploading ${plural(fs.length, 'file')} (${fmtBytes(total)})…`));
    try {
      const job = await upload(fd, (done, all) => {
        uploadBar.value = Math.round((100 * done) / all);
        text.textContent = `${fmtBytes(done)} of ${fmtBytes(all)} sent`;
      });
      mount(formMsg, msg('ok', `Job ${job.id} started.`, ' Its progress is shown below; you can leave this page, the job goes on.'));
      formMsg.dataset.job = String(job.id);
      files.value = '';
      showChosen();
      started(job);
    } catch (e) {
      mount(formMsg, errorBox(e, 'The job could not be started'));
    } finally {
      submit.disabled = false;
      form.removeAttribute('aria-busy');
      uploadBar.hidden = true;
      text.textContent = '';
    }
  });

  // --- live jobs, summaries, finished jobs ------------------------------------------------------
  const liveBox = h('div#ingest-live');
  const summary = h('div#ingest-summary', { role: 'status', 'aria-live': 'polite' });
  const doneBox = h('div#ingest-done');
  const forms = [];
  if (limit > 0) forms.push(form);
  if (first.path_jobs) forms.push(pathForm((job) => started(job)));
  if (!forms.length) {
    forms.push(msg('info', 'This server takes no ingest from the browser',
      'It takes no uploads and names no ingest roots for server-side folders. Run `visage ingest` (embedded) or `visage cluster enqueue` (cluster) on the server.'));
  }
  mount(section, datalist, ...forms, summary, h('h3', 'Running and waiting'), liveBox, h('h3', 'Recent jobs'), doneBox);

  const cards = new Map(); // id -> {card, update}
  const watched = new Set(); // jobs seen active on this page: their end is summarised
  let doneKey = null;
  let timer = null;

  /** A job just started from a form: shown at once from the answer, then polled. */
  function started(job) {
    watched.add(job.id);
    if (!ACTIVE.has(job.status)) { // a job with nothing to do may end at once
      onEnded(job);
      return;
    }
    if (!cards.has(job.id)) { cards.set(job.id, jobCard(job)); }
    liveBox.querySelector('#ingest-idle')?.remove();
    liveBox.append(cards.get(job.id).card);
    clearTimeout(timer);
    timer = setTimeout(poll, POLL_MS);
  }

  function render(list) {
    const active = list.jobs.filter((j) => ACTIVE.has(j.status)).reverse(); // oldest first
    for (const j of active) {
      watched.add(j.id);
      if (!cards.has(j.id)) {
        const c = jobCard(j);
        cards.set(j.id, c);
      }
      cards.get(j.id).update(j);
    }
    // keep the cards in queue order, without rebuilding them (focus stays on a Cancel button)
    active.forEach((j) => liveBox.append(cards.get(j.id).card));
    for (const [id, c] of cards) {
      if (!active.some((j) => j.id === id)) { c.card.remove(); cards.delete(id); }
    }
    if (!active.length) mount(liveBox, h('p.muted#ingest-idle', 'No job is running.'));
    else liveBox.querySelector('#ingest-idle')?.remove();

    const done = list.jobs.filter((j) => !ACTIVE.has(j.status));
    const key = done.map((j) => `${j.id}:${j.status}`).join(',');
    if (key !== doneKey) {
      doneKey = key;
      mount(doneBox, jobsTable(done));
    }
    return active.length > 0;
  }

  async function onEnded(j) {
    watched.delete(j.id);
    if (formMsg.dataset.job === String(j.id)) { mount(formMsg); delete formMsg.dataset.job; }
    mount(summary, jobSummary(j));
    try { await renderCollections(colSection); } catch (_) { /* the table stays as it was */ }
  }

  async function poll() {
    clearTimeout(timer);
    if (!section.isConnected) return; // the user left the page
    let again = true;
    try {
      const list = await get('/v1/ingest/jobs?limit=20');
      if (!section.isConnected) return;
      const ended = list.jobs.filter((j) => watched.has(j.id) && !ACTIVE.has(j.status));
      again = render(list);
      for (const j of ended) await onEnded(j);
    } catch (e) {
      mount(summary, errorBox(e, 'Cannot read the ingest jobs'));
      if (e.status === 401 || e.status === 403) again = false;
    }
    if (again) timer = setTimeout(poll, POLL_MS);
  }

  if (render(first)) timer = setTimeout(poll, POLL_MS);
}

/** A running or queued job: a progress bar with counts, rate and ETA, and Cancel. */
function jobCard(j0) {
  const id = j0.id;
  const title = h('h4', `Job ${id}`);
  const badge = h('span');
  const bar = h('progress', { id: `job-${id}-bar`, max: 1, 'aria-label': `Progress of job ${id}` });
  const counts = h('p.job-counts', { id: `job-${id}-counts` });
  const timing = h('p.muted.job-timing', { id: `job-${id}-timing` });
  const note = h('div', { 'aria-live': 'polite' });
  const cancel = h('button.small.danger', { type: 'button', id: `job-${id}-cancel`, on: { click: async () => {
    if (!confirm(`Cancel job ${id}? Faces already indexed stay; the rest is not ingested.`)) return;
    cancel.disabled = true;
    try {
      const r = await post(`/v1/ingest/jobs/${id}/cancel`);
      update(r);
    } catch (e) {
      cancel.disabled = false;
      mount(note, errorBox(e, 'Cannot cancel the job'));
    }
  } } }, 'Cancel');
  const card = h('div.card.job-live', { id: `job-${id}`, role: 'group', 'aria-labelledby': `job-${id}-title` },
    h('div.row', title, badge, h('span.spacer'), cancel), bar, counts, timing, note);
  title.id = `job-${id}-title`;

  function update(j) {
    card.dataset.status = j.status;
    title.textContent = `Job ${j.id}: ${j.collection || '—'} ← ${j.source || '—'}`;
    let label = (STATUS[j.status] || ['', j.status])[1];
    if (j.cancel_requested) label = '■ cancelling…';
    else if (j.status === 'queued' && typeof j.queue_position === 'number') label += j.queue_position ? ` (${plural(j.queue_position, 'job')} ahead)` : ' (next)';
    mount(badge, h('span.badge', label));
    if (typeof j.items_total === 'number' && j.items_total > 0) {
      bar.max = j.items_total;
      bar.value = Math.min(j.items_seen, j.items_total);
    } else if (j.status === 'queued') {
      bar.removeAttribute('value'); // indeterminate
    } else {
      bar.removeAttribute('value');
    }
    const of = typeof j.items_total === 'number' ? ` of ${j.items_total}` : '';
    counts.textContent = `${j.items_seen}${of} items · ${plural(j.faces_indexed, 'face')} indexed · ${plural(j.duplicates, 'duplicate')} · ${j.faces_rejected_total} faces rejected · ${plural(j.errors, 'error')}`;
    const parts = [];
    if (j.status === 'running') {
      if (typeof j.rate === 'number') parts.push(`${j.rate.toFixed(1)} items/s`);
      if (typeof j.eta_s === 'number') parts.push(`about ${fmtSecs(j.eta_s)} left`);
      if (typeof j.elapsed_s === 'number') parts.push(`running for ${fmtSecs(j.elapsed_s)}`);
    } else {
      parts.push(`queued ${fmtTime(j.queued_at)}`);
    }
    parts.push(j.origin === 'upload' ? `${plural(j.files || 0, 'file')} uploaded (${fmtBytes(j.upload_bytes)})` : `path ${j.path || '—'}`);
    timing.textContent = parts.join(' · ');
    cancel.hidden = !!j.cancel_requested;
  }
  update(j0);
  return { card, update };
}

/** What a finished job did, in words, with its report. */
function jobSummary(j) {
  const [kind] = STATUS[j.status] || ['info'];
  const box = msg(kind === 'ok' && j.errors ? 'warn' : kind === 'bad' ? 'error' : kind || 'info',
    `Job ${j.id} ${j.status}: ${plural(j.images_indexed, 'image')} and ${plural(j.faces_indexed, 'face')} indexed into ${j.collection}.`);
  box.id = 'ingest-result';
  box.dataset.job = String(j.id);
  box.dataset.status = j.status;
  const lines = [];
  if (j.duplicates) lines.push(`${plural(j.duplicates, 'image')} already in the collection (skipped).`);
  if (j.errors) lines.push(`${plural(j.errors, 'item')} could not be used: ${codes(j.errors_by_code)}.`);
  if (j.faces_rejected_total) lines.push(`${plural(j.faces_rejected_total, 'face')} rejected: ${codes(j.faces_rejected)}.`);
  if (j.error) lines.push(`Error: ${j.error}`);
  if (typeof j.elapsed_s === 'number') lines.push(`Took ${fmtSecs(j.elapsed_s)}.`);
  box.append(' ', h('span', lines.join(' ')), ' ');
  if (j.report) box.append(h('a', { href: j.report, download: `ingest-${j.id}-report.jsonl`, id: 'ingest-result-report' }, 'Download the report (JSON Lines)'));
  return box;
}

function jobsTable(jobs) {
  return table(null, [
    { label: 'Job', value: (j) => String(j.id), num: true },
    { label: 'Status', value: (j) => statusBadge(j.status) },
    { label: 'Collection', value: (j) => j.collection || '—' },
    { label: 'Source', value: (j) => j.source || '—', wrap: true },
    { label: 'From', value: (j) => j.origin === 'upload' ? `${plural(j.files || 0, 'file')} uploaded` : j.origin === 'path' ? h('code', j.path || '') : h('span', 'command line') },
    { label: 'Items', value: (j) => String(j.items_seen), num: true },
    { label: 'Images', value: (j) => String(j.images_indexed), num: true },
    { label: 'Faces', value: (j) => String(j.faces_indexed), num: true },
    { label: 'Duplicates', value: (j) => String(j.duplicates), num: true },
    { label: 'Rejected', value: (j) => j.faces_rejected_total ? h('abbr', { title: codes(j.faces_rejected) }, String(j.faces_rejected_total)) : '0', num: true },
    { label: 'Errors', value: (j) => j.errors ? h('abbr', { title: codes(j.errors_by_code) }, String(j.errors)) : '0', num: true },
    { label: 'By', value: (j) => j.created_by || '—' },
    { label: 'Finished', value: (j) => fmtTime(j.finished_at) },
    { label: 'Report', value: (j) => j.report ? h('a', { href: j.report, download: `ingest-${j.id}-report.jsonl` }, 'JSONL') : '—' },
  ], jobs, { id: 'jobs-table', empty: 'No ingest job yet.' });
}

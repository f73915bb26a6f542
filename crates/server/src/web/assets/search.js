// Search: choose or open a case, drop a photo or a short video, pick a face, review candidates.
// A photo is searched with its main face first; every detected face is drawn on it and choosing
// another one searches with that face (the same photo sent again with `faces`, a new audited
// search). A video is searched track by track (POST /v1/search/video).
import { get, post, api } from './api.js';
import { h, mount, msg, errorBox, field, busy, fmtTime, fmtNum, fmtRate } from './ui.js';

const CASE_KEY = 'visage.case_id';
const PHOTO_LIMIT = 32 * 1024 * 1024;
const VIDEO_LIMIT = 256 * 1024 * 1024;
const VIDEO_EXT = /\.(mp4|m4v|mov|3gp|mkv|webm|avi|ts|mts|m2ts)$/i;

/** Whether the chosen file is a video (by its type, else its name). */
function isVideo(f) {
  return (f.type || '').startsWith('video/') || VIDEO_EXT.test(f.name || '');
}

export async function searchPage({ main }) {
  document.title = 'Search · visage';
  const cases = (await get('/v1/cases')).filter((c) => c.status === 'open');
  let file = null;
  let objectUrl = null;

  // --- case chooser -------------------------------------------------------------------------
  const caseSelect = h('select#case', { name: 'case_id', required: true, 'aria-describedby': 'case-help' });
  const purpose = h('textarea#purpose', { name: 'purpose', required: true, minlength: 10, rows: 2, 'aria-describedby': 'purpose-help' });
  function fillCases(selected) {
    mount(caseSelect,
      h('option', { value: '' }, cases.length ? '— choose a case —' : '— no open case: open one below —'),
      cases.map((c) => h('option', { value: c.id, selected: String(c.id) === String(selected) }, `${c.number} · ${c.offence_category}`)));
    syncPurpose();
  }
  function chosenCase() { return cases.find((c) => String(c.id) === caseSelect.value) || null; }
  function syncPurpose() {
    const c = chosenCase();
    if (c && (!purpose.value || purpose.dataset.auto === '1')) { purpose.value = c.purpose; purpose.dataset.auto = '1'; }
    if (!c && purpose.dataset.auto === '1') purpose.value = '';
    if (c) sessionStorage.setItem(CASE_KEY, String(c.id));
    caseInfo();
  }
  purpose.addEventListener('input', () => { purpose.dataset.auto = '0'; });
  caseSelect.addEventListener('change', syncPurpose);
  const caseDetails = h('p.help#case-help');
  function caseInfo() {
    const c = chosenCase();
    mount(caseDetails, c
      ? `Legal basis: ${c.legal_basis}. Opened ${fmtTime(c.created_at)}. Every search is recorded under this case.`
      : 'A search must be made under an open case of your organisation.');
  }

  const newCaseMsg = h('div', { 'aria-live': 'polite' });
  const newCase = h('form.form#new-case-form', { novalidate: true },
    field('Case number', { name: 'number', type: 'text', required: true, id: 'nc-number' }),
    field('Purpose', { name: 'purpose', tag: 'textarea', rows: 2, required: true, id: 'nc-purpose' }, 'Why faces are searched in this case (at least 10 characters).'),
    field('Legal basis', { name: 'legal_basis', type: 'text', required: true, id: 'nc-legal' }, 'e.g. the warrant or statute that authorises the search.'),
    field('Offence category', { name: 'offence_category', type: 'text', required: true, id: 'nc-offence' }),
    h('div.actions', h('button.primary', { type: 'submit' }, 'Open case')),
    newCaseMsg);
  newCase.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const v = Object.fromEntries(['number', 'purpose', 'legal_basis', 'offence_category'].map((k) => [k, newCase.elements[k].value.trim()]));
    if (Object.values(v).some((x) => !x)) { mount(newCaseMsg, errorBox({ message: 'Fill in all four fields.' }, 'Cannot open the case')); return; }
    await busy(newCase, async () => {
      try {
        const c = await post('/v1/cases', v);
        cases.unshift(c);
        purpose.dataset.auto = '1';
        fillCases(c.id);
        newCase.reset();
        details.open = false;
        mount(newCaseMsg);
        mount(formMsg, msg('ok', `Case ${c.number} opened and selected.`));
        caseSelect.focus();
      } catch (e) { mount(newCaseMsg, errorBox(e, 'Cannot open the case')); }
    });
  });
  const details = h('details#new-case', { open: cases.length === 0 }, h('summary', 'Open a new case'), newCase);

  // --- photo or video -------------------------------------------------------------------------
  const fileInput = h('input#photo', { type: 'file', name: 'image', accept: 'image/*,video/*', 'aria-describedby': 'file-help' });
  const fileNote = h('p.help#file-note', { 'aria-live': 'polite' });
  const drop = h('label.drop', { for: 'photo' },
    h('strong', 'Drop a photo or a short video here'), h('br'),
    h('span.muted#file-help', 'or choose a file: a photo (JPEG, PNG, WebP, GIF, BMP, TIFF; up to 32 MiB) or a video clip (MP4, MOV, WebM, MKV, AVI; up to 2 minutes and 256 MiB)'),
    h('br'), fileInput, fileNote);
  function setFile(f) {
    file = f;
    mount(fileNote, f ? `${isVideo(f) ? 'Video' : 'Photo'}: ${f.name} (${(f.size / 1048576).toFixed(1)} MiB)` : '');
  }
  fileInput.addEventListener('change', () => setFile(fileInput.files[0] || null));
  drop.addEventListener('dragover', (ev) => { ev.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (ev) => {
    ev.preventDefault();
    drop.classList.remove('over');
    const f = ev.dataTransfer.files[0];
    if (!f) return;
    try { fileInput.files = ev.dataTransfer.files; } catch (_) { /* older browsers: keep the file anyway */ }
    setFile(f);
  });

  const k = field('Candidates per face or track', { name: 'k', type: 'number', min: 1, max: 100, value: '10', id: 'k' });
  const maxFmr = field('Largest false match rate', {
    name: 'max_fmr', id: 'max_fmr', value: '',
    options: [['', 'no limit (show the top candidates)'], ['0.001', '1 in 1,000'], ['0.0001', '1 in 10,000'], ['0.00001', '1 in 100,000'], ['0.000001', '1 in 1,000,000']],
  }, 'Needs a calibrated model pack; otherwise ignored with a warning.');

  const formMsg = h('div', { 'aria-live': 'polite' });
  const form = h('form.card.form#search-form', { novalidate: true },
    h('h2', '1. Case'),
    h('div.field', h('label', { for: 'case' }, 'Open case of your organisation'), caseSelect, caseDetails),
    h('div.field', h('label', { for: 'purpose' }, 'Purpose of this search'), purpose,
      h('p.help#purpose-help', 'Recorded in the audit log with the search; at least 10 characters.')),
    h('h2', '2. Probe photo or video'),
    drop, k, maxFmr,
    h('div.actions', h('button.primary#search-btn', { type: 'submit' }, 'Search')),
    formMsg);

  const results = h('section#results', { 'aria-live': 'polite', 'aria-label': 'Search results' },
    h('div.card', h('h2', 'Results'), h('p.muted', 'Choose a case and a photo or a short video, then search. Each face found in a photo is marked: choose one to search with it. A video is searched face track by face track.')));

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const c = chosenCase();
    if (!c) { mount(formMsg, errorBox({ message: 'Choose or open a case first: every search is made under a case.', code: 'case_required' }, 'No case')); caseSelect.focus(); return; }
    if (purpose.value.trim().length < 10) { mount(formMsg, errorBox({ message: 'State the purpose of this search (at least 10 characters).', code: 'purpose_required' }, 'No purpose')); purpose.focus(); return; }
    if (!file) { mount(formMsg, errorBox({ message: 'Choose or drop a photo or a video to search with.' }, 'No photo or video')); fileInput.focus(); return; }
    const video = isVideo(file);
    const limit = video ? VIDEO_LIMIT : PHOTO_LIMIT;
    if (file.size > limit) {
      mount(formMsg, errorBox({ message: `The ${video ? 'video' : 'photo'} is ${(file.size / 1048576).toFixed(0)} MiB; the limit is ${limit / 1048576} MiB.`, code: 'payload_too_large' }, 'File too large'));
      fileInput.focus();
      return;
    }
    // What this search was made with: choosing another face re-sends the same photo with it.
    const params = {
      file, case: c, purpose: purpose.value.trim(),
      k: form.elements.k.value || '10', max_fmr: form.elements.max_fmr.value,
    };
    mount(formMsg, msg('info', video ? 'Analysing the video…' : 'Searching…',
      video ? 'Every sampled frame is analysed and each face track searched; a clip takes a few seconds.' : null));
    await busy(form, async () => {
      try {
        const res = await api('POST', video ? '/v1/search/video' : '/v1/search', formData(params, video ? {} : { faces: 'main' }));
        mount(formMsg);
        if (objectUrl) URL.revokeObjectURL(objectUrl);
        objectUrl = null;
        if (video) {
          showVideoResults(results, res, c);
        } else {
          objectUrl = URL.createObjectURL(file);
          showResults(results, res, objectUrl, params);
        }
      } catch (e) {
        mount(formMsg, errorBox(e, 'The search failed'));
      }
    });
  });

  fillCases(sessionStorage.getItem(CASE_KEY));
  mount(main,
    h('h1', 'Search'),
    h('div.grid2', h('div', form, h('div.card', details)), results));
}

/** The multipart body of a search: the case fields first, the file last. */
function formData(params, extra) {
  const fd = new FormData();
  fd.append('case_id', String(params.case.id));
  fd.append('purpose', params.purpose);
  fd.append('k', params.k);
  if (params.max_fmr) fd.append('max_fmr', params.max_fmr);
  for (const [key, v] of Object.entries(extra)) fd.append(key, v);
  fd.append(isVideo(params.file) ? 'video' : 'image', params.file, params.file.name);
  return fd;
}

function reasonsText(u) {
  if (!u) return '';
  return Array.isArray(u) ? u.join(', ') : typeof u === 'string' ? u : JSON.stringify(u);
}

/** The result header: audit record, case link. */
function resultsHead(auditId, c) {
  return h('div.row', h('h2', 'Results'), h('span.spacer'),
    h('span.badge.ok#audit-id', `Audit record #${auditId}`),
    h('a.button.small', { href: `/app/cases/${c.id}`, 'data-link': true }, `Case ${c.number}`));
}

/**
 * Renders a photo search: the probe with every detected face boxed, then the chosen face's
 * candidates. Choosing a face that was not searched yet searches with it (same photo,
 * `faces` = its index): a new search, recorded under the case, whose audit number is shown.
 */
function showResults(root, res, imgUrl, params) {
  const c = params.case;
  // Every detected face (older servers listed only the searched ones).
  const detected = res.detected_faces || (res.probe_faces || []).map((f, i) => ({
    index: typeof f.index === 'number' ? f.index : i, bbox: f.bbox, det_score: f.det_score,
    quality: f.quality, usable: !f.unusable, searched: true,
  }));
  const known = new Map(); // face index -> { face, audit }
  function remember(r) {
    for (const f of r.probe_faces || []) known.set(typeof f.index === 'number' ? f.index : 0, { face: f, audit: r.audit_id });
  }
  remember(res);
  let chosen = (res.probe_faces || []).find((f) => (f.hits || []).length);
  chosen = chosen ? chosen.index ?? 0 : ((res.probe_faces || [])[0] || {}).index ?? 0;
  let searching = false;

  const img = h('img#probe-img', { src: imgUrl, alt: `Probe photo with ${detected.length} face(s) marked` });
  const boxes = h('div');
  const probe = h('div.probe', img, boxes);
  const list = h('div#candidates-wrap', { 'aria-live': 'polite' });
  const auditBadge = h('span.badge.ok#audit-id', `Audit record #${res.audit_id}`);
  const buttons = [];

  function boxLabel(f) {
    const n = f.index + 1;
    const k = known.get(f.index);
    const state = !f.usable ? `unusable (${reasonsText((f.quality || {}).reasons) || 'quality'})`
      : k ? `${(k.face.hits || []).length} candidates` : 'not searched yet: choose it to search with this face';
    return `Face ${n} of ${detected.length}: ${state}`;
  }

  function drawBoxes() {
    const W = img.naturalWidth, H = img.naturalHeight;
    if (!W || !H) return;
    buttons.length = 0;
    mount(boxes, detected.map((f) => {
      const [x1, y1, x2, y2] = f.bbox;
      const b = h('button.facebox' + (f.usable ? '' : '.unusable'), {
        type: 'button', 'aria-pressed': f.index === chosen ? 'true' : 'false',
        'aria-label': boxLabel(f), title: boxLabel(f),
        'data-face': f.index,
        on: { click: () => choose(f.index) },
      }, h('span', { 'aria-hidden': 'true' }, String(f.index + 1)));
      b.style.left = (100 * Math.max(0, x1) / W) + '%';
      b.style.top = (100 * Math.max(0, y1) / H) + '%';
      b.style.width = (100 * (Math.min(W, x2) - Math.max(0, x1)) / W) + '%';
      b.style.height = (100 * (Math.min(H, y2) - Math.max(0, y1)) / H) + '%';
      buttons.push(b);
      return b;
    }));
  }
  /** Updates the boxes in place (focus stays where it is). */
  function markBoxes() {
    for (const b of buttons) {
      const f = detected.find((d) => String(d.index) === b.dataset.face);
      b.setAttribute('aria-pressed', f.index === chosen ? 'true' : 'false');
      b.setAttribute('aria-label', boxLabel(f));
      b.title = boxLabel(f);
    }
  }
  img.addEventListener('load', drawBoxes);

  async function choose(i) {
    if (searching) return;
    chosen = i;
    markBoxes();
    if (known.has(i)) { drawList(); return; }
    searching = true;
    probe.setAttribute('aria-busy', 'true');
    mount(list, msg('info', `Searching with face ${i + 1}…`, 'A new search with the same photo, recorded under the case.'));
    try {
      const r = await api('POST', '/v1/search', formData(params, { faces: String(i) }));
      remember(r);
      markBoxes();
      drawList();
    } catch (e) {
      mount(list, errorBox(e, `The search with face ${i + 1} failed`));
    } finally {
      searching = false;
      probe.removeAttribute('aria-busy');
    }
  }

  function drawList() {
    const k = known.get(chosen);
    if (!detected.length) { mount(list, msg('warn', 'No face was found in this photo.')); return; }
    if (!k) { mount(list, msg('info', `Face ${chosen + 1} was not searched.`)); return; }
    const f = k.face;
    mount(auditBadge, `Audit record #${k.audit}`);
    const q = f.quality || {};
    const unusable = reasonsText(f.unusable);
    const hits = f.hits || [];
    mount(list,
      h('h3', `Face ${chosen + 1} of ${detected.length}: ${hits.length} candidate${hits.length === 1 ? '' : 's'}`),
      h('p.muted', `Detector score ${fmtNum(f.det_score, 2)} · quality ${fmtNum(q.score, 2)} · face ${Math.round(q.face_px || 0)} px · audit record #${k.audit}`
        + ((q.reasons || []).length ? ` · quality notes: ${q.reasons.join(', ')}` : '')),
      unusable ? msg('warn', 'This face could not be used', unusable) : null,
      hits.length
        ? h('ol.candidates#candidates', hits.map((hit, i) => candidate(hit, i)))
        : unusable ? null : msg('info', 'No candidate', 'No stored face is similar enough to this face (or it was withheld by an opt-out or the policy).'));
  }

  const warnings = res.warnings || [];
  mount(root,
    h('div.card',
      h('div.row', h('h2', 'Results'), h('span.spacer'), auditBadge,
        h('a.button.small', { href: `/app/cases/${c.id}`, 'data-link': true }, `Case ${c.number}`)),
      h('div.probe-row', probe, h('div.probe-meta',
        h('dl.kv',
          h('dt', 'Faces in photo'), h('dd', String(detected.length)),
          h('dt', 'Model'), h('dd', res.pack),
          h('dt', 'Searched'), h('dd', `${res.faces_searched} faces in ${(res.collections || []).join(', ') || 'all collections'}`),
          h('dt', 'Threshold'), h('dd', typeof res.threshold === 'number' ? fmtNum(res.threshold) : 'none'),
          h('dt', 'Scores'), h('dd', res.calibration ? 'calibrated: false match rates shown' : 'not calibrated')),
        detected.length > 1 ? h('p#choose-help', 'The main face was searched. To search with another face, choose it on the photo (Tab to a box, Enter to choose): that is a new search, recorded under the case.') : null,
        warnings.length ? h('div#warnings', warnings.map((w) => msg('warn', 'Warning', w))) : null))),
    h('div.card', list));
  drawList();
}

/** Seconds as m:ss.s */
function fmtClock(t) {
  if (typeof t !== 'number') return '—';
  const m = Math.floor(t / 60);
  const s = (t - m * 60).toFixed(1).padStart(4, '0');
  return `${m}:${s}`;
}

/** Renders a video search: a summary, then each face track with its candidates. */
function showVideoResults(root, res, c) {
  const tracks = res.tracks || [];
  const usable = tracks.filter((t) => !t.unusable);
  const unusable = tracks.filter((t) => t.unusable);
  const v = res.video || {};
  const warnings = res.warnings || [];
  mount(root,
    h('div.card#video-summary',
      resultsHead(res.audit_id, c),
      h('dl.kv',
        h('dt', 'Video'), h('dd', `${typeof v.duration_s === 'number' ? fmtClock(v.duration_s) + ' long, ' : ''}${v.frames_sampled} frames sampled at ${v.fps} per second`),
        h('dt', 'Face tracks'), h('dd', `${tracks.length} (${usable.length} searched, ${unusable.length} could not be used)`),
        h('dt', 'Model'), h('dd', res.pack),
        h('dt', 'Searched'), h('dd', `${res.faces_searched} faces in ${(res.collections || []).join(', ') || 'all collections'}`),
        h('dt', 'Threshold'), h('dd', typeof res.threshold === 'number' ? fmtNum(res.threshold) : 'none'),
        h('dt', 'Scores'), h('dd', res.calibration ? 'calibrated: false match rates shown' : 'not calibrated')),
      h('p.muted', 'A track is one appearance of a face across the sampled frames; each is searched with its best faces.'),
      warnings.length ? h('div#warnings', warnings.map((w) => msg('warn', 'Warning', w))) : null),
    usable.length
      ? h('ol.tracks#tracks', { 'aria-label': 'Face tracks and their candidates' }, usable.map(trackCard))
      : h('div.card', msg('warn', 'No usable face', 'No face of this video passed the quality gate; see the tracks below.')),
    unusable.length
      ? h('details.card#unusable-tracks', h('summary', `${unusable.length} track${unusable.length === 1 ? '' : 's'} could not be used`),
          h('ol.tracks', unusable.map(trackCard)))
      : null);
}

function trackCard(t) {
  const hits = t.hits || [];
  const bf = t.best_face || {};
  const q = bf.quality || {};
  const n = t.track_id + 1;
  const headId = `track-${t.track_id}-title`;
  const range = `${fmtClock(t.first_t)} – ${fmtClock(t.last_t)}`;
  return h('li.track' + (t.unusable ? '.unusable' : '.card'), {
    id: `track-${t.track_id}`, 'data-track': t.track_id,
    'data-label': hits.length && hits[0].face && hits[0].face.subject ? hits[0].face.subject.label : '',
    'aria-labelledby': headId,
  },
    h('div.track-head',
      t.thumbnail
        ? h('img.track-thumb', { src: t.thumbnail, alt: `Track ${n}: the best face, at ${fmtClock(bf.t)}` })
        : h('div.track-thumb', { role: 'img', 'aria-label': 'no picture' }),
      h('div',
        h('h3', { id: headId }, `Track ${n}: ${range}`),
        h('p.muted', `Seen in ${t.frames_seen} sampled frame${t.frames_seen === 1 ? '' : 's'} · best face at ${fmtClock(bf.t)}, quality ${fmtNum(q.score, 2)}, ${Math.round(q.face_px || 0)} px`
          + (t.unusable ? '' : ` · searched with ${t.faces_used} face${t.faces_used === 1 ? '' : 's'}`)),
        t.unusable ? msg('warn', 'This face could not be used', reasonsText(t.unusable))
          : h('p', h('strong', `${hits.length} candidate${hits.length === 1 ? '' : 's'}`)))),
    t.unusable ? null
      : hits.length
        ? h('ol.candidates', { id: `track-${t.track_id}-candidates`, 'aria-label': `Candidates for track ${n}` }, hits.map((hit, i) => candidate(hit, i)))
        : msg('info', 'No candidate', 'No stored face is similar enough to this face (or it was withheld by an opt-out or the policy).'));
}

function candidate(hit, i) {
  const f = hit.face || {};
  const img = f.image || {};
  const src = f.source || {};
  const label = f.subject ? f.subject.label : null;
  const link = [img.page_uri, img.uri].find((u) => typeof u === 'string' && /^https?:\/\//.test(u));
  const where = img.page_uri || img.uri || '';
  const meter = h('div');
  meter.style.width = Math.max(0, Math.min(100, hit.score * 100)) + '%';
  const fmr = typeof hit.fmr === 'number'
    ? `${fmtRate(hit.fmr)}${hit.fmr_extrapolated ? ' (extrapolated)' : ''}`
    : 'uncalibrated';
  return h('li.candidate', { 'data-face-id': f.id, 'data-label': label || '' },
    h('img.thumb', { src: `/v1/faces/${f.id}/thumbnail`, alt: `Candidate ${i + 1}${label ? ': ' + label : ''}`, loading: 'lazy' }),
    h('h3', h('span.label', label || `face ${f.id}`), h('span.rank', `#${i + 1}`)),
    h('div.score', { title: 'cosine similarity' }, fmtNum(hit.score)),
    h('div.meter', { 'aria-hidden': 'true' }, meter),
    h('dl.kv',
      h('dt', h('abbr', { title: 'estimated false match rate at this similarity' }, 'FMR')), h('dd', fmr),
      h('dt', h('abbr', { title: 'expected false matches at this similarity in a gallery of this size' }, 'Exp. false')), h('dd', typeof hit.expected_false_matches === 'number' ? fmtNum(hit.expected_false_matches, 2) : '—'),
      h('dt', 'Source'), h('dd', src.name || '—'),
      h('dt', 'Photo'), h('dd', link ? h('a', { href: link, rel: 'noopener noreferrer', target: '_blank', title: where }, shorten(where)) : h('span', { title: where }, shorten(where) || '—')),
      h('dt', 'Captured'), h('dd', fmtTime(img.captured_at)),
      h('dt', 'Jurisd.'), h('dd', img.jurisdiction || src.jurisdiction || 'unknown'),
      h('dt', 'Face id'), h('dd', String(f.id))));
}

/** The last path segment of a file path or URL (the full text is in the title). */
function shorten(s) {
  if (!s) return '';
  const last = s.replace(/[?#].*$/, '').split('/').filter(Boolean).pop() || s;
  return last.length > 28 ? last.slice(0, 27) + '…' : last;
}

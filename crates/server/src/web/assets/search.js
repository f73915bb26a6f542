// Search: choose or open a case, drop a photo, pick a face, review candidates.
import { get, post, api } from './api.js';
import { h, mount, msg, errorBox, field, busy, fmtTime, fmtNum, fmtRate } from './ui.js';

const CASE_KEY = 'visage.case_id';

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

  // --- photo --------------------------------------------------------------------------------
  const fileInput = h('input#photo', { type: 'file', name: 'image', accept: 'image/*' });
  const drop = h('label.drop', { for: 'photo' },
    h('strong', 'Drop a photo here'), h('br'), h('span.muted', 'or choose a file (JPEG, PNG, WebP, GIF, BMP, TIFF; up to 32 MiB)'), h('br'), fileInput);
  function setFile(f) { file = f; }
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

  const k = field('Candidates per face', { name: 'k', type: 'number', min: 1, max: 100, value: '10', id: 'k' });
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
    h('h2', '2. Probe photo'),
    drop, k, maxFmr,
    h('div.actions', h('button.primary#search-btn', { type: 'submit' }, 'Search')),
    formMsg);

  const results = h('section#results', { 'aria-live': 'polite', 'aria-label': 'Search results' },
    h('div.card', h('h2', 'Results'), h('p.muted', 'Choose a case and a photo, then search. Each face found in the photo is marked; choose one to see its candidates.')));

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const c = chosenCase();
    if (!c) { mount(formMsg, errorBox({ message: 'Choose or open a case first: every search is made under a case.', code: 'case_required' }, 'No case')); caseSelect.focus(); return; }
    if (purpose.value.trim().length < 10) { mount(formMsg, errorBox({ message: 'State the purpose of this search (at least 10 characters).', code: 'purpose_required' }, 'No purpose')); purpose.focus(); return; }
    if (!file) { mount(formMsg, errorBox({ message: 'Choose or drop a photo to search with.' }, 'No photo')); fileInput.focus(); return; }
    const fd = new FormData();
    fd.append('image', file, file.name);
    fd.append('case_id', String(c.id));
    fd.append('purpose', purpose.value.trim());
    fd.append('k', form.elements.k.value || '10');
    if (form.elements.max_fmr.value) fd.append('max_fmr', form.elements.max_fmr.value);
    mount(formMsg, msg('info', 'Searching…'));
    await busy(form, async () => {
      try {
        const res = await api('POST', '/v1/search', fd);
        mount(formMsg);
        if (objectUrl) URL.revokeObjectURL(objectUrl);
        objectUrl = URL.createObjectURL(file);
        showResults(results, res, objectUrl, c);
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

/** Renders a search response: the probe with face boxes, then the chosen face's candidates. */
function showResults(root, res, imgUrl, c) {
  const faces = res.probe_faces || [];
  let chosen = faces.findIndex((f) => (f.hits || []).length) ;
  if (chosen < 0) chosen = 0;
  const img = h('img#probe-img', { src: imgUrl, alt: `Probe photo with ${faces.length} face(s) marked` });
  const boxes = h('div');
  const probe = h('div.probe', img, boxes);
  const list = h('div#candidates-wrap');

  function drawBoxes() {
    const W = img.naturalWidth, H = img.naturalHeight;
    if (!W || !H) return;
    mount(boxes, faces.map((f, i) => {
      const [x1, y1, x2, y2] = f.bbox;
      const usable = !f.unusable || (Array.isArray(f.unusable) && !f.unusable.length);
      const b = h('button.facebox' + (usable ? '' : '.unusable'), {
        type: 'button', 'aria-pressed': i === chosen ? 'true' : 'false',
        'aria-label': `Face ${i + 1}: ${(f.hits || []).length} candidates${usable ? '' : ', unusable'}`,
        'data-face': i,
        on: { click: () => { chosen = i; drawBoxes(); drawList(); } },
      }, h('span', { 'aria-hidden': 'true' }, String(i + 1)));
      b.style.left = (100 * Math.max(0, x1) / W) + '%';
      b.style.top = (100 * Math.max(0, y1) / H) + '%';
      b.style.width = (100 * (Math.min(W, x2) - Math.max(0, x1)) / W) + '%';
      b.style.height = (100 * (Math.min(H, y2) - Math.max(0, y1)) / H) + '%';
      return b;
    }));
  }
  img.addEventListener('load', drawBoxes);

  function drawList() {
    const f = faces[chosen];
    if (!f) { mount(list, msg('warn', 'No face was found in this photo.')); return; }
    const q = f.quality || {};
    const unusable = f.unusable ? (Array.isArray(f.unusable) ? f.unusable.join(', ') : typeof f.unusable === 'string' ? f.unusable : JSON.stringify(f.unusable)) : '';
    const hits = f.hits || [];
    mount(list,
      h('h3', `Face ${chosen + 1} of ${faces.length}: ${hits.length} candidate${hits.length === 1 ? '' : 's'}`),
      h('p.muted', `Detector score ${fmtNum(f.det_score, 2)} · quality ${fmtNum(q.score, 2)} · face ${Math.round(q.face_px || 0)} px`
        + ((q.reasons || []).length ? ` · quality notes: ${q.reasons.join(', ')}` : '')),
      unusable ? msg('warn', 'This face could not be used', unusable) : null,
      hits.length
        ? h('ol.candidates#candidates', hits.map((hit, i) => candidate(hit, i)))
        : msg('info', 'No candidate', 'No stored face is similar enough to this face (or it was withheld by an opt-out or the policy).'));
  }

  const warnings = res.warnings || [];
  mount(root,
    h('div.card',
      h('div.row', h('h2', 'Results'), h('span.spacer'),
        h('span.badge.ok#audit-id', `Audit record #${res.audit_id}`),
        h('a.button.small', { href: `/app/cases/${c.id}`, 'data-link': true }, `Case ${c.number}`)),
      h('div.probe-row', probe, h('div.probe-meta',
        h('dl.kv',
          h('dt', 'Faces in photo'), h('dd', String(faces.length)),
          h('dt', 'Model'), h('dd', res.pack),
          h('dt', 'Searched'), h('dd', `${res.faces_searched} faces in ${(res.collections || []).join(', ') || 'all collections'}`),
          h('dt', 'Threshold'), h('dd', typeof res.threshold === 'number' ? fmtNum(res.threshold) : 'none'),
          h('dt', 'Scores'), h('dd', res.calibration ? 'calibrated: false match rates shown' : 'not calibrated')),
        faces.length > 1 ? h('p', `Choose a face on the photo (Tab to a box, Enter to choose).`) : null,
        warnings.length ? h('div#warnings', warnings.map((w) => msg('warn', 'Warning', w))) : null))),
    h('div.card', list));
  drawList();
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

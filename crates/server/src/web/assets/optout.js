// Public portal: opt-out and access requests by selfie, and their status (no sign-in).
import { api, get } from './api.js';
import { h, mount, msg, errorBox, busy, fmtTime } from './ui.js';

const form = document.getElementById('request-form');
const formMsg = document.getElementById('form-msg');
const status = document.getElementById('status');
const lookup = document.getElementById('lookup-form');

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const files = [...form.selfie.files];
  const contact = form.contact.value.trim();
  const kind = form.kind.value;
  if (!files.length || files.length > 5) { mount(formMsg, errorBox({ message: 'Choose between 1 and 5 photos of your face.' }, 'No photo')); form.selfie.focus(); return; }
  if (!contact) { mount(formMsg, errorBox({ message: 'Give an e-mail or postal address so we can reach you about the request.' }, 'No contact')); form.contact.focus(); return; }
  const fd = new FormData();
  files.forEach((f) => fd.append('selfie', f, f.name));
  fd.append('contact', contact);
  mount(formMsg, msg('info', 'Sending your request… this can take a minute.'));
  await busy(form, async () => {
    try {
      const res = await api('POST', `/v1/public/${kind}`, fd);
      mount(formMsg);
      form.reset();
      history.replaceState(null, '', `/optout?request=${encodeURIComponent(res.request_id)}`);
      if (kind === 'access') showAccess(res); else await showStatus(res.request_id, res);
    } catch (e) {
      const hint = e.code === 'no_usable_face' || e.code === 'no_face_detected'
        ? ' Use a clear, well-lit photo showing your whole face from the front.' : '';
      mount(formMsg, errorBox({ message: e.message + hint, code: e.code }, 'The request could not be completed'));
    }
  });
});

lookup.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const id = lookup.request_id.value.trim();
  if (!id) return;
  history.replaceState(null, '', `/optout?request=${encodeURIComponent(id)}`);
  await showStatus(id);
});

/** The status page of a request: GET /v1/public/requests/{id}. */
async function showStatus(id, fresh) {
  let r;
  try {
    r = await get(`/v1/public/requests/${encodeURIComponent(id)}`);
  } catch (e) {
    mount(status, e.status === 404 ? msg('error', 'No such request', `There is no request with id ${id}.`) : errorBox(e, 'Cannot show the request'));
    status.focus();
    return;
  }
  const s = r.summary || {};
  const rc = r.receipt || (fresh && fresh.receipt);
  const done = r.status === 'completed';
  mount(status,
    h('h2', { tabindex: -1, id: 'status-h' }, r.kind === 'opt_out' ? 'Opt-out request' : 'Access request'),
    done ? msg('ok', r.kind === 'opt_out' ? 'Your opt-out is complete' : 'Your request is complete',
      r.kind === 'opt_out'
        ? `${s.faces_deleted ?? 0} stored face(s) matching your photo were deleted, and your face is now on the suppression list: it is kept out of future searches and collections.`
        : `${s.faces_found ?? s.faces ?? 0} face(s) were found.`)
      : msg('info', `Status: ${r.status}`),
    h('div.card', h('dl.kv#request-details',
      h('dt', 'Request id'), h('dd', h('code#request-id-value', r.request_id)),
      h('dt', 'Status'), h('dd', h('span.badge' + (done ? '.ok' : ''), r.status)),
      h('dt', 'Received'), h('dd', fmtTime(r.created_at)),
      r.kind === 'opt_out' ? [h('dt', 'Faces deleted'), h('dd', String(s.faces_deleted ?? '—'))] : null,
      (s.unusable_selfies || []).length ? [h('dt', 'Photos not used'), h('dd', s.unusable_selfies.join('; '))] : null,
      rc ? [h('dt', 'Receipt id'), h('dd', h('code#receipt-id', rc.id)),
        h('dt', 'Issued'), h('dd', fmtTime(rc.issued_at)),
        h('dt', 'Signature (Ed25519)'), h('dd', h('code.wrap', rc.signature_hex)),
        h('dt', 'Signing key'), h('dd', h('code', rc.public_key_hex))] : null)),
    h('p', 'Keep the request id: this page shows the request again at ', h('a', { href: `/optout?request=${encodeURIComponent(r.request_id)}` }, 'this address'), '.'),
    rc ? h('details', h('summary', 'The signed receipt (JSON)'), h('pre', JSON.stringify(rc, null, 2))) : null);
  document.getElementById('status-h').focus();
}

function showAccess(res) {
  const rep = res.report || {};
  const faces = rep.faces || [];
  mount(status,
    h('h2', { tabindex: -1, id: 'status-h' }, 'What is held about you'),
    msg(faces.length ? 'warn' : 'ok', faces.length ? `${faces.length} stored face(s) match your photo` : 'No stored face matches your photo'),
    h('p', 'Request id ', h('code#request-id-value', res.request_id), '. To have these removed, send an opt-out request with the same photo.'),
    faces.length ? h('ul.candidates', faces.map((f) => h('li.candidate',
      f.thumbnail ? h('img.thumb', { src: f.thumbnail, alt: 'A stored photo of a face matching yours' }) : null,
      h('dl.kv',
        h('dt', 'Source'), h('dd', (f.source || {}).name || '—'),
        h('dt', 'Photo'), h('dd', (f.image || {}).page_uri || (f.image || {}).uri || '—'),
        h('dt', 'Captured'), h('dd', fmtTime((f.image || {}).captured_at)),
        h('dt', 'Legal basis'), h('dd', (f.image || {}).legal_basis || (f.source || {}).legal_basis || '—'))))) : null);
  document.getElementById('status-h').focus();
}

const initial = new URLSearchParams(location.search).get('request');
if (initial) { lookup.request_id.value = initial; showStatus(initial); }

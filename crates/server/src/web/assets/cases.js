// Cases: the organisation's cases and one case's report (what was searched under it).
import { get, post } from './api.js';
import { h, mount, msg, errorBox, table, fmtTime } from './ui.js';

export async function casesPage({ main }) {
  document.title = 'Cases · visage';
  const cases = await get('/v1/cases');
  mount(main,
    h('div.row', h('h1', 'Cases'), h('span.spacer'),
      h('a.button', { href: '/app/search', 'data-link': true }, 'Open a case from the search page')),
    h('p.muted', 'Every search is made under a case of your organisation; its report lists each search with the probe\'s SHA-256 and the returned faces, from the audit log.'),
    table(null, [
      { label: 'Number', value: (c) => h('a', { href: `/app/cases/${c.id}`, 'data-link': true }, c.number) },
      { label: 'Purpose', value: (c) => c.purpose, wrap: true },
      { label: 'Legal basis', value: (c) => c.legal_basis, wrap: true },
      { label: 'Offence', value: (c) => c.offence_category },
      { label: 'Status', value: (c) => h('span.badge' + (c.status === 'open' ? '.ok' : ''), c.status) },
      { label: 'Opened', value: (c) => fmtTime(c.created_at) },
      { label: 'Report', value: (c) => h('a', { href: `/v1/cases/${c.id}/report.html`, target: '_blank', rel: 'noopener' }, 'Printable') },
    ], cases, { empty: 'No case yet.', id: 'cases-table' }));
}

export async function casePage({ main, me }, id) {
  document.title = `Case ${id} · visage`;
  const c = await get(`/v1/cases/${id}`);
  document.title = `Case ${c.number} · visage`;
  const reportBox = h('section#report', { 'aria-live': 'polite' }, h('p.muted', 'Loading the report…'));
  const closeMsg = h('div', { 'aria-live': 'polite' });
  const closeBtn = c.status === 'open'
    ? h('button.danger', { type: 'button', on: { click: async () => {
        if (!confirm(`Close case ${c.number}? No further searches can be made under it.`)) return;
        try { await post(`/v1/cases/${id}/close`); await casePage({ main, me }, id); } catch (e) { mount(closeMsg, errorBox(e, 'Cannot close the case')); }
      } } }, 'Close case')
    : null;
  mount(main,
    h('p', h('a', { href: '/app/cases', 'data-link': true }, '← All cases')),
    h('div.row', h('h1', `Case ${c.number}`), h('span.badge' + (c.status === 'open' ? '.ok' : ''), c.status), h('span.spacer'),
      h('a.button.primary#report-html', { href: `/v1/cases/${id}/report.html`, target: '_blank', rel: 'noopener' }, 'Printable report (HTML)'),
      h('a.button#report-json', { href: `/v1/cases/${id}/report`, target: '_blank', rel: 'noopener' }, 'Report as JSON'),
      closeBtn),
    closeMsg,
    h('div.card', h('dl.kv',
      h('dt', 'Purpose'), h('dd', c.purpose),
      h('dt', 'Legal basis'), h('dd', c.legal_basis),
      h('dt', 'Offence category'), h('dd', c.offence_category),
      h('dt', 'Opened'), h('dd', fmtTime(c.created_at)),
      h('dt', 'Closed'), h('dd', fmtTime(c.closed_at)))),
    reportBox);
  try {
    const r = await get(`/v1/cases/${id}/report`);
    const searches = r.searches || [];
    const other = r.other_events || [];
    mount(reportBox,
      h('h2', `Searches under this case (${searches.length})`),
      table(null, [
        { label: 'Audit #', value: (s) => String(s.audit_seq), num: true },
        { label: 'Time', value: (s) => fmtTime(s.ts) },
        { label: 'By', value: (s) => s.actor },
        { label: 'Action', value: (s) => s.action },
        { label: 'Purpose', value: (s) => s.purpose || '—', wrap: true },
        { label: 'Outcome', value: (s) => s.allowed ? h('span.badge.ok', 'allowed') : h('span.badge.bad', 'refused') },
        { label: 'Rule', value: (s) => s.rule },
        { label: 'Results', value: (s) => s.result_count === null || s.result_count === undefined ? '—' : String(s.result_count), num: true },
        { label: 'Faces returned', value: (s) => (s.face_ids || []).join(', ') || '—', wrap: true },
        { label: 'Probe SHA-256', value: (s) => h('code', { title: s.probe_sha256 || '' }, (s.probe_sha256 || '—').slice(0, 16)) },
      ], searches, { empty: 'No search under this case yet.', id: 'report-searches' }),
      other.length ? h('h2', 'Other events') : null,
      other.length ? table(null, [
        { label: 'Audit #', value: (e) => String(e[0]), num: true },
        { label: 'Time', value: (e) => fmtTime(e[1]) },
        { label: 'By', value: (e) => e[2] },
        { label: 'Event', value: (e) => e[3] },
      ], other) : null,
      h('p.muted', 'Audit head at report time: #', String(r.audit_head_seq), ' ', h('code', r.audit_head_hash || '')));
  } catch (e) {
    mount(reportBox, e.status === 403 ? msg('info', 'Report not available', 'Your role may not export case reports.') : errorBox(e, 'Cannot load the report'));
  }
}

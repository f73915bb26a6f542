// Audit: the chain's verification status and the records, page by page.
import { get } from './api.js';
import { h, mount, errorBox, table, fmtTime } from './ui.js';

const PAGE = 50;

export async function auditPage({ main, me }) {
  document.title = 'Audit · visage';
  const banner = h('div#verify-box', { 'aria-live': 'polite' }, h('p.muted', 'Verifying the audit chain…'));
  const recordsBox = h('div#records');
  const pager = h('div.pager');
  const starts = [0];
  mount(main,
    h('div.row', h('h1', 'Audit log'), h('span.spacer'),
      me.operator ? h('a.button', { href: '/v1/audit/export', download: 'visage-audit.jsonl' }, 'Export all (JSONL)') : null,
      h('button#reverify', { type: 'button', on: { click: verify } }, 'Verify again')),
    banner, h('h2', 'Records'),
    h('p.muted', me.operator ? 'All organisations\' records.' : `Records of ${me.org.name}.`),
    recordsBox, pager);

  async function verify() {
    try {
      const v = await get('/v1/audit/verify');
      const ok = v.ok === true;
      mount(banner, h('div.verify.' + (ok ? 'ok' : 'bad'), { role: 'status', 'data-ok': ok ? 'true' : 'false' },
        h('span.icon', { 'aria-hidden': 'true' }, ok ? '✓' : '✗'),
        h('div',
          h('h2', ok ? 'Audit chain verified' : 'Audit chain verification FAILED'),
          h('p', ok
            ? `${v.records} records, hash chain intact up to #${v.head_seq}; ${v.checkpoints} signed checkpoint(s)${v.unsigned_tail ? `, ${v.unsigned_tail} record(s) after the last checkpoint` : ''}.`
            : `The chain breaks at record #${v.first_bad ?? '?'}: records were altered, removed or reordered. Preserve the data directory and investigate.`),
          h('p.muted', 'Head hash ', h('code', v.head_hash || '—'), ' · signing key ', h('code', (v.public_key_hex || '').slice(0, 16) + '…')))));
    } catch (e) {
      mount(banner, h('div.verify.bad', { role: 'alert', 'data-ok': 'false' }, h('span.icon', '✗'), h('div', h('h2', 'Could not verify the audit chain'), h('p', `${e.message} (${e.code})`))));
    }
  }

  async function load(i) {
    try {
      const page = await get(`/v1/audit?after_seq=${starts[i]}&limit=${PAGE}`);
      const recs = page.records || [];
      if (page.next_after_seq !== null && page.next_after_seq !== undefined) starts[i + 1] = page.next_after_seq;
      mount(recordsBox, table(null, [
        { label: '#', value: (r) => String(r.seq), num: true },
        { label: 'Time', value: (r) => fmtTime(r.ts) },
        { label: 'Actor', value: (r) => r.actor },
        { label: 'Org', value: (r) => r.org_id === null ? '—' : String(r.org_id), num: true },
        { label: 'Case', value: (r) => r.case_id === null ? '—' : String(r.case_id), num: true },
        { label: 'Action', value: (r) => r.action },
        { label: 'Outcome', value: (r) => r.allowed ? h('span.badge.ok', 'allowed') : h('span.badge.bad', 'refused') },
        { label: 'Rule', value: (r) => r.rule, wrap: true },
        { label: 'Results', value: (r) => r.result_count === null ? '—' : String(r.result_count), num: true },
        { label: 'Objects', value: (r) => (r.object_ids || []).join(', ') || '—', wrap: true },
        { label: 'Hash', value: (r) => h('code', { title: r.hash }, r.hash.slice(0, 12)) },
      ], recs, { empty: 'No record.', id: 'audit-table' }));
      const more = page.next_after_seq !== null && page.next_after_seq !== undefined;
      mount(pager,
        h('button', { type: 'button', disabled: i === 0, on: { click: () => load(i - 1) } }, '← Previous'),
        h('span.muted', `Page ${i + 1}`),
        h('button', { type: 'button', disabled: !more, on: { click: () => load(i + 1) } }, 'Next →'));
    } catch (e) {
      mount(recordsBox, errorBox(e, 'Cannot load the audit records'));
    }
  }

  await Promise.all([verify(), load(0)]);
}

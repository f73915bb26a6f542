// Administration: organisations, users, API keys (secret shown once) and the policy in force.
import { get, post, api } from './api.js';
import { h, mount, msg, errorBox, table, field, busy, values, fmtTime } from './ui.js';

const ROLES = ['investigator', 'auditor', 'compliance', 'admin'];
const KINDS = ['law_enforcement', 'government', 'private', 'research'];

export async function adminPage(ctx) {
  const { main, me } = ctx;
  document.title = 'Administration · visage';
  const [orgs, users, keys, policy] = await Promise.all([
    get('/v1/orgs'), get('/v1/users'), get('/v1/keys'),
    get('/v1/policy').catch((e) => ({ error: e })),
  ]);
  const orgName = (id) => (orgs.find((o) => o.id === id) || {}).name || String(id);
  const userName = (id) => (users.find((u) => u.id === id) || {}).username || String(id);
  const reload = () => adminPage(ctx);

  // --- organisations ------------------------------------------------------------------------
  const orgMsg = h('div', { 'aria-live': 'polite' });
  const orgForm = me.operator ? h('form.card.form.inline-form#org-form', { novalidate: true },
    field('Name', { name: 'name', type: 'text', required: true }),
    field('Kind', { name: 'kind', options: KINDS.map((k) => [k, k.replace('_', ' ')]) }),
    field('Jurisdiction (ISO 3166)', { name: 'jurisdiction', type: 'text', required: true, placeholder: 'GB, FR, US-NY' }),
    field('Status', { name: 'status', options: [['active', 'active'], ['trial', 'trial'], ['suspended', 'suspended']] }),
    h('div.actions', h('button.primary', { type: 'submit' }, 'Create organisation'))) : null;
  if (orgForm) orgForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    await busy(orgForm, async () => {
      try { await post('/v1/orgs', values(orgForm)); await reload(); } catch (e) { mount(orgMsg, errorBox(e, 'Cannot create the organisation')); }
    });
  });
  const setStatus = (o, status) => async () => {
    try { await api('PATCH', `/v1/orgs/${o.id}`, { status }); await reload(); } catch (e) { mount(orgMsg, errorBox(e, 'Cannot change the organisation')); }
  };

  // --- users --------------------------------------------------------------------------------
  const userMsg = h('div', { 'aria-live': 'polite' });
  const userForm = h('form.card.form.inline-form#user-form', { novalidate: true },
    me.operator ? field('Organisation', { name: 'org_id', options: orgs.map((o) => [o.id, o.name]), value: me.org.id }) : null,
    field('Username', { name: 'username', type: 'text', required: true, autocomplete: 'off' }),
    field('Role', { name: 'role', options: ROLES.map((r) => [r, r]) }),
    field('Password (12+ characters; empty for key-only)', { name: 'password', type: 'password', autocomplete: 'new-password' }),
    h('div.actions', h('button.primary', { type: 'submit' }, 'Create user')));
  userForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const v = values(userForm);
    if (v.org_id) v.org_id = Number(v.org_id);
    await busy(userForm, async () => {
      try { await post('/v1/users', v); await reload(); } catch (e) { mount(userMsg, errorBox(e, 'Cannot create the user')); }
    });
  });
  const toggleUser = (u) => async () => {
    try { await post(`/v1/users/${u.id}/${u.disabled ? 'enable' : 'disable'}`); await reload(); } catch (e) { mount(userMsg, errorBox(e, 'Cannot change the user')); }
  };

  // --- keys ---------------------------------------------------------------------------------
  const keyMsg = h('div#key-secret', { 'aria-live': 'polite' });
  const keyForm = h('form.card.form.inline-form#key-form', { novalidate: true },
    field('User', { name: 'user_id', options: users.filter((u) => !u.disabled).map((u) => [u.id, `${u.username} (${u.role}, ${orgName(u.org_id)})`]) }),
    field('Key name', { name: 'name', type: 'text', required: true, placeholder: 'e.g. nightly-export script' }),
    h('div.actions', h('button.primary', { type: 'submit' }, 'Create API key')));
  keyForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const v = values(keyForm);
    if (!v.name) { mount(keyMsg, errorBox({ message: 'Give the key a name.' }, 'Cannot create the key')); return; }
    await busy(keyForm, async () => {
      try {
        const k = await post(`/v1/users/${v.user_id}/keys`, { name: v.name });
        await reload();
        const secret = h('code#new-secret', k.secret);
        mount(document.getElementById('key-secret'), msg('ok', 'API key created. Copy the secret now: it is shown only this once and cannot be recovered.'),
          h('div.card.row', secret, h('button.small', { type: 'button', on: { click: () => navigator.clipboard && navigator.clipboard.writeText(k.secret) } }, 'Copy')));
      } catch (e) { mount(keyMsg, errorBox(e, 'Cannot create the key')); }
    });
  });
  const revoke = (k) => async () => {
    if (!confirm(`Revoke key ${k.name} (${k.id})? Scripts using it stop working at once.`)) return;
    try { await api('DELETE', `/v1/keys/${k.id}`); await reload(); } catch (e) { mount(keyMsg, errorBox(e, 'Cannot revoke the key')); }
  };

  mount(main,
    h('h1', 'Administration'),
    h('p.muted', me.operator ? 'You administer the operator organisation: every organisation is shown.' : `You administer ${me.org.name}.`),
    h('nav.row', { 'aria-label': 'Sections' }, ['Organisations', 'Users', 'API keys', 'Policy'].map((s) => h('a.button.small', { href: '#' + s.toLowerCase().replace(' ', '-') }, s))),
    h('h2#organisations', 'Organisations'),
    table(null, [
      { label: 'Id', value: (o) => String(o.id), num: true },
      { label: 'Name', value: (o) => o.name },
      { label: 'Kind', value: (o) => o.kind },
      { label: 'Jurisdiction', value: (o) => o.jurisdiction },
      { label: 'Status', value: (o) => h('span.badge' + (o.status === 'active' ? '.ok' : o.status === 'suspended' ? '.bad' : '.warn'), o.status) },
      { label: 'Trial until', value: (o) => fmtTime(o.trial_expires_at) },
      { label: 'Monthly searches', value: (o) => o.search_quota === null ? 'unlimited' : String(o.search_quota), num: true },
      { label: 'Created', value: (o) => fmtTime(o.created_at) },
      ...(me.operator ? [{ label: 'Actions', value: (o) => o.id === me.org.id ? '—' : o.status === 'suspended'
        ? h('button.small', { type: 'button', on: { click: setStatus(o, 'active') } }, 'Reactivate')
        : h('button.small.danger', { type: 'button', on: { click: setStatus(o, 'suspended') } }, 'Suspend') }] : []),
    ], orgs, { id: 'orgs-table' }),
    orgForm, orgMsg,
    h('h2#users', 'Users'),
    table(null, [
      { label: 'Id', value: (u) => String(u.id), num: true },
      { label: 'Username', value: (u) => u.username },
      { label: 'Role', value: (u) => u.role },
      { label: 'Organisation', value: (u) => orgName(u.org_id) },
      { label: 'Sign-in', value: (u) => u.has_password ? 'password' : 'API key only' },
      { label: 'Status', value: (u) => u.disabled ? h('span.badge.bad', 'disabled') : h('span.badge.ok', 'active') },
      { label: 'Created', value: (u) => fmtTime(u.created_at) },
      { label: 'Actions', value: (u) => u.id === me.user_id ? '—' : h('button.small' + (u.disabled ? '' : '.danger'), { type: 'button', on: { click: toggleUser(u) } }, u.disabled ? 'Enable' : 'Disable') },
    ], users, { id: 'users-table' }),
    userForm, userMsg,
    h('h2#api-keys', 'API keys'),
    h('p.muted', 'Keys are stored only as SHA-256 hashes: a secret is shown once, when the key is created.'),
    table(null, [
      { label: 'Key id', value: (k) => h('code', k.id) },
      { label: 'Name', value: (k) => k.name },
      { label: 'User', value: (k) => userName(k.user_id) },
      { label: 'Role', value: (k) => k.role },
      { label: 'Created', value: (k) => fmtTime(k.created_at) },
      { label: 'Status', value: (k) => k.revoked_at ? h('span.badge.bad', 'revoked ' + fmtTime(k.revoked_at)) : h('span.badge.ok', 'active') },
      { label: 'Actions', value: (k) => k.revoked_at ? '—' : h('button.small.danger', { type: 'button', on: { click: revoke(k) } }, 'Revoke') },
    ], keys, { id: 'keys-table', empty: 'No API key.' }),
    keyForm, keyMsg,
    h('h2#policy', 'Policy in force'),
    policy.error
      ? errorBox(policy.error, 'Cannot show the policy')
      : h('div', h('dl.kv.card',
          h('dt', 'Origin'), h('dd', policy.origin),
          h('dt', 'SHA-256'), h('dd', h('code#policy-sha', policy.sha256))),
        h('p.muted', 'The policy is a file read at start-up (--policy FILE, or policy.toml in the data directory); change it there and restart.'),
        h('pre#policy-text', { tabindex: 0, 'aria-label': 'Policy text' }, policy.text)));
}

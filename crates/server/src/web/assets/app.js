// visage web app: sign-in, navigation and client-side routing under /app/.
import { get, post, setUnauthorizedHandler } from './api.js';
import { h, mount, errorBox, field, busy } from './ui.js';
import { searchPage } from './search.js';
import { casesPage, casePage } from './cases.js';
import { auditPage } from './audit.js';
import { adminPage } from './admin.js';
import { galleryPage } from './gallery.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');

/** The signed-in principal (GET /v1/auth/me), or null. */
let me = null;

// Which pages each role may use (mirrors the default policy; the API decides anyway).
const PAGES = [
  { path: '/app/search', label: 'Search', roles: ['investigator'] },
  { path: '/app/cases', label: 'Cases', roles: ['investigator', 'admin'] },
  { path: '/app/audit', label: 'Audit', roles: ['admin', 'auditor', 'compliance'] },
  { path: '/app/admin', label: 'Administration', roles: ['admin'] },
  { path: '/app/gallery', label: 'Collections', roles: ['admin', 'investigator', 'auditor', 'compliance'] },
];

function allowed() {
  return me ? PAGES.filter((p) => p.roles.includes(me.role)) : [];
}

export function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', path); else history.pushState(null, '', path);
  route();
}

function renderChrome() {
  const path = location.pathname;
  mount(nav, allowed().map((p) => h('a', {
    href: p.path, 'data-link': true, 'aria-current': path.startsWith(p.path) ? 'page' : null,
  }, p.label)));
  if (me) {
    mount(who,
      h('span', { id: 'who-name' }, me.username),
      h('span.role', `${me.role} · ${me.org.name}`),
      h('button.small', { type: 'button', id: 'signout', on: { click: signOut } }, 'Sign out'));
  } else {
    mount(who);
  }
}

async function signOut() {
  try { await post('/v1/auth/logout', undefined, { quiet401: true }); } catch (_) { /* already gone */ }
  me = null;
  navigate('/app/login');
}

function loginPage(note) {
  document.title = 'Sign in · visage';
  const err = h('div', { role: 'alert', 'aria-live': 'assertive' });
  const form = h('form.card.form#login-form', { novalidate: true },
    h('h1', 'Sign in'),
    note ? h('p.muted', note) : null,
    field('Username', { name: 'username', type: 'text', autocomplete: 'username', required: true, autofocus: true, id: 'username' }),
    field('Password', { name: 'password', type: 'password', autocomplete: 'current-password', required: true, id: 'password' }),
    h('div.actions', h('button.primary', { type: 'submit' }, 'Sign in')),
    err);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const username = form.username.value.trim();
    const password = form.password.value;
    if (!username || !password) {
      mount(err, errorBox({ message: 'Enter your username and password.' }, 'Cannot sign in'));
      return;
    }
    await busy(form, async () => {
      try {
        me = await post('/v1/auth/login', { username, password }, { quiet401: true });
        mount(err);
        const back = sessionStorage.getItem('visage.after_login');
        sessionStorage.removeItem('visage.after_login');
        navigate(back && back !== '/app/login' ? back : home(), { replace: true });
      } catch (e) {
        const text = e.status === 401 ? 'Wrong username or password, or the account is disabled.' : e.message;
        mount(err, errorBox({ message: text, code: e.code }, 'Cannot sign in'));
        form.password.select();
      }
    });
  });
  mount(main, h('div.narrow-login', form,
    h('p.muted', 'Members of the public: use the ', h('a', { href: '/optout' }, 'opt-out and access portal'), '.')));
  renderChrome();
  form.username.focus();
}

function home() {
  const pages = allowed();
  return pages.length ? pages[0].path : '/app/gallery';
}

async function route() {
  const path = location.pathname.replace(/\/+$/, '') || '/app';
  if (!me && path !== '/app/login') {
    try {
      me = await get('/v1/auth/me', { quiet401: true });
    } catch (e) {
      if (e.status !== 401) { mount(main, errorBox(e, 'Cannot reach visage')); return; }
      sessionStorage.setItem('visage.after_login', location.pathname + location.search);
      history.replaceState(null, '', '/app/login');
      loginPage();
      return;
    }
  }
  if (path === '/app/login') {
    if (me) { navigate(home(), { replace: true }); return; }
    loginPage();
    return;
  }
  if (path === '/app') { navigate(home(), { replace: true }); return; }
  renderChrome();
  const ctx = { me, main, navigate };
  let m;
  try {
    if (path === '/app/search') await searchPage(ctx);
    else if (path === '/app/cases') await casesPage(ctx);
    else if ((m = path.match(/^\/app\/cases\/(\d+)$/))) await casePage(ctx, Number(m[1]));
    else if (path === '/app/audit') await auditPage(ctx);
    else if (path === '/app/admin') await adminPage(ctx);
    else if (path === '/app/gallery') await galleryPage(ctx);
    else mount(main, h('h1', 'Page not found'), h('p', h('a', { href: home(), 'data-link': true }, 'Go to the start page')));
  } catch (e) {
    mount(main, errorBox(e, 'This page could not be loaded'));
  }
  main.focus({ preventScroll: true });
}

setUnauthorizedHandler(() => {
  if (!me) return;
  me = null;
  sessionStorage.setItem('visage.after_login', location.pathname + location.search);
  history.replaceState(null, '', '/app/login');
  loginPage('Your session ended. Sign in again.');
});

// In-app links: <a data-link href="/app/..."> navigate without reloading.
document.addEventListener('click', (ev) => {
  const a = ev.target.closest('a[data-link]');
  if (!a || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
  ev.preventDefault();
  navigate(a.getAttribute('href'));
});
window.addEventListener('popstate', route);
route();

// DOM helpers. Every value from the API is inserted as text (never as HTML).

/**
 * h('tag.class#id', {attrs, on: {event: fn}}, ...children): builds an element.
 * Children: nodes, strings (text), numbers, arrays, null/false (skipped).
 */
export function h(spec, attrs, ...children) {
  const m = spec.match(/^([a-z0-9]+)?((?:[.#][\w-]+)*)$/i);
  const el = document.createElement(m[1] || 'div');
  for (const part of (m[2] || '').match(/[.#][\w-]+/g) || []) {
    if (part[0] === '.') el.classList.add(part.slice(1)); else el.id = part.slice(1);
  }
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'on') for (const [ev, f] of Object.entries(v)) el.addEventListener(ev, f);
    else if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the contents of `el`. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A message box: kind = error | ok | warn | info. */
export function msg(kind, title, text) {
  return h('div.msg.' + kind, { role: kind === 'error' ? 'alert' : 'status' },
    title ? h('strong', title) : null, text || null);
}

export function errorBox(e, what) {
  const code = e && e.code ? ` (${e.code})` : '';
  return msg('error', what || 'The request failed', (e && e.message ? e.message : String(e)) + code);
}

/** Seconds or milliseconds since the epoch (or an ISO string) as a local date-time. */
export function fmtTime(t) {
  if (t === null || t === undefined || t === '') return '—';
  let d;
  if (typeof t === 'number') d = new Date(t > 1e12 ? t : t * 1000);
  else d = new Date(t);
  if (isNaN(d.getTime())) return String(t);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

export function fmtBytes(n) {
  if (typeof n !== 'number') return '—';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + ' ' + u[i];
}

export function fmtNum(x, digits = 3) {
  return typeof x === 'number' ? x.toFixed(digits) : '—';
}

/** 1.2e-5 style for small rates. */
export function fmtRate(x) {
  if (typeof x !== 'number') return '—';
  if (x === 0) return '0';
  return x < 0.001 ? x.toExponential(1) : x.toPrecision(2);
}

/**
 * A table: columns = [{label, value: row => node|string, num?: bool, wrap?: bool}].
 */
export function table(caption, columns, rows, { empty = 'Nothing yet.', id } = {}) {
  const thead = h('thead', h('tr', columns.map((c) => h('th' + (c.num ? '.num' : ''), { scope: 'col' }, c.label))));
  const body = rows.length
    ? rows.map((r) => h('tr', columns.map((c) => {
        const td = h('td' + (c.num ? '.num' : '') + (c.wrap ? '.wrap' : ''), c.value(r));
        return td;
      })))
    : [h('tr', h('td.muted', { colspan: columns.length }, empty))];
  return h('div.table-wrap', h('table', { id }, caption ? h('caption', caption) : null, thead, h('tbody', body)));
}

/** Disables a form's buttons while `f` runs. */
export async function busy(form, f) {
  const buttons = [...form.querySelectorAll('button')];
  buttons.forEach((b) => { b.disabled = true; });
  form.setAttribute('aria-busy', 'true');
  try { return await f(); } finally {
    buttons.forEach((b) => { b.disabled = false; });
    form.removeAttribute('aria-busy');
  }
}

/** A labelled input: field('Username', {name, type, ...}). */
export function field(label, attrs, help) {
  const id = attrs.id || 'f-' + attrs.name + '-' + Math.random().toString(36).slice(2, 7);
  const helpId = help ? id + '-help' : null;
  const input = attrs.options
    ? h('select', { id, name: attrs.name, required: attrs.required, 'aria-describedby': helpId },
        attrs.options.map(([v, t]) => h('option', { value: v, selected: String(v) === String(attrs.value ?? '') }, t)))
    : h(attrs.tag || 'input', { ...attrs, options: undefined, tag: undefined, id, 'aria-describedby': helpId });
  return h('div.field', h('label', { for: id }, label), input, help ? h('p.help', { id: helpId }, help) : null);
}

/** Form values as a plain object (strings; empty strings dropped). */
export function values(form) {
  const out = {};
  for (const [k, v] of new FormData(form).entries()) {
    if (typeof v === 'string' && v.trim() !== '') out[k] = v.trim();
  }
  return out;
}

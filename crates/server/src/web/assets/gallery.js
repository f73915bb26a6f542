// Collections and gallery statistics; ingest is a CLI job for now.
import { get } from './api.js';
import { h, mount, msg, table, fmtBytes } from './ui.js';

export async function galleryPage({ main }) {
  document.title = 'Collections · visage';
  const [cols, stats] = await Promise.all([get('/v1/collections'), get('/v1/stats')]);
  const byName = Object.fromEntries((stats.collections || []).map((c) => [c.name, c]));
  const bytes = stats.bytes_on_disk || {};
  mount(main,
    h('h1', 'Collections'),
    h('div.card', h('dl.kv#stats',
      h('dt', 'Faces'), h('dd', String(stats.faces)),
      h('dt', 'Images'), h('dd', String(stats.images)),
      h('dt', 'Subjects'), h('dd', String(stats.subjects)),
      h('dt', 'Erased (tombstones)'), h('dd', String(stats.tombstones ?? '—')),
      h('dt', 'On disk'), h('dd', `${fmtBytes(bytes.total)} (metadata ${fmtBytes(bytes.metadata)}, blobs ${fmtBytes(bytes.blobs)}, index ${fmtBytes(bytes.index)})`),
      h('dt', 'In memory'), h('dd', fmtBytes(stats.bytes_in_memory)))),
    table(null, [
      { label: 'Collection', value: (c) => c.name },
      { label: 'Model pack', value: (c) => h('code', c.pack) },
      { label: 'Dimensions', value: (c) => String(c.dim), num: true },
      { label: 'Faces', value: (c) => String(c.faces), num: true },
      { label: 'Images', value: (c) => String(c.images), num: true },
      { label: 'Subjects', value: (c) => String(c.subjects), num: true },
      { label: 'Sources', value: (c) => ((byName[c.name] || {}).sources || []).map((s) => `${s.name} (${s.faces})`).join(', ') || '—', wrap: true },
      { label: 'Jurisdictions', value: (c) => ((byName[c.name] || {}).jurisdictions || []).map((j) => `${j.name} (${j.faces})`).join(', ') || '—', wrap: true },
    ], cols, { id: 'collections-table', empty: 'No collection yet: ingest photos with `visage ingest`.' }),
    h('h2', 'Ingest jobs'),
    msg('info', 'Not available over HTTP yet',
      'There is no ingest endpoint in the API yet. Ingest runs on the server with the command line: `visage ingest --collection NAME PATHS…` (progress bar, resumable), and `visage jobs` lists the jobs with their counts. While it runs, start the server with --read-only.'));
}

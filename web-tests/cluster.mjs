// The web app over a cluster API (`visage serve --config`): run by crates/cli/tests/cluster_web.rs
// against PostgreSQL + the S3 server + a worker. Configured by environment:
//   VISAGE_URL                          base URL of one cluster API process
//   VISAGE_INV_USER / VISAGE_INV_PASS   an investigator (a cluster user)
//   VISAGE_ADMIN_USER / VISAGE_ADMIN_PASS  an administrator of the same organisation
//   VISAGE_PROBE                        a photo of VISAGE_EXPECT_LABEL not in the gallery
//   VISAGE_EXPECT_LABEL                 the subject the search must rank first
//   VISAGE_COLLECTION                   the collection already ingested
//   VISAGE_FOLDER / VISAGE_FOLDER_GOOD  a server-side folder the administrator queues on the
//                                       collections page, and how many photos in it are good
//                                       (the others: one truncated JPEG, one text file)
//   VISAGE_UPLOAD_FILES / VISAGE_UPLOAD_GOOD  files (JSON array) the administrator uploads on
//                                       the collections page (staged in the bucket, read by
//                                       the worker), and how many of them are good photos
//   VISAGE_SCREENSHOTS, VISAGE_CHROMIUM as web-tests/e2e.mjs
import { session } from './lib.mjs';

const s = await session('cluster', { allowStatus: /status of 40[134]/ });
const { env, BASE, step, check, page, context, shot, signIn, signOut, search } = s;
const INV = [env('VISAGE_INV_USER'), env('VISAGE_INV_PASS')];
const ADM = [env('VISAGE_ADMIN_USER'), env('VISAGE_ADMIN_PASS')];
const PROBE = env('VISAGE_PROBE');
const LABEL = env('VISAGE_EXPECT_LABEL');
const COLLECTION = env('VISAGE_COLLECTION');
const FOLDER = env('VISAGE_FOLDER');
const FOLDER_GOOD = Number(env('VISAGE_FOLDER_GOOD'));
const UPLOAD = JSON.parse(env('VISAGE_UPLOAD_FILES'));
const UPLOAD_GOOD = Number(env('VISAGE_UPLOAD_GOOD'));

await s.run(async () => {
  // --- the shell and its headers come from the cluster process ------------------------------
  const resp = await page.goto(`${BASE}/`);
  check(resp.ok(), 'GET / answers');
  await page.waitForSelector('#login-form');
  check((resp.headers()['content-security-policy'] || '').includes("script-src 'self'"), 'CSP header on the shell');

  // --- investigator: a case, a search over the cluster's gallery ----------------------------
  await signIn(INV);
  const caseId = await s.openCase({ number: `CL-${Date.now()}`, purpose: 'identify the person in the cluster test photo', legal: 'warrant W-2026-1', offence: 'fraud' });
  const found = await search(caseId, PROBE);
  check(found.labels[0] === LABEL, `first candidate is ${LABEL} (got ${found.labels.join(', ')})`);
  await page.waitForFunction(() => [...document.querySelectorAll('#candidates img.thumb')].every((i) => i.complete && i.naturalWidth > 0));
  step(`search: audit #${found.audit}, candidates ${found.labels.join(', ')}`);
  await shot('search', { fullPage: true });
  await page.click(`a[href="/app/cases/${caseId}"]`);
  await page.waitForSelector('#report-searches');
  const seqs = await page.$$eval('#report-searches tbody tr td:first-child', (tds) => tds.map((t) => t.textContent.trim()));
  check(seqs.includes(String(found.audit)), `the case report lists audit #${found.audit} (got ${seqs})`);
  // the investigator reads the gallery but may not ingest
  await page.goto(`${BASE}/app/gallery`);
  await page.waitForSelector('#collections-table');
  await page.waitForSelector('#ingest .msg');
  check((await page.textContent('#ingest')).includes('Ingest is done by administrators'), 'ingest refused to the investigator');
  await signOut();

  // --- administrator: statistics, the queue's jobs, a folder queued from the page -----------
  await signIn(ADM);
  await page.goto(`${BASE}/app/gallery`);
  await page.waitForSelector('#collections-table');
  const table = await page.textContent('#collections-table');
  check(table.includes(COLLECTION), `the collections table lists ${COLLECTION}`);
  check(/\(\d+\)/.test(table), 'sources and jurisdictions are counted');
  await page.waitForSelector('#jobs-table');
  const jobs = await page.textContent('#jobs-table');
  check(jobs.includes('completed') && jobs.includes('cancelled'), `the jobs table shows the completed and the cancelled job (${jobs.slice(0, 300)})`);
  await page.waitForSelector('#ingest-form');
  await page.waitForSelector('#path-form');
  await shot('collections', { fullPage: true });
  // an empty form is refused in the page
  await page.click('#pj-submit');
  await page.waitForSelector('#path-form-msg .msg.error');
  await page.fill('#pj-collection', 'web-folder');
  await page.fill('#pj-source', 'case files (web)');
  await page.fill('#pj-legal', 'court order 2026/44 (test)');
  await page.fill('#pj-jurisdiction', 'GB');
  await page.fill('#pj-path', FOLDER);
  await page.check('#pj-subjects');
  await page.click('#pj-submit');
  await page.waitForSelector('#path-form-msg .msg.ok');
  const queued = (await page.textContent('#path-form-msg')).replace(/\s+/g, ' ');
  const jobId = Number(queued.replace(/^\D*(\d+).*$/, '$1'));
  check(jobId > 0 && queued.includes(`${FOLDER_GOOD + 2} files`), `the job is queued with every file (${queued})`);
  step(`queued job ${jobId}: ${queued}`);
  await page.waitForSelector(`#ingest-result[data-job="${jobId}"]`, { timeout: 180_000 });
  const status = await page.getAttribute('#ingest-result', 'data-status');
  const summary = (await page.textContent('#ingest-result')).replace(/\s+/g, ' ');
  check(status === 'completed', `the job completed (${status}: ${summary})`);
  check(summary.includes(`${FOLDER_GOOD} images and`), `the summary counts ${FOLDER_GOOD} images (${summary})`);
  check(summary.includes('corrupt_image 1') && summary.includes('unsupported_format 1'), `the summary names the bad files' reasons (${summary})`);
  check(await page.isVisible('#ingest-result-report'), 'the summary links the report');
  await page.waitForFunction(() => (document.querySelector('#collections-table')?.textContent || '').includes('web-folder'));
  const rep = await context.request.get(`${BASE}/v1/ingest/jobs/${jobId}/report`);
  check(rep.ok(), 'the report answers');
  const failed = (await rep.text()).trim().split('\n').filter((l) => l).map((l) => JSON.parse(l)).filter((l) => l.kind === 'failed');
  check(failed.length === 2, `the report lists the two bad files (${JSON.stringify(failed)})`);
  step(`ingest: ${summary.slice(0, 200)}`);
  await shot('ingest', { fullPage: true });

  // --- administrator: files uploaded from the page, staged in the bucket, read by a worker ---
  await page.fill('#ing-collection', 'web-uploads');
  await page.fill('#ing-source', 'uploaded case files (web)');
  await page.fill('#ing-legal', 'court order 2026/45 (test)');
  await page.fill('#ing-jurisdiction', 'GB');
  await page.setInputFiles('#ing-files', UPLOAD);
  await page.click('#ing-submit');
  const card = await page.waitForSelector('#ingest-live .job-live', { timeout: 60_000 });
  const upId = Number((await card.getAttribute('id')).replace('job-', ''));
  check(upId > jobId, `the upload is a new job (${upId})`);
  await page.waitForSelector(`#ingest-result[data-job="${upId}"]`, { timeout: 180_000 });
  const upStatus = await page.getAttribute('#ingest-result', 'data-status');
  const upSummary = (await page.textContent('#ingest-result')).replace(/\s+/g, ' ');
  check(upStatus === 'completed', `the upload job completed (${upStatus}: ${upSummary})`);
  check(upSummary.includes(`${UPLOAD_GOOD} images and`), `the summary counts ${UPLOAD_GOOD} images (${upSummary})`);
  check(upSummary.includes('corrupt_image 1'), `the summary names the bad file's reason (${upSummary})`);
  await page.waitForFunction(() => (document.querySelector('#collections-table')?.textContent || '').includes('web-uploads'));
  step(`upload: ${upSummary.slice(0, 200)}`);

  // --- the other pages answer over the cluster ----------------------------------------------
  await page.goto(`${BASE}/app/admin`);
  await page.waitForSelector('#policy-sha');
  check((await page.textContent('#users-table')).includes(INV[0]), 'users table lists the investigator');
  await page.goto(`${BASE}/app/audit`);
  await page.waitForSelector('#verify-box .verify.ok');
  step('admin and audit pages');
  await signOut();
});

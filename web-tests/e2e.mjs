// End-to-end test of the visage web app in the system Chromium (never a downloaded browser).
// Run by crates/server/tests/web.rs against a real server; configured by environment:
//   VISAGE_URL                          base URL, e.g. http://127.0.0.1:41234
//   VISAGE_INV_USER / VISAGE_INV_PASS   an investigator
//   VISAGE_AUD_USER / VISAGE_AUD_PASS   an auditor (same organisation)
//   VISAGE_ADMIN_USER / VISAGE_ADMIN_PASS  the operator administrator
//   VISAGE_PROBE                        a photo of VISAGE_EXPECT_LABEL not in the gallery
//   VISAGE_OPTOUT_PHOTO                 another photo of that person, for the opt-out
//   VISAGE_EXPECT_LABEL                 the subject label the search must rank first
//   VISAGE_SCREENSHOTS                  folder for one PNG per page
//   VISAGE_CHROMIUM                     browser binary (default /usr/bin/chromium)
//   VISAGE_INGEST_FILES                 JSON array of files the admin uploads on the collections
//                                       page: VISAGE_INGEST_GOOD photos, one truncated JPEG
//                                       and one text file
//   VISAGE_INGEST_GOOD                  how many of them are good photos
import { session } from './lib.mjs';

const sess = await session('e2e', { allowStatus: /status of 40[134]/ });
const { env, BASE, step, check, page, context, shot, signIn, signOut } = sess;
const INV = [env('VISAGE_INV_USER'), env('VISAGE_INV_PASS')];
const AUD = [env('VISAGE_AUD_USER'), env('VISAGE_AUD_PASS')];
const ADM = [env('VISAGE_ADMIN_USER'), env('VISAGE_ADMIN_PASS')];
const PROBE = env('VISAGE_PROBE');
const OPTOUT = env('VISAGE_OPTOUT_PHOTO');
const LABEL = env('VISAGE_EXPECT_LABEL');
const INGEST = JSON.parse(env('VISAGE_INGEST_FILES'));
const INGEST_GOOD = Number(env('VISAGE_INGEST_GOOD'));
const search = (caseId) => sess.search(caseId, PROBE);

await sess.run(async () => {
  // --- the root redirects to the app; the app asks for a sign-in ---------------------------
  const resp = await page.goto(`${BASE}/`);
  check(resp.ok(), 'GET / answers');
  await page.waitForSelector('#login-form');
  check(new URL(page.url()).pathname === '/app/login', `unauthenticated visit lands on /app/login (got ${page.url()})`);
  const headers = resp.headers();
  check((headers['content-security-policy'] || '').includes("script-src 'self'"), 'CSP header on the shell');
  check(headers['x-content-type-options'] === 'nosniff', 'nosniff header on the shell');
  // a wrong password shows an error
  await page.fill('#username', INV[0]);
  await page.fill('#password', 'not the password at all');
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#login-form .msg.error');
  step('wrong password shows an error');
  await shot('sign-in');

  // --- investigator: open a case, search -----------------------------------------------------
  await signIn(INV, { keyboard: true });
  check(new URL(page.url()).pathname === '/app/search', 'investigator starts on the search page');
  // searching without a case is refused in the page
  await page.setInputFiles('#photo', PROBE);
  await page.click('#search-btn');
  await page.waitForSelector('#search-form .msg.error');
  const number = `WEB-${Date.now()}`;
  const caseId = await sess.openCase({ number, purpose: 'identify the person in the station CCTV still', legal: 'warrant W-2024-117', offence: 'robbery' });
  step(`case ${number} opened (id ${caseId})`);

  const first = await search(caseId);
  check(first.labels.length > 0, 'the search returns candidates');
  check(first.labels[0] === LABEL, `first candidate is ${LABEL} (got ${first.labels.join(', ')})`);
  const boxes = await page.$$('.probe .facebox');
  check(boxes.length >= 1, 'the probe face is drawn as a box');
  await boxes[0].click();
  check((await boxes[0].getAttribute('aria-pressed')) === 'true', 'clicking a face box chooses it');
  await page.waitForFunction(() => [...document.querySelectorAll('#candidates img.thumb')].every((i) => i.complete && i.naturalWidth > 0));
  step(`search: audit #${first.audit}, candidates ${first.labels.join(', ')}`);
  await page.evaluate(() => window.scrollTo(0, 0));
  await shot('search-results', { fullPage: true });

  // --- case page and report --------------------------------------------------------------
  await page.click(`a[href="/app/cases/${caseId}"]`);
  await page.waitForSelector('#report-searches');
  const seqs = await page.$$eval('#report-searches tbody tr td:first-child', (tds) => tds.map((t) => t.textContent.trim()));
  check(seqs.includes(String(first.audit)), `the case report lists audit #${first.audit} (got ${seqs})`);
  await shot('case-report');
  const report = await context.newPage();
  const r = await report.goto(`${BASE}/v1/cases/${caseId}/report.html`);
  check(r.ok(), 'report.html answers');
  const reportText = await report.textContent('body');
  check(reportText.includes(number), 'report.html names the case');
  check(reportText.includes('identify the person in the station CCTV still'), 'report.html lists the search purpose');
  await report.close();
  await page.goto(`${BASE}/app/cases`);
  await page.waitForSelector('#cases-table');
  check((await page.textContent('#cases-table')).includes(number), 'the cases list shows the case');
  step('case report lists the search');
  await signOut();

  // --- public opt-out ---------------------------------------------------------------------
  await page.goto(`${BASE}/optout`);
  await page.waitForSelector('#request-form');
  await page.setInputFiles('#selfie', OPTOUT);
  await page.fill('#contact', 'person@example.org');
  await page.click('#submit');
  await page.waitForSelector('#request-id-value', { timeout: 120_000 });
  const requestId = (await page.textContent('#request-id-value')).trim();
  check(/^[0-9a-f]{16,}$/.test(requestId), `request id shown (${requestId})`);
  check(((await page.textContent('#receipt-id')) || '').trim().length > 0, 'receipt shown');
  const deleted = await page.textContent('#request-details');
  step(`opt-out ${requestId}: ${deleted.replace(/\s+/g, ' ').slice(0, 120)}`);
  await shot('optout-status', { fullPage: true });
  // the status page again, from its address (GET /v1/public/requests/{id})
  await page.goto(`${BASE}/optout?request=${requestId}`);
  await page.waitForSelector('#request-id-value');
  check((await page.textContent('#request-id-value')).trim() === requestId, 'status page by address');

  // --- the person is no longer found --------------------------------------------------------
  await signIn(INV);
  const second = await search(caseId);
  check(!second.labels.includes(LABEL), `${LABEL} is no longer returned (got ${second.labels.join(', ')})`);
  step(`search after opt-out: audit #${second.audit}, candidates [${second.labels.join(', ')}]`);
  await page.evaluate(() => window.scrollTo(0, 0));
  await shot('search-after-optout');
  await signOut();

  // --- auditor: the audit log, verified -----------------------------------------------------
  await signIn(AUD);
  await page.goto(`${BASE}/app/audit`);
  await page.waitForSelector('#verify-box .verify');
  check((await page.getAttribute('#verify-box .verify', 'data-ok')) === 'true', 'audit chain verified (green)');
  await page.waitForSelector('#audit-table tbody tr');
  const actions = await page.$$eval('#audit-table tbody tr td:nth-child(6)', (tds) => tds.map((t) => t.textContent));
  check(actions.includes('search'), `the audit table shows the searches (got ${[...new Set(actions)]})`);
  step('audit log verified');
  await shot('audit');
  await signOut();

  // --- administrator: users, keys (secret once), policy; collections -------------------------
  await signIn(ADM);
  await page.goto(`${BASE}/app/admin`);
  await page.waitForSelector('#policy-sha');
  check((await page.textContent('#users-table')).includes(INV[0]), 'users table lists the investigator');
  await page.fill('#key-form input[name=name]', 'e2e script');
  await page.click('#key-form button[type=submit]');
  await page.waitForSelector('#new-secret');
  check((await page.textContent('#new-secret')).startsWith('vsk_'), 'the new key secret is shown once');
  await page.locator('#api-keys').scrollIntoViewIfNeeded();
  await page.evaluate(() => document.getElementById('api-keys').scrollIntoView());
  await shot('admin');
  await page.goto(`${BASE}/app/gallery`);
  await page.waitForSelector('#collections-table');
  check((await page.textContent('#collections-table')).includes('lfw'), 'collections table lists lfw');
  await shot('collections');

  // --- administrator: upload photos into a new collection, watch the job to its end ---------
  await page.waitForSelector('#ingest-form');
  await page.fill('#ing-collection', 'web-uploads');
  await page.fill('#ing-source', 'e2e upload');
  await page.fill('#ing-legal', 'consent of the people photographed (test)');
  await page.fill('#ing-jurisdiction', 'GB');
  await page.setInputFiles('#ing-files', INGEST);
  check((await page.textContent('#ing-chosen')).startsWith(`${INGEST.length} files`), 'the chosen files are counted');
  // submitted from the keyboard: focus on the button, Enter
  await page.focus('#ing-submit');
  await page.keyboard.press('Enter');
  const card = await page.waitForSelector('#ingest-live .job-live', { timeout: 60_000 });
  const jobId = Number((await card.getAttribute('id')).replace('job-', ''));
  check(jobId > 0, 'the new job is shown with its id');
  check(await page.isVisible(`#job-${jobId}-bar`), 'the job shows a progress bar');
  check((await page.textContent(`#job-${jobId}-counts`)).includes('items'), 'the job shows its counts');
  await page.evaluate(() => document.getElementById('ingest-live').scrollIntoView({ block: 'center' }));
  // the counts grow while it runs (a short job may end first: then the summary shows them)
  await page.waitForFunction((id) => {
    const c = document.getElementById(`job-${id}-counts`);
    return !c || !c.textContent.startsWith('0 ');
  }, jobId, { timeout: 60_000 });
  if (await page.isVisible(`#job-${jobId}`)) {
    step(`ingest job ${jobId} running: ${(await page.textContent(`#job-${jobId}`)).replace(/\s+/g, ' ').slice(0, 200)}`);
    await shot('ingest-running');
  } else {
    step(`ingest job ${jobId} ended before a progress screenshot`);
    await shot('ingest-running');
  }
  await page.waitForSelector(`#ingest-result[data-job="${jobId}"]`, { timeout: 180_000 });
  const ingestStatus = await page.getAttribute('#ingest-result', 'data-status');
  const summary = (await page.textContent('#ingest-result')).replace(/\s+/g, ' ');
  check(ingestStatus === 'completed', `the job completed (${ingestStatus}: ${summary})`);
  check(summary.includes(`${INGEST_GOOD} images and`), `the summary counts ${INGEST_GOOD} images (${summary})`);
  check(summary.includes('corrupt_image 1') && summary.includes('unsupported_format 1'), `the summary names the bad files' reasons (${summary})`);
  check(await page.isVisible('#ingest-result-report'), 'the summary links the report');
  check(await page.isHidden(`#job-${jobId}`), 'the finished job leaves the running list');
  await page.waitForFunction(() => (document.querySelector('#collections-table')?.textContent || '').includes('web-uploads'));
  check((await page.textContent('#jobs-table')).includes('web-uploads'), 'the jobs table lists the job');
  const rep = await context.request.get(`${BASE}/v1/ingest/jobs/${jobId}/report`);
  check(rep.ok(), 'the report answers');
  const failed = (await rep.text()).trim().split('\n').filter((l) => l).map((l) => JSON.parse(l)).filter((l) => l.kind === 'failed');
  check(failed.length === 2 && failed.some((l) => l.code === 'corrupt_image') && failed.some((l) => l.code === 'unsupported_format'),
    `the report lists the two bad files (${JSON.stringify(failed)})`);
  step(`ingest: ${summary.slice(0, 200)}`);
  await shot('ingest', { fullPage: true });
  await page.goto(`${BASE}/app/audit`);
  await page.waitForSelector('#verify-box .verify.ok');
  step('admin pages');
  await signOut();
});

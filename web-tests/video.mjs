// Browser test of the search page with a chosen face and with a video, in the system Chromium
// (never a downloaded browser). Run by crates/server/tests/web_video.rs against a real server;
// configured by environment:
//   VISAGE_URL                          base URL, e.g. http://127.0.0.1:41234
//   VISAGE_INV_USER / VISAGE_INV_PASS   an investigator
//   VISAGE_GROUP                        a photo of several people
//   VISAGE_GROUP_LABELS                 comma-separated: the subject each face (left to right)
//                                       must find first; empty for a face that cannot be used
//   VISAGE_VIDEO                        a short video
//   VISAGE_VIDEO_LABEL                  the subject the video's strongest track must find first
//   VISAGE_SCREENSHOTS                  folder for the screenshots (video-NN-name.png)
//   VISAGE_CHROMIUM                     browser binary (default /usr/bin/chromium)
import { session } from './lib.mjs';

// the last step expects a 400 (a file that is not a video)
const sess = await session('video', { allowStatus: /status of 400/, timeout: 60_000 });
const { env, BASE, step, check, page, shot } = sess;
const INV = [env('VISAGE_INV_USER'), env('VISAGE_INV_PASS')];
const GROUP = env('VISAGE_GROUP');
const GROUP_LABELS = env('VISAGE_GROUP_LABELS').split(',');
const VIDEO = env('VISAGE_VIDEO');
const VIDEO_LABEL = env('VISAGE_VIDEO_LABEL');

const auditId = async () => Number((await page.textContent('#audit-id')).replace(/\D+/g, ''));
const firstLabel = () => page.$eval('#candidates .candidate', (e) => e.dataset.label);

await sess.run(async () => {
  // --- sign in, open a case ------------------------------------------------------------------
  await page.goto(`${BASE}/app/login`);
  await page.fill('#username', INV[0]);
  await page.fill('#password', INV[1]);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#search-form');
  check(await page.getAttribute('#photo', 'accept') === 'image/*,video/*', 'the file input takes photos and videos');
  await sess.openCase({ number: `VID-${Date.now()}`, purpose: 'identify the people in the rally footage', legal: 'warrant W-2024-311', offence: 'assault' });
  step('signed in, case opened');

  // --- a group photo: every face drawn, the main face searched -------------------------------
  await page.setInputFiles('#photo', GROUP);
  check((await page.textContent('#file-note')).startsWith('Photo:'), 'the page says a photo was chosen');
  await page.click('#search-btn');
  await page.waitForSelector('#audit-id');
  await page.waitForFunction((n) => document.querySelectorAll('.probe .facebox').length === n, GROUP_LABELS.length);
  const pressed = await page.$$eval('.probe .facebox', (bs) => bs.map((b) => b.getAttribute('aria-pressed')));
  check(pressed.filter((p) => p === 'true').length === 1, `one face is chosen (${pressed})`);
  const main = pressed.indexOf('true');
  check(GROUP_LABELS[main] !== '', 'the main face is usable');
  check(await firstLabel() === GROUP_LABELS[main], `face ${main} finds ${GROUP_LABELS[main]} first (got ${await firstLabel()})`);
  const firstAudit = await auditId();
  step(`main face ${main}: ${GROUP_LABELS[main]} first, audit #${firstAudit}`);
  const unusable = await page.$$eval('.probe .facebox.unusable', (bs) => bs.map((b) => Number(b.dataset.face)));
  check(unusable.every((i) => GROUP_LABELS[i] === ''), `faces drawn as unusable: ${unusable}`);

  // choose another usable face with the keyboard: a new search with that face
  const other = GROUP_LABELS.findIndex((l, i) => l !== '' && i !== main);
  check(other >= 0, 'the group photo has a second usable face');
  await page.focus(`.probe .facebox[data-face="${other}"]`);
  await page.keyboard.press('Enter');
  await page.waitForFunction((a) => Number(document.querySelector('#audit-id').textContent.replace(/\D+/g, '')) > a, firstAudit);
  await page.waitForSelector('#candidates .candidate');
  check(await firstLabel() === GROUP_LABELS[other], `face ${other} finds ${GROUP_LABELS[other]} first (got ${await firstLabel()})`);
  check(await page.getAttribute(`.probe .facebox[data-face="${other}"]`, 'aria-pressed') === 'true', 'the chosen box is pressed');
  check(await page.getAttribute(`.probe .facebox[data-face="${main}"]`, 'aria-pressed') === 'false', 'the main box is no longer pressed');
  check(await page.evaluate(() => document.activeElement.classList.contains('facebox')), 'focus stays on the face box');
  const secondAudit = await auditId();
  step(`face ${other}: ${GROUP_LABELS[other]} first, audit #${secondAudit}`);
  await page.waitForFunction(() => [...document.querySelectorAll('#candidates img.thumb')].every((i) => i.complete && i.naturalWidth > 0));
  await page.evaluate(() => window.scrollTo(0, 0));
  await shot('chosen-face', { fullPage: true });
  // back to the main face: already searched, no new search
  await page.click(`.probe .facebox[data-face="${main}"]`);
  check(await firstLabel() === GROUP_LABELS[main], 'the main face again');
  check(await auditId() === firstAudit, 'the first search is shown again, not repeated');
  // an unusable face: searched, reported with its reasons
  if (unusable.length) {
    await page.click(`.probe .facebox[data-face="${unusable[0]}"]`);
    await page.waitForSelector('#candidates-wrap .msg.warn');
    check((await page.textContent('#candidates-wrap')).includes('could not be used'), 'an unusable face says why');
    step(`face ${unusable[0]}: unusable, with its reasons`);
  }

  // --- a video: each face track with its candidates ------------------------------------------
  await page.setInputFiles('#photo', VIDEO);
  check((await page.textContent('#file-note')).startsWith('Video:'), 'the page says a video was chosen');
  await page.click('#search-btn');
  await page.waitForSelector('#tracks li.track', { timeout: 180_000 });
  const videoAudit = await auditId();
  check(videoAudit > secondAudit, 'the video search has its own audit record');
  const tracks = await page.$$eval('#tracks li.track', (ls) => ls.map((l) => ({
    label: l.dataset.label,
    title: l.querySelector('h3').textContent,
    score: Number((l.querySelector('.candidate .score') || { textContent: 'NaN' }).textContent),
    candidates: l.querySelectorAll('.candidate').length,
    thumb: !!l.querySelector('img.track-thumb'),
  })));
  check(tracks.length > 0, 'usable tracks are listed');
  for (const t of tracks) step(`  ${t.title}: ${t.label} ${t.score}`);
  const best = tracks.filter((t) => !Number.isNaN(t.score)).sort((a, b) => b.score - a.score)[0];
  check(best && best.label === VIDEO_LABEL, `the strongest track finds ${VIDEO_LABEL} first (got ${best && best.label})`);
  check(tracks.every((t) => t.thumb && /Track \d+: \d+:\d\d\.\d – \d+:\d\d\.\d/.test(t.title)), 'each track has its best face and time range');
  // the best-face pictures (data: URLs) and the first track's candidates (the rest load lazily)
  await page.waitForFunction(() => [...document.querySelectorAll('#tracks img.track-thumb, #tracks li.track:first-child img.thumb')].every((i) => i.complete && i.naturalWidth > 0));
  if (await page.$('#unusable-tracks')) {
    await page.click('#unusable-tracks summary');
    check((await page.textContent('#unusable-tracks')).includes('could not be used'), 'unusable tracks listed with reasons');
  }
  step(`video: ${tracks.length} usable tracks, audit #${videoAudit}`);
  await page.evaluate(() => window.scrollTo(0, 0));
  await shot('video-tracks', { fullPage: true, clip: { x: 0, y: 0, width: 1366, height: 1500 } });

  // --- not a video: the API's error is shown -------------------------------------------------
  await page.setInputFiles('#photo', { name: 'clip.mp4', mimeType: 'video/mp4', buffer: Buffer.from('this is not a video') });
  await page.click('#search-btn');
  await page.waitForSelector('#search-form .msg.error');
  check((await page.textContent('#search-form .msg.error')).includes('invalid_video'), 'a bad video shows invalid_video');
  step('a file that is not a video is refused with invalid_video');
});

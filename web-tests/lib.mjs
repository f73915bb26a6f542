// What the browser scripts share: their environment, the system Chromium (never a downloaded
// browser), page-error and CSP watching, screenshots, sign-in and sign-out, and a search.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

/**
 * Starts a browser session for script `tag`. `allowStatus`: console errors about these HTTP
 * statuses are expected (a test of refusals), others are problems. Returns the helpers.
 */
export async function session(tag, { allowStatus = /$^/, timeout = 30_000 } = {}) {
  const env = (k, d) => {
    const v = process.env[k] ?? d;
    if (v === undefined) { console.error(`${tag}: ${k} is not set`); process.exit(2); }
    return v;
  };
  const BASE = env('VISAGE_URL').replace(/\/$/, '');
  const SHOTS = env('VISAGE_SCREENSHOTS');
  fs.mkdirSync(SHOTS, { recursive: true });
  const step = (s) => console.log(`${tag}: ${s}`);
  const check = (cond, what) => { if (!cond) throw new Error(`check failed: ${what}`); };
  const browser = await chromium.launch({ executablePath: env('VISAGE_CHROMIUM', '/usr/bin/chromium'), headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  const context = await browser.newContext({ viewport: { width: 1366, height: 768 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (/Content.Security.Policy|Refused to/i.test(m.text())) problems.push(`CSP: ${m.text()}`);
    else if (m.type() === 'error' && !allowStatus.test(m.text())) problems.push(`console error: ${m.text()}`);
  });
  let shotNo = 0;
  async function shot(name, opts = {}) {
    shotNo += 1;
    const file = path.join(SHOTS, `${tag}-${String(shotNo).padStart(2, '0')}-${name}.png`);
    await page.screenshot({ path: file, ...opts });
    step(`screenshot ${file}`);
  }
  /** Signs in on the login page; `keyboard`: typed, Tab to the password, Enter submits. */
  async function signIn([user, pass], { keyboard = false } = {}) {
    await page.goto(`${BASE}/app/login`);
    await page.waitForSelector('#login-form');
    if (keyboard) {
      await page.locator('#username').focus();
      await page.keyboard.type(user);
      await page.keyboard.press('Tab');
      check(await page.evaluate(() => document.activeElement.id) === 'password', 'Tab moves from username to password');
      await page.keyboard.type(pass);
      await page.keyboard.press('Enter');
    } else {
      await page.fill('#username', user);
      await page.fill('#password', pass);
      await page.click('#login-form button[type=submit]');
    }
    await page.waitForSelector('#signout');
    check((await page.textContent('#who-name')) === user, `signed in as ${user}`);
    step(`signed in as ${user}`);
  }
  async function signOut() {
    await page.click('#signout');
    await page.waitForSelector('#login-form');
    step('signed out');
  }
  /** Opens a case from the search page's form; returns its id (selected in the page). */
  async function openCase({ number, purpose, legal, offence }) {
    await page.waitForSelector('#search-form');
    if (!(await page.isVisible('#nc-number'))) await page.click('#new-case summary');
    await page.fill('#nc-number', number);
    await page.fill('#nc-purpose', purpose);
    await page.fill('#nc-legal', legal);
    await page.fill('#nc-offence', offence);
    await page.click('#new-case-form button[type=submit]');
    await page.waitForFunction(() => document.querySelector('#case').value !== '');
    const caseId = Number(await page.inputValue('#case'));
    check(caseId > 0, 'the new case is selected');
    return caseId;
  }
  /** Searches `photo` under case `caseId` on the search page: the audit id and the labels. */
  async function search(caseId, photo) {
    await page.goto(`${BASE}/app/search`);
    await page.waitForSelector('#search-form');
    await page.selectOption('#case', String(caseId));
    await page.setInputFiles('#photo', photo);
    await page.click('#search-btn');
    await page.waitForSelector('#audit-id');
    const audit = Number((await page.textContent('#audit-id')).replace(/\D+/g, ''));
    const labels = await page.$$eval('#candidates .candidate', (els) => els.map((e) => e.dataset.label));
    return { audit, labels };
  }
  /** Runs `body`; on failure prints why, keeps a screenshot and exits 1. */
  async function run(body) {
    try {
      await body();
      check(problems.length === 0, `no page errors or CSP violations:\n  ${problems.join('\n  ')}`);
      step('all checks passed');
      await browser.close();
    } catch (e) {
      console.error(`${tag}: FAILED: ${e.message}`);
      if (problems.length) console.error(`${tag}: page problems:\n  ${problems.join('\n  ')}`);
      try { await page.screenshot({ path: path.join(SHOTS, `${tag}-failure.png`), fullPage: true }); } catch (_) { /* ignore */ }
      await browser.close();
      process.exit(1);
    }
  }
  return { env, BASE, step, check, browser, context, page, problems, shot, signIn, signOut, openCase, search, run };
}

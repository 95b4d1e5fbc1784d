// Browser tests of the web console: Debian's headless Chromium driven by
// playwright-core, against a real daemon started by tests/tests/web.rs
// (which passes the LIFEBOAT_* variables below). Run: node --test e2e/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set (tests/tests/web.rs sets it)`);
  return v;
};
const URL_ = env('LIFEBOAT_URL').replace(/\/$/, '');
const PASSWORD = env('LIFEBOAT_ADMIN_PASSWORD');
const RO_TOKEN = env('LIFEBOAT_READONLY_TOKEN');
const DS = env('LIFEBOAT_DATASTORE');
const SOURCE = env('LIFEBOAT_SOURCE');
const RESTORE = env('LIFEBOAT_RESTORE_TARGET');
const ARTIFACTS = env('LIFEBOAT_ARTIFACTS');
const CDP_VM = env('LIFEBOAT_CDP_VM');
const CDP_DS = env('LIFEBOAT_CDP_DATASTORE');
const CDP_JOB = env('LIFEBOAT_CDP_JOB');
const SCHEDULE = `e2e-${Date.now().toString(36)}`;
const T = 20_000;

let browser;
let ctx; // the admin's context, no CSP bypass: violations are errors
let page;
const errors = [];

function watch(p, label) {
  p.on('console', (m) => {
    if (m.type() !== 'error') return;
    const text = m.text();
    // The browser itself logs every 4xx answer of fetch; the tests cause
    // 401s (wrong password, signed out) and 403s (read-only) on purpose
    // and check them. Anything else, CSP violations included, fails.
    // (and a 404 of /api/settings/smtp means "no relay set").
    if (/^Failed to load resource: the server responded with a status of 40[13]/.test(text)) return;
    if (/status of 404/.test(text) && /\/api\/settings\/smtp$/.test(m.location().url)) return;
    // (and a 400 of a CDP export: the test asks for a moment outside the protection).
    if (/status of 400/.test(text) && /\/cdp\/[^/]+\/exports$/.test(m.location().url)) return;
    errors.push(`${label} console: ${text}`);
  });
  p.on('pageerror', (e) => errors.push(`${label} pageerror: ${e.message}`));
}
function noErrors() {
  const e = errors.splice(0);
  assert.deepEqual(e, [], 'browser errors');
}
async function shot(p, name) {
  await p.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
}
async function signIn(p) {
  await p.goto(URL_ + '/');
  await p.getByLabel(/User name|用户名/).fill('admin');
  await p.getByLabel(/^Password$|^密码$/).fill(PASSWORD);
  await p.getByRole('button', { name: /^Sign in$|^登录$/ }).click();
  await p.getByRole('heading', { level: 1, name: /Dashboard|仪表板/ }).waitFor({ timeout: T });
}
async function go(p, navName) {
  await p.getByRole('navigation', { name: /Main|主导航/ }).getByRole('link', { name: navName }).click();
  await p.getByRole('heading', { level: 1, name: navName }).waitFor({ timeout: T });
}
async function axeCheck(p, label) {
  await p.addScriptTag({ path: require.resolve('axe-core') });
  const violations = await p.evaluate(async () => (await window.axe.run(document, { resultTypes: ['violations'] })).violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5) })));
  const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad, [], `${label}: serious accessibility violations`);
}
function walk(dir) {
  const out = [];
  if (!fs.existsSync(dir)) return out;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...walk(p));
    else out.push(p);
  }
  return out;
}

before(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  ctx = await browser.newContext({ ignoreHTTPSErrors: true, locale: 'en-US', acceptDownloads: true, viewport: { width: 1280, height: 860 } });
  page = await ctx.newPage();
  watch(page, 'admin');
});
after(async () => {
  await browser?.close();
});

test('sign-in: a wrong password is refused with the API message, the right one opens the dashboard', async () => {
  await page.goto(URL_ + '/');
  await page.getByRole('heading', { level: 1, name: 'Sign in' }).waitFor({ timeout: T });
  assert.equal(await page.evaluate(() => document.documentElement.lang), 'en');
  await shot(page, '01-login');
  await page.getByLabel('User name').fill('admin');
  await page.getByLabel(/^Password$/).fill('not-the-password');
  await page.getByRole('button', { name: /^Sign in$/ }).click();
  const err = page.getByTestId('login-error');
  await err.waitFor({ timeout: T });
  assert.match(await err.innerText(), /Sign-in failed: .+/);
  await page.getByLabel(/^Password$/).fill(PASSWORD);
  await page.getByRole('button', { name: /^Sign in$/ }).click();
  await page.getByRole('heading', { level: 1, name: 'Dashboard' }).waitFor({ timeout: T });
  assert.match(await page.getByTestId('who').innerText(), /admin/);
  // The session is an HttpOnly cookie: no script sees it, nothing is stored.
  assert.equal(await page.evaluate(() => document.cookie), '');
  assert.equal(await page.evaluate(() => localStorage.length + sessionStorage.length <= 1 && !JSON.stringify(localStorage).includes('.')), true);
  await page.getByText('Memory').first().waitFor({ timeout: T });
  await shot(page, '02-dashboard');
  noErrors();
});

test('back up now: the job runs from the page and its progress reaches 100 % / succeeded', async () => {
  await go(page, 'Jobs');
  await page.getByRole('button', { name: 'Back up now' }).click();
  const dlg = page.getByRole('dialog');
  await dlg.getByLabel('Datastore').selectOption(DS);
  await dlg.getByLabel(/Paths on the appliance/).fill(SOURCE);
  await dlg.getByLabel(/Tags/).fill('e2e, console');
  await dlg.getByRole('button', { name: 'Start backup' }).click();
  const prog = dlg.getByTestId('backup-progress');
  await prog.getByText('succeeded').waitFor({ timeout: 60_000 });
  assert.match(await prog.innerText(), /100 %/);
  await shot(page, '03-backup-done');
  await dlg.getByRole('button', { name: 'Close' }).last().click();
  // The job list shows it too.
  await page.getByRole('cell', { name: /backup/ }).first().waitFor({ timeout: T });
  await shot(page, '04-jobs');
  noErrors();
});

test('snapshots: browse the new snapshot into sub/ and download hello.txt byte for byte', async () => {
  await go(page, 'Snapshots');
  await page.getByTestId('ds-select').selectOption(DS);
  const rows = page.getByTestId('snapshots').locator('tbody tr');
  await rows.first().waitFor({ timeout: T });
  assert.match(await rows.first().innerText(), /e2e/);
  await rows.first().getByRole('button', { name: 'Open' }).click();
  const browser_ = page.getByTestId('snapshot-browser');
  await browser_.getByRole('button', { name: 'sub/' }).click();
  await browser_.getByRole('link', { name: 'data.bin' }).waitFor({ timeout: T });
  await browser_.getByRole('navigation', { name: 'Folder path' }).getByRole('button', { name: 'sub' }).waitFor();
  await shot(page, '05-snapshot-browse');
  await browser_.getByRole('button', { name: 'Root' }).click();
  const [dl] = await Promise.all([page.waitForEvent('download', { timeout: T }), browser_.getByRole('link', { name: 'hello.txt' }).click()]);
  assert.equal(dl.suggestedFilename(), 'hello.txt');
  const got = fs.readFileSync(await dl.path());
  assert.deepEqual(got, fs.readFileSync(path.join(SOURCE, 'hello.txt')));
  noErrors();
});

test('restore: the whole snapshot goes to the restore target, files equal on disk', async () => {
  const browser_ = page.getByTestId('snapshot-browser');
  await browser_.getByRole('button', { name: 'Restore', exact: true }).click();
  const dlg = page.getByRole('dialog');
  await dlg.getByLabel(/Target directory/).fill(RESTORE);
  await dlg.getByRole('button', { name: 'Start restore' }).click();
  await dlg.getByTestId('job-watch').getByText('succeeded').waitFor({ timeout: 60_000 });
  await shot(page, '06-restore-done');
  await dlg.getByRole('button', { name: 'Close' }).last().click();
  const files = walk(RESTORE);
  const data = files.find((f) => f.endsWith(path.join('sub', 'data.bin')));
  const hello = files.find((f) => f.endsWith('hello.txt'));
  assert.ok(data && hello, `restored files: ${files.join(', ')}`);
  assert.deepEqual(fs.readFileSync(data), fs.readFileSync(path.join(SOURCE, 'sub', 'data.bin')));
  assert.deepEqual(fs.readFileSync(hello), fs.readFileSync(path.join(SOURCE, 'hello.txt')));
  noErrors();
});

test('forget: keep rules are previewed first (nothing removed by the preview)', async () => {
  const before = await page.evaluate(async (ds) => (await (await fetch(`/api/datastores/${ds}/snapshots`)).json()).length, DS);
  await page.getByRole('button', { name: 'Forget by keep rules' }).click();
  const dlg = page.getByRole('dialog');
  await dlg.getByLabel('Last').fill('1');
  await dlg.getByLabel('Daily').fill('');
  await dlg.getByRole('button', { name: 'Preview' }).click();
  const preview = dlg.getByTestId('forget-preview');
  await preview.waitFor({ timeout: T });
  assert.match(await preview.innerText(), new RegExp(`keep 1 snapshots and remove ${before - 1}`));
  await dlg.getByRole('button', { name: 'Close' }).click();
  const after_ = await page.evaluate(async (ds) => (await (await fetch(`/api/datastores/${ds}/snapshots`)).json()).length, DS);
  assert.equal(after_, before);
  noErrors();
});

test('schedules: one made on the page is listed, and the API has it', async () => {
  await go(page, 'Schedules');
  await page.getByRole('button', { name: 'New schedule' }).click();
  const dlg = page.getByRole('dialog');
  await dlg.getByLabel('Name').fill(SCHEDULE);
  await dlg.getByLabel(/Cron expression/).fill('0 15 3 * * *');
  await dlg.getByLabel('Datastore').selectOption(DS);
  await dlg.getByLabel(/Paths on the appliance/).fill(SOURCE);
  await dlg.getByLabel('Daily').fill('7');
  await dlg.getByRole('button', { name: 'Save' }).click();
  await page.getByTestId('schedules').getByRole('cell', { name: SCHEDULE }).waitFor({ timeout: T });
  const listed = await page.evaluate(async () => (await (await fetch('/api/schedules', { credentials: 'same-origin' })).json()).map((s) => [s.name, s.cron, s.keep?.daily]));
  assert.ok(listed.some(([n, c, d]) => n === SCHEDULE && c === '0 15 3 * * *' && d === 7), JSON.stringify(listed));
  await shot(page, '07-schedules');
  noErrors();
});

test('continuous protection: the VM protecting on the axis, a bookmark and an export of it from the page', async () => {
  await go(page, 'Continuous protection');
  const vm = page.getByTestId(`cdp-vm-${CDP_VM}`);
  await vm.waitFor({ timeout: T });
  assert.equal(await vm.getByTestId('cdp-state').innerText(), 'protecting');
  assert.match(await vm.getByRole('link', { name: /Job/ }).innerText(), new RegExp(CDP_JOB));
  await vm.getByTestId('cdp-session').first().waitFor({ timeout: T });
  assert.match(await vm.getByRole('cell').nth(1).innerText(), /16\.0 MiB/);
  // A bookmark, now.
  await vm.getByLabel('Bookmark name').fill('e2e-mark');
  await vm.getByRole('button', { name: 'Add bookmark' }).click();
  await vm.getByTestId('cdp-bookmark').filter({ hasText: 'e2e-mark' }).waitFor({ timeout: T });
  const marks = await page.evaluate(async ([ds, v]) => (await (await fetch(`/api/datastores/${ds}/cdp/${v}`, { credentials: 'same-origin' })).json()).bookmarks.map((b) => b.name), [CDP_DS, CDP_VM]);
  assert.ok(marks.includes('e2e-mark'), JSON.stringify(marks));
  // A moment outside the protection: the API's message.
  await vm.getByLabel('Moment by').selectOption('time');
  await vm.getByLabel(/^Moment \(/).fill('2020-01-01T00:00');
  await vm.getByRole('button', { name: 'Export', exact: true }).click();
  await vm.getByRole('alert').filter({ hasText: /outside the protected time/ }).waitFor({ timeout: T });
  // Export the bookmark's moment: an nbd:// URI per disk.
  await vm.getByLabel('Moment by').selectOption('bookmark');
  await vm.getByRole('combobox', { name: /^Bookmark/ }).selectOption('e2e-mark');
  await vm.getByRole('button', { name: 'Export', exact: true }).click();
  const uri = vm.getByTestId('cdp-uri').first();
  await uri.waitFor({ timeout: T });
  assert.match(await uri.innerText(), /^nbd:\/\/.+/);
  await vm.getByTestId('cdp-exports').getByRole('button', { name: 'Copy' }).first().waitFor();
  await shot(page, '13-cdp');
  noErrors();
});

test('the other pages render: VMs, lab, settings with the TLS fingerprint', async () => {
  await go(page, 'Virtual machines');
  await shot(page, '08-vms');
  await go(page, 'Lab');
  await shot(page, '09-lab');
  await go(page, 'Settings');
  const fp = await page.getByTestId('fingerprint').innerText({ timeout: T });
  assert.match(fp, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/i);
  await page.getByRole('heading', { name: 'API tokens' }).waitFor();
  await shot(page, '10-settings');
  // A new token's secret is shown once, in a dialog, and the token works.
  await page.getByLabel('Token name').fill(SCHEDULE + '-op');
  await page.getByLabel('Role').selectOption('operator');
  await page.getByRole('button', { name: 'Create token' }).click();
  const secret = await page.getByTestId('new-token').inputValue({ timeout: T });
  assert.match(secret, /^[0-9a-f]{16}\.[0-9a-f]+$/);
  await page.getByRole('dialog').getByRole('button', { name: 'Copy' }).waitFor();
  await page.getByRole('dialog').getByRole('button', { name: 'Close' }).last().click();
  await page.getByRole('cell', { name: SCHEDULE + '-op' }).waitFor({ timeout: T });
  const role = await page.evaluate(async (tok) => (await (await fetch('/api/session', { headers: { Authorization: `Bearer ${tok}` } })).json()).role, secret);
  assert.equal(role, 'operator');
  noErrors();
});

test('language: 简体中文 switches the text and <html lang>, kept across a reload', async () => {
  await page.getByTestId('lang').first().selectOption('zh-CN');
  await page.getByRole('heading', { level: 1, name: '设置' }).waitFor({ timeout: T });
  assert.equal(await page.evaluate(() => document.documentElement.lang), 'zh-CN');
  await page.getByRole('link', { name: '仪表板' }).waitFor();
  await page.reload();
  await page.getByRole('heading', { level: 1, name: '设置' }).waitFor({ timeout: T });
  assert.equal(await page.evaluate(() => localStorage.getItem('lifeboat.lang')), 'zh-CN');
  assert.equal(await page.evaluate(() => document.documentElement.lang), 'zh-CN');
  await shot(page, '11-settings-zh');
  await page.getByTestId('lang').first().selectOption('en');
  await page.getByRole('heading', { level: 1, name: 'Settings' }).waitFor({ timeout: T });
  assert.equal(await page.evaluate(() => document.documentElement.lang), 'en');
  noErrors();
});

test('a read-only token: no backup, delete or restore buttons, and a forced POST gets 403', async () => {
  const roCtx = await browser.newContext({ ignoreHTTPSErrors: true, locale: 'en-US' });
  const p = await roCtx.newPage();
  watch(p, 'read-only');
  try {
    await p.goto(URL_ + '/');
    await p.getByRole('button', { name: 'Sign in with an API token' }).click();
    await p.getByLabel('API token').fill(RO_TOKEN);
    await p.getByRole('button', { name: /^Sign in$/ }).click();
    await p.getByRole('heading', { level: 1, name: 'Dashboard' }).waitFor({ timeout: T });
    assert.match(await p.getByTestId('who').innerText(), /read-only/);
    await go(p, 'Jobs');
    await p.getByRole('button', { name: 'Refresh' }).waitFor();
    assert.equal(await p.getByRole('button', { name: 'Back up now' }).count(), 0);
    await go(p, 'Snapshots');
    await p.getByTestId('ds-select').selectOption(DS);
    const rows = p.getByTestId('snapshots').locator('tbody tr');
    await rows.first().waitFor({ timeout: T });
    assert.equal(await p.getByRole('button', { name: 'Delete' }).count(), 0);
    assert.equal(await p.getByRole('button', { name: /Forget|Verify|Reclaim space/ }).count(), 0);
    await rows.first().getByRole('button', { name: 'Open' }).click();
    await p.getByTestId('tree').waitFor({ timeout: T });
    assert.equal(await p.getByRole('button', { name: /^Restore/ }).count(), 0);
    await go(p, 'Schedules');
    await p.getByTestId('schedules').waitFor({ timeout: T });
    assert.equal(await p.getByRole('button', { name: /New schedule|Delete|Run now/ }).count(), 0);
    await go(p, 'Continuous protection');
    await p.getByTestId(`cdp-vm-${CDP_VM}`).getByTestId('cdp-session').first().waitFor({ timeout: T });
    assert.equal(await p.getByRole('button', { name: /Start protection|Stop|Add bookmark|Export/ }).count(), 0);
    assert.equal(await p.getByRole('heading', { name: 'Protect a VM' }).count(), 0);
    await shot(p, '12-read-only');
    // The API refuses it anyway, CSRF token and all.
    const status = await p.evaluate(async ({ src, ds }) => {
      const s = await (await fetch('/api/session', { credentials: 'same-origin' })).json();
      const r = await fetch('/api/jobs', {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf_token },
        body: JSON.stringify({ kind: 'backup', datastore: ds, paths: [src] }),
      });
      return [s.role, r.status];
    }, { src: SOURCE, ds: DS });
    assert.deepEqual(status, ['read-only', 403]);
    noErrors();
  } finally {
    await roCtx.close();
  }
});

test('accessibility (axe-core): login, dashboard, snapshots, settings and CDP have no serious or critical violations', async () => {
  // axe is injected as a script, which the page's CSP forbids: this
  // context alone bypasses it.
  const aCtx = await browser.newContext({ ignoreHTTPSErrors: true, bypassCSP: true, locale: 'en-US' });
  const p = await aCtx.newPage();
  watch(p, 'axe');
  try {
    await p.goto(URL_ + '/');
    await p.getByRole('heading', { level: 1, name: 'Sign in' }).waitFor({ timeout: T });
    await axeCheck(p, 'login');
    await signIn(p);
    await p.getByText('Memory').first().waitFor({ timeout: T });
    await axeCheck(p, 'dashboard');
    await go(p, 'Snapshots');
    await p.getByTestId('ds-select').selectOption(DS);
    await p.getByTestId('snapshots').locator('tbody tr').first().getByRole('button', { name: 'Open' }).click();
    await p.getByTestId('tree').waitFor({ timeout: T });
    await axeCheck(p, 'snapshots');
    await go(p, 'Settings');
    await p.getByTestId('fingerprint').waitFor({ timeout: T });
    await axeCheck(p, 'settings');
    await go(p, 'Continuous protection');
    await p.getByTestId(`cdp-vm-${CDP_VM}`).getByTestId('cdp-session').first().waitFor({ timeout: T });
    await axeCheck(p, 'cdp');
    noErrors();
  } finally {
    await aCtx.close();
  }
});

test('sign out returns to the sign-in page and ends the session', async () => {
  await page.getByTestId('logout').click();
  await page.getByRole('heading', { level: 1, name: 'Sign in' }).waitFor({ timeout: T });
  const status = await page.evaluate(async () => (await fetch('/api/session', { credentials: 'same-origin' })).status);
  assert.equal(status, 401);
  // A page of the app opened now also lands on the sign-in page.
  await page.goto(URL_ + '/snapshots');
  await page.getByRole('heading', { level: 1, name: 'Sign in' }).waitFor({ timeout: T });
  noErrors();
});

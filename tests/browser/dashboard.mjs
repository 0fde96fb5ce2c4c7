// The dashboard in a real headless Chromium (tests/dashboard.rs runs this
// against a running `pointsman run`). Checks what SPEC 8.1 promises: the
// page shows the canary and the experiment, the pause button pauses the
// canary once the admin token is entered, nothing is fetched from anywhere
// but the admin address, it fits a phone-width screen, the experiment kill
// switch asks for a confirmation; saves a screenshot.
//
// Environment: ADMIN_URL (http://127.0.0.1:PORT), ADMIN_TOKEN, CANARY,
// EXPERIMENT, SCREENSHOT (PNG path), USER_DATA_DIR (fresh folder), and
// optionally CHROMIUM (default /usr/bin/chromium).
import { chromium } from 'playwright-core';

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const admin = env('ADMIN_URL').replace(/\/$/, '');
const token = env('ADMIN_TOKEN');
const canary = env('CANARY');
const experiment = env('EXPERIMENT');
const screenshot = env('SCREENSHOT');
const userDataDir = env('USER_DATA_DIR');
const executablePath = env('CHROMIUM', '/usr/bin/chromium');
const origin = new URL(admin).origin;

const step = (what) => console.log(`dashboard test: ${what}`);
function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  step(`ok: ${what}`);
}

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
    '--disable-quic',
  ],
  viewport: { width: 1280, height: 900 },
  timeout: 60_000,
});

const requests = [];
const offsite = [];
const problems = [];
context.on('request', (r) => {
  const url = r.url();
  requests.push(`${r.method()} ${url}`);
  if (!url.startsWith('data:') && new URL(url).origin !== origin) offsite.push(url);
});
// Anything off the admin address is refused, so a stray fetch fails the
// test here instead of reaching out.
await context.route((url) => url.origin !== origin && url.protocol !== 'data:', (route) => route.abort());

try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    // A fetch answered 401/404 is logged by the browser itself; CSP
    // violations and script errors are not that.
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) {
      problems.push(`console: ${m.text()}`);
    }
  });

  const resp = await page.goto(`${admin}/`);
  check(resp && resp.status() === 200, 'GET / answers 200');
  check((resp.headers()['content-type'] || '').startsWith('text/html'), 'GET / is HTML');

  const canaryCard = page.locator(`article[data-canary="${canary}"]`);
  const experimentCard = page.locator(`article[data-experiment="${experiment}"]`);
  await canaryCard.waitFor({ timeout: 15_000 });
  await experimentCard.waitFor({ timeout: 15_000 });
  check((await canaryCard.locator('h3').textContent()) === canary, `the canary ${canary} is shown`);
  check((await experimentCard.locator('h3').textContent()) === experiment, `the experiment ${experiment} is shown`);
  const canaryState = canaryCard.locator('[data-field="state"]');
  check((await canaryState.textContent()) === 'progressing', 'the canary is progressing');
  check((await canaryCard.locator('ol.ladder li').count()) >= 2, 'the step ladder is shown');
  check((await canaryCard.locator('ol.ladder li.current').count()) === 1, 'the current step is marked');
  check((await canaryCard.locator('table.window tbody tr').count()) === 2, 'the guard window has stable and canary');
  check((await experimentCard.locator('table.variants tbody tr').count()) === 2, 'both variants are shown');
  check(/^SRM: /.test(await experimentCard.locator('[data-field="srm"]').textContent()), 'the SRM verdict is shown');
  check((await page.locator('#route-list tbody tr').count()) >= 2, 'routes are listed');
  check((await page.locator('[data-field="generation"]').textContent()) === '1', 'the config generation is shown');
  const upstreams = await page.locator('#upstream-list').textContent();
  check(/endpoint|upstream health: not available/.test(upstreams), 'upstreams: health per endpoint, or said to be unavailable');

  // The charts: the test sends traffic; the first point comes after one
  // 10 s bucket. Attached, not "visible": a series that stays level (the
  // sender's steady rate) draws a line of zero height, which Playwright
  // counts as hidden.
  await canaryCard.locator('svg.chart path.line').first().waitFor({ state: 'attached', timeout: 30_000 });
  await experimentCard.locator('svg.chart path.line').first().waitFor({ state: 'attached', timeout: 15_000 });
  check((await canaryCard.locator('svg.chart').count()) === 3, 'the canary has requests, error rate and p99 charts');

  // Phone width: nothing wider than the screen.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(300);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `no horizontal scrolling at phone width (overflow ${overflow}px)`);
  await page.screenshot({ path: screenshot.replace(/\.png$/, '-phone.png'), fullPage: false });
  await page.setViewportSize({ width: 1280, height: 900 });

  // Pause: a wrong token is refused (403) and asked for again, then the
  // right one pauses the canary.
  await canaryCard.locator('button[data-action="pause"]').click();
  const dialog = page.locator('dialog#ask');
  await dialog.waitFor({ state: 'visible', timeout: 5_000 });
  check((await page.locator('#ask-title').textContent()) === 'Admin token needed', 'pause without a token asks for it (401)');
  await page.locator('#ask-input').fill('not-the-token');
  await page.locator('#ask-ok').click();
  await page.locator('#ask-title', { hasText: 'Wrong admin token' }).waitFor({ timeout: 5_000 });
  step('ok: a wrong token is asked for again (403)');
  await page.locator('#ask-input').fill(token);
  await page.locator('#ask-ok').click();
  await dialog.waitFor({ state: 'hidden', timeout: 5_000 });
  await page.locator('#notice', { hasText: 'done' }).waitFor({ timeout: 5_000 });
  const canaries = await (await fetch(`${admin}/canaries`)).json();
  const live = canaries.canaries.find((c) => c.name === canary);
  check(live && live.state === 'paused', `GET /canaries says ${canary} is paused`);
  await canaryState.filter({ hasText: 'paused' }).waitFor({ timeout: 5_000 });
  check(await canaryCard.locator('button[data-action="pause"]').isDisabled(), 'pause is disabled once paused');
  check(!(await canaryCard.locator('button[data-action="resume"]').isDisabled()), 'resume is enabled once paused');
  const authorized = await page.evaluate(() => sessionStorage.getItem('pointsman.admin-token'));
  check(authorized === token, 'the token is kept in sessionStorage');

  // The kill switch: stop asks for a confirmation, then uses the kept token.
  await experimentCard.locator('button[data-action="stop"]').click();
  await page.locator('#ask-title', { hasText: `stop experiment ${experiment}?` }).waitFor({ timeout: 5_000 });
  check(await page.locator('#ask-label').isHidden(), 'a confirmation, not a token prompt, once the token is kept');
  await page.locator('#ask-ok').click();
  await dialog.waitFor({ state: 'hidden', timeout: 5_000 });
  await page.locator('#notice', { hasText: `stop experiment ${experiment}: done` }).waitFor({ timeout: 5_000 });
  const experiments = await (await fetch(`${admin}/experiments`)).json();
  const stopped = experiments.experiments.find((e) => e.name === experiment);
  check(stopped && stopped.state === 'stopped', `GET /experiments says ${experiment} is stopped`);
  await experimentCard.locator('[data-field="state"]', { hasText: 'stopped' }).waitFor({ timeout: 5_000 });

  // A few refreshes, then the picture.
  await page.waitForTimeout(2_500);
  await page.screenshot({ path: screenshot, fullPage: true });
  step(`screenshot saved to ${screenshot}`);

  check(offsite.length === 0, `no request off ${origin} (${offsite.join(', ') || 'none'})`);
  check(problems.length === 0, `no script errors or CSP violations (${problems.join('; ') || 'none'})`);
  const posts = requests.filter((r) => r.startsWith('POST '));
  const clicked = [`/canaries/${canary}/pause`, `/experiments/${experiment}/stop`];
  check(
    posts.length === 4 && posts.every((r) => clicked.some((c) => r.endsWith(c))),
    `the page posted only what was clicked (${posts.length} POSTs: 3 pause, 1 stop)`,
  );
  step(`${requests.length} requests, all to ${origin}`);
} finally {
  await context.close();
}

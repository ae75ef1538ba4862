// A reviewer's session in Chromium against `calibscope serve` on a two-model pipeline: a narrow
// window keeps every control reachable, the model list works from the keyboard, no plot offers to
// upload its data, a sign-off note stays with its model, and a stopped server is said plainly
// while the last view stays. Launch helpers are workbench_e2e.test.ts's.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, serve, skip, type Serve } from '../helpers/workbench_browser.js';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const MODEL = path.join(ROOT, 'test', 'fixtures', 'reference', 'bert-tiny-a', 'model');

describe('workbench review (calibscope serve + Chromium)', { skip }, () => {
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'calibscope-review-e2e-'));
  let browser: Browser;
  let page: Page;
  let server: Serve;
  const pageErrors: string[] = [];

  before(async () => {
    assert.ok(fs.existsSync(path.join(ROOT, 'dist', 'ui', 'index.html')), 'the renderer is not built: run npm run build:ui');
    const pipeline = path.join(scratch, 'pipeline.json');
    fs.writeFileSync(pipeline, JSON.stringify({ models: [{ id: 'model-a', path: MODEL }, { id: 'model-b', path: MODEL }] }));
    server = await serve(['--pipeline', pipeline, '--cache', path.join(scratch, 'cache')]);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    page = await browser.newPage({ viewport: { width: 1024, height: 700 }, colorScheme: 'light' });
    page.on('pageerror', (e) => pageErrors.push(e.message));
    await page.goto(server.url);
    await page.locator('[data-testid=model-row]').first().waitFor();
    await page.click('button:has-text("Calibrate all")');
    await page.waitForFunction(
      () => [...document.querySelectorAll('[data-testid=model-row]')].every((e) => (e as HTMLElement).dataset.state === 'valid'),
      null,
      { timeout: 60_000 },
    );
    await page.locator('[data-testid=scale-heatmap] .heatmaplayer').waitFor({ timeout: 20_000 });
  });

  after(async () => {
    await browser?.close();
    if (server && server.child.exitCode === null) await server.stop();
    fs.rmSync(scratch, { recursive: true, force: true });
  });

  test('at 1024 × 700 nothing is cut off: the page does not overflow, every column and control is reachable', async () => {
    const m = await page.evaluate(() => {
      const right = (sel: string) => Math.max(...[...document.querySelectorAll(sel)].map((e) => e.getBoundingClientRect().right));
      const grid = document.querySelector('.tgrid') as HTMLElement;
      return {
        pageWidth: document.documentElement.scrollWidth,
        asideRight: right('aside.right'),
        connRight: right('.conn'),
        metricRight: right('.metric-switch button'),
        panelRight: document.querySelector('.heatmap-panel')!.getBoundingClientRect().right,
        gridScrolls: grid.scrollWidth > grid.clientWidth,
        gridOverflow: getComputedStyle(grid).overflowX,
      };
    });
    assert.ok(m.pageWidth <= 1024, `the page is ${m.pageWidth} px wide in a 1024 px window`);
    assert.ok(m.asideRight <= 1024 && m.connRight <= 1024, JSON.stringify(m));
    assert.ok(m.metricRight <= m.panelRight, `the metric buttons end at ${m.metricRight}, the panel at ${m.panelRight}`);
    // The tensor table's last column: reached by scrolling the table sideways.
    assert.ok(!m.gridScrolls || m.gridOverflow === 'auto', JSON.stringify(m));
    const last = page.locator('.thead .th-bits_per_weight');
    await last.scrollIntoViewIfNeeded();
    const box = (await last.boundingBox())!;
    assert.ok(box.x + box.width <= 1024 && box.x >= 0, `bits/w header at ${JSON.stringify(box)}`);
    await page.screenshot({ path: path.join(ROOT, 'test-results', 'workbench-review-1024.png') }).catch(() => undefined);
  });

  test('no plot offers to upload its data to a cloud service', async () => {
    const box = (await page.locator('[data-testid=scale-heatmap] .nsewdrag').first().boundingBox())!;
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    await page.locator('[data-testid=scale-heatmap] .modebar-btn').first().waitFor({ state: 'attached' });
    const titles = await page.$$eval('.modebar-btn', (els) => els.map((e) => e.getAttribute('data-title') ?? ''));
    assert.ok(titles.length > 0);
    assert.ok(!titles.some((t) => /share|cloud/i.test(t)), titles.join(', '));
  });

  test('the model list works from the keyboard: Tab reaches it, ↓ and Enter select', async () => {
    await page.click('[data-testid=model-row][data-model-id="model-a"]');
    await page.locator('input.filter').focus();
    await page.keyboard.press('Shift+Tab'); // from the filter back: Calibrate all … the selected model
    for (let i = 0; i < 6 && !(await page.evaluate(() => document.activeElement?.getAttribute('data-testid') === 'model-row')); i++) await page.keyboard.press('Shift+Tab');
    assert.equal(await page.evaluate(() => (document.activeElement as HTMLElement).dataset.modelId), 'model-a', 'the selected model is in the Tab order');
    await page.keyboard.press('ArrowDown');
    await page.waitForFunction(() => document.querySelector('[data-testid=model-row][aria-selected=true]')?.getAttribute('data-model-id') === 'model-b');
    assert.equal(await page.evaluate(() => (document.activeElement as HTMLElement).dataset.modelId), 'model-b', 'focus follows');
    await page.keyboard.press('ArrowUp');
    await page.waitForFunction(() => document.querySelector('[data-testid=model-row][aria-selected=true]')?.getAttribute('data-model-id') === 'model-a');
    // Enter on a focused row selects it.
    await page.locator('[data-testid=model-row][data-model-id="model-b"]').focus();
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.querySelector('[data-testid=model-row][aria-selected=true]')?.getAttribute('data-model-id') === 'model-b');
  });

  test('a decision and note typed for one model are not carried to the next', async () => {
    await page.click('[data-testid=model-row][data-model-id="model-a"]');
    await page.locator('[data-testid=signoff-note]').waitFor();
    await page.fill('[data-testid=signoff-reviewer]', 'Grace Hopper');
    await page.selectOption('[data-testid=signoff-decision]', 'rejected');
    await page.fill('[data-testid=signoff-note]', 'layer 0 drifts');
    await page.click('[data-testid=model-row][data-model-id="model-b"]');
    await page.waitForFunction(() => document.querySelector('[data-testid=model-row][aria-selected=true]')?.getAttribute('data-model-id') === 'model-b');
    await page.waitForFunction(() => (document.querySelector('[data-testid=signoff-note]') as HTMLTextAreaElement | null)?.value === '');
    assert.equal(await page.inputValue('[data-testid=signoff-decision]'), 'approved');
    assert.equal(await page.inputValue('[data-testid=signoff-reviewer]'), 'Grace Hopper', 'the reviewer stays');
  });

  test('a stopped server is said plainly and the last view stays', async () => {
    await page.click('[data-testid=model-row][data-model-id="model-a"]');
    await page.locator('[data-testid=tensor-row]').first().waitFor();
    await page.locator('[data-testid=scale-heatmap] .heatmaplayer').waitFor();
    const tensor = await page.locator('.tensor-title').getAttribute('title');
    assert.equal(await server.stop(), 0);
    await page.locator('[data-testid=connection-lost]').waitFor({ timeout: 10_000 });
    assert.match((await page.locator('[data-testid=connection-lost]').textContent())!, /Lost the connection to calibscope serve/);
    const t0 = Date.now();
    await page.click('[data-testid=model-row][data-model-id="model-b"]');
    await page.locator('[data-testid=toast]').filter({ hasText: /not connected/ }).waitFor({ timeout: 2000 });
    assert.ok(Date.now() - t0 < 2000);
    assert.equal(await page.locator('[data-testid=model-row][aria-selected=true]').getAttribute('data-model-id'), 'model-a', 'the model shown stays selected');
    assert.equal(await page.locator('.tensor-title').getAttribute('title'), tensor);
    assert.ok((await page.locator('[data-testid=tensor-row]').count()) > 0, 'the tensor table stays');
    assert.deepEqual(pageErrors, []);
  });
});

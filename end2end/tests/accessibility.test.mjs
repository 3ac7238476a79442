// Accessibility: axe-core (from npm) run inside Chromium on the main pages as a guest, a shopper and
// staff. No page may have a critical or serious violation; the moderate and minor ones each page has are
// printed, so a change that adds one shows in the test's output.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { ADMIN, SHOPPER, hydrated, launchBrowser, login, startTessera } from './helpers.mjs';

const AXE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

const PAGES = {
  guest: ['/', '/login', '/register', '/catalog', '/catalog?q=mug', '/catalog/c/apparel', '/catalog/p/mug-stn-01', '/catalog/p/tee-blu-m', '/cart', '/no-such-page'],
  shopper: ['/', '/account', '/cart', '/cart/checkout', '/cart/orders', '/catalog/p/mug-stn-01'],
  staff: ['/admin/inventory', '/admin/inventory?low=true', '/admin/inventory/sku/MUG-STN-01', '/admin/inventory/reservations', '/admin/users', '/admin/events', '/admin/fragments', '/catalog/new'],
};

/** axe's violations on the page as it is now (evaluated through the DevTools protocol, which the page's
 * Content-Security-Policy does not govern). */
async function violations(page) {
  await page.evaluate(AXE);
  return page.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ['violations'] });
    return result.violations.map((violation) => ({
      id: violation.id,
      impact: violation.impact,
      help: violation.help,
      targets: violation.nodes.slice(0, 3).map((node) => node.target.join(' ')),
      count: violation.nodes.length,
    }));
  });
}

describe('accessibility', () => {
  let site;
  let browser;

  before(async () => {
    site = await startTessera();
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await site?.stop();
  });

  test('on a phone the account menu folds behind the name and opens to a tap', async () => {
    const page = await browser.context.newPage();
    await login(page, site.url, ADMIN);
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(`${site.url}/admin/inventory`);
    await hydrated(page);
    assert.equal(await page.isVisible('[data-testid=logout]'), false, 'folded on a phone');
    await page.click('.account-menu > summary');
    assert.equal(await page.isVisible('[data-testid=logout]'), true, 'open after a tap');
    assert.deepEqual((await violations(page)).filter((violation) => ['critical', 'serious'].includes(violation.impact)), []);
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.goto(`${site.url}/admin/inventory`);
    assert.equal(await page.isVisible('[data-testid=logout]'), true, 'in the bar on a wide screen');
    assert.equal(await page.isVisible('.account-menu > summary'), false);
    await page.close();
  });

  for (const [who, paths] of Object.entries(PAGES)) {
    test(`the main pages have no critical or serious violations, as ${who}`, async () => {
      const page = await browser.context.newPage();
      if (who === 'shopper') await login(page, site.url, SHOPPER);
      if (who === 'staff') await login(page, site.url, ADMIN);
      const serious = [];
      for (const path of paths) {
        await page.goto(`${site.url}${path}`);
        if (await page.$('meta[name=tessera-fragment]')) await hydrated(page);
        for (const violation of await violations(page)) {
          const line = `${path}: ${violation.impact} ${violation.id} ×${violation.count} (${violation.help}) at ${violation.targets.join(', ')}`;
          if (violation.impact === 'critical' || violation.impact === 'serious') serious.push(line);
          else console.log(`# ${who} ${line}`);
        }
      }
      assert.deepEqual(serious, []);
      await page.close();
    });
  }
});

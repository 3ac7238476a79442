// Version skew in the browser: a hydrated page marks its API calls with its build and contract version.
// A server of another build answers as usual; a server of another contract answers 409 with the reload
// header, and the page reloads once (never in a loop) to the build that server has.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { hydrated, launchBrowser, startTessera } from './helpers.mjs';

describe('version skew', () => {
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

  const search = async (page, words) => {
    await page.fill('[data-testid=catalog-search]', words);
    await page.click('[data-testid=listing-form] button[type=submit]');
  };

  test('another build keeps working; another contract reloads the page once', async () => {
    const page = await browser.context.newPage();
    await page.goto(`${site.url}/catalog`);
    await hydrated(page);
    await page.evaluate(() => { window.tesseraMarker = 'same page'; });

    // The server answering is of another build, with the same contract: the call works, no reload.
    const marks = [];
    await page.route('**/catalog/api/**', async (route) => {
      const headers = route.request().headers();
      marks.push({ build: headers['x-tessera-build'], contract: headers['x-tessera-contract'] });
      await route.continue({ headers: { ...headers, 'x-tessera-build': 'ffffffffffffffff' } });
    });
    await search(page, 'mug');
    await page.waitForURL(/q=mug/);
    await page.waitForLoadState('networkidle');
    assert.ok(marks.length > 0, 'searching after hydration calls the catalog API');
    assert.ok(marks.every((mark) => /^[0-9a-f]{16}$/.test(mark.build) && mark.contract === '1'), JSON.stringify(marks));
    assert.equal(await page.evaluate(() => window.tesseraMarker), 'same page', 'no reload for a compatible build');
    assert.ok((await page.textContent('[data-testid=result-count]')).match(/\d/), 'the results arrived');
    await page.unroute('**/catalog/api/**');

    // Now the server speaks another contract: it refuses, and the page reloads once.
    await page.route('**/catalog/api/**', (route) => route.continue({ headers: { ...route.request().headers(), 'x-tessera-contract': '999' } }));
    const loads = [];
    page.on('load', () => loads.push(page.url()));
    await search(page, 'pen');
    await page.waitForFunction(() => window.tesseraMarker === undefined, null, { timeout: 15_000 });
    await hydrated(page);
    assert.equal(loads.length, 1, 'reloaded once');
    // Still refused after the reload (the server did not change): no second reload, no loop.
    await page.evaluate(() => { window.tesseraMarker = 'after the reload'; });
    await search(page, 'notebook');
    await page.waitForLoadState('networkidle');
    await new Promise((resolve) => setTimeout(resolve, 1000));
    assert.equal(loads.length, 1, 'never a second reload');
    assert.equal(await page.evaluate(() => window.tesseraMarker), 'after the reload');
    await page.close();
  });
});

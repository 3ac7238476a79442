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
  const mug = (page) => page.locator('li.product[data-sku="MUG-STN-01"]');
  const addToCart = (page) => mug(page).locator('button.add-to-cart').click();
  const addStatus = (page) => mug(page).locator('.status');

  test('another build keeps working; another contract reloads the page once', async () => {
    const page = await browser.context.newPage();
    await page.goto(`${site.url}/catalog?q=stoneware`);
    await hydrated(page);
    await page.evaluate(() => { window.tesseraMarker = 'same page'; });

    // The server answering is of another build, with the same contract: the call works, no reload.
    const marks = [];
    await page.route('**/cart/api/**', async (route) => {
      const headers = route.request().headers();
      marks.push({ build: headers['x-tessera-build'], contract: headers['x-tessera-contract'] });
      await route.continue({ headers: { ...headers, 'x-tessera-build': 'ffffffffffffffff' } });
    });
    await addToCart(page);
    await addStatus(page).filter({ hasText: 'Added to your cart' }).waitFor();
    assert.ok(marks.length > 0, 'adding to the cart calls the cart API');
    assert.ok(marks.every((mark) => /^[0-9a-f]{16}$/.test(mark.build) && mark.contract === '1'), JSON.stringify(marks));
    assert.equal(await page.evaluate(() => window.tesseraMarker), 'same page', 'no reload for a compatible build');
    await page.unroute('**/cart/api/**');

    // A navigation inside the catalog stays in the page while the same build answers...
    await search(page, 'notebook');
    await page.waitForURL(/q=notebook/);
    assert.ok((await page.textContent('[data-testid=result-count]')).match(/\d/), 'the results arrived');
    assert.equal(await page.evaluate(() => window.tesseraMarker), 'same page', 'searching does not reload');
    // ...and becomes a real load when another build answers (a deploy takes effect at the next click).
    const loads = [];
    page.on('load', () => loads.push(page.url()));
    await page.route((url) => url.pathname === '/catalog' && url.searchParams.get('q') === 'stoneware', async (route) => {
      const response = await route.fetch();
      const html = (await response.text()).replace(/(<meta name="tessera-build" content=")[0-9a-f]+/, '$1ffffffffffffffff');
      await route.fulfill({ response, body: html });
    });
    await search(page, 'stoneware');
    await page.waitForFunction(() => window.tesseraMarker === undefined, null, { timeout: 15_000 });
    await hydrated(page);
    assert.equal(loads.length, 1, 'another build answering the navigation: one real load');
    assert.match(page.url(), /q=stoneware/);
    await page.unroute(() => true);

    // Now the server speaks another contract: it refuses, and the page reloads once.
    await page.evaluate(() => { window.tesseraMarker = 'same page'; });
    await page.route('**/cart/api/**', (route) => route.continue({ headers: { ...route.request().headers(), 'x-tessera-contract': '999' } }));
    await addToCart(page);
    await page.waitForFunction(() => window.tesseraMarker === undefined, null, { timeout: 15_000 });
    await hydrated(page);
    assert.equal(loads.length, 2, 'reloaded once');
    // Still refused after the reload (the server did not change): no second reload, no loop.
    await page.evaluate(() => { window.tesseraMarker = 'after the reload'; });
    await addToCart(page);
    await addStatus(page).filter({ hasText: /\S/ }).waitFor();
    await new Promise((resolve) => setTimeout(resolve, 1000));
    assert.equal(loads.length, 2, 'never a second reload');
    assert.equal(await page.evaluate(() => window.tesseraMarker), 'after the reload');
    await page.close();
  });
});

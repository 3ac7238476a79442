// The catalog as shoppers use it: search, filter, open a product, pick a variant, add it to the cart,
// and move back and forward through their filters, all without a page reload after hydration.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ADMIN, SHOPPER, hydrated, launchBrowser, login, startTessera } from './helpers.mjs';

describe('catalog', () => {
  let site;
  let browser;

  before(async () => {
    site = await startTessera();
    browser = await launchBrowser();
    // The inventory's seed reaches the catalog as events; wait until inventory has delivered every one
    // (its event status, as a site admin reads it), so the in-stock filter gives the same answer every
    // time below.
    const admin = await browser.context.newPage();
    await login(admin, site.url, ADMIN);
    for (let attempt = 0; ; attempt += 1) {
      const status = await (await admin.request.get(`${site.url}/admin/inventory/events/status`)).json();
      if (status.outbox_depth === 0) break;
      if (attempt > 600) throw new Error(`inventory's seed events were never all delivered: ${JSON.stringify(status)}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await admin.close();
    // The tests below start as a guest again.
    await browser.context.clearCookies();
  });

  after(async () => {
    await browser?.close();
    await site?.stop();
  });

  test('search → filter → product → add to cart → badge, with back and forward restoring the filters', async () => {
    const page = await browser.context.newPage();
    await login(page, site.url, SHOPPER);
    await page.goto(`${site.url}/catalog`);
    await hydrated(page);
    // The browser's own timing of the page names where its time went: the shell's phases and the catalog's.
    const phases = await page.evaluate(() => performance.getEntriesByType('navigation')[0].serverTiming.map((entry) => entry.name));
    for (const phase of ['session', 'upstream', 'compose', 'catalog-data', 'catalog-render', 'total']) {
      assert.ok(phases.includes(phase), `${phase} in ${phases.join(', ')}`);
    }
    // A marker that a full page load would wipe out.
    await page.evaluate(() => { window.tesseraMarker = 'still here'; });
    const count = async () => Number((await page.textContent('[data-testid=result-count]')).replace(/\D/g, ''));
    const all = await count();
    assert.ok(all >= 500, `the demo catalogue has ${all} products`);

    await page.fill('[data-testid=catalog-search]', 'hoodie');
    await Promise.all([page.waitForURL(/q=hoodie/), page.click('[data-testid=listing-form] button[type=submit]')]);
    await page.waitForFunction((before) => Number((document.querySelector('[data-testid=result-count]')?.textContent ?? 'x').replace(/\D/g, '') || NaN) < before, all);
    await page.waitForLoadState('networkidle');
    const hoodies = await count();
    assert.ok(hoodies > 0 && hoodies < all);
    for (const name of await page.locator('li.product h2').allTextContents()) {
      assert.match(name, /hoodie/i);
    }

    await page.check('[data-testid=in-stock]');
    await Promise.all([page.waitForURL(/stock=1/), page.click('[data-testid=listing-form] button[type=submit]')]);
    await page.waitForLoadState('networkidle');
    const inStock = await count();
    assert.ok(inStock <= hoodies);
    assert.equal(await page.evaluate(() => window.tesseraMarker), 'still here', 'filters changed without a reload');

    // Open a product: breadcrumbs, variant picker, add the chosen variant to the cart.
    const first = page.locator('li.product h2 a').first();
    const name = await first.textContent();
    await Promise.all([page.waitForURL(/\/catalog\/p\//), first.click()]);
    await page.locator('article.product-page h1', { hasText: name }).waitFor();
    assert.match(await page.textContent('[data-testid=breadcrumbs]'), /Apparel.*Hoodies/s);
    const picker = page.locator('[data-testid=variant-picker]');
    const options = await picker.locator('option').evaluateAll((nodes) => nodes.map((n) => n.value));
    assert.ok(options.length > 1, 'hoodies come in sizes');
    await picker.selectOption(options[1]);
    assert.equal(await page.textContent('[data-testid=selected-sku]'), options[1]);
    await page.click('article.product-page button.add-to-cart');
    await page.locator('article.product-page .status', { hasText: /Added to your cart|not enough|stock/i }).waitFor();
    await page.waitForFunction(() => document.querySelector('[data-testid=cart-badge]').textContent.trim() === '1');
    assert.equal(await page.evaluate(() => window.tesseraMarker), 'still here', 'the product opened without a reload');

    // Back: the in-stock listing, its form restored; back again: without the stock filter; forward: with it.
    await page.goBack();
    await page.waitForURL(/stock=1/);
    await page.locator('[data-testid=in-stock]:checked').waitFor();
    await page.waitForLoadState('networkidle');
    assert.equal(await page.inputValue('[data-testid=catalog-search]'), 'hoodie');
    assert.equal(await count(), inStock);
    await page.goBack();
    await page.waitForURL((url) => url.search.includes('q=hoodie') && !url.search.includes('stock=1'));
    await page.waitForFunction(() => document.querySelector('[data-testid=in-stock]')?.checked === false);
    await page.waitForLoadState('networkidle');
    assert.equal(await count(), hoodies);
    await page.goForward();
    await page.waitForURL(/stock=1/);
    await page.locator('[data-testid=in-stock]:checked').waitFor();

    // The same address loaded fresh renders the same state on the server (JavaScript not needed).
    const response = await page.goto(page.url());
    assert.equal(response.status(), 200);
    assert.equal(await count(), inStock);

    assert.deepEqual(browser.errors, [], 'no script errors on any page');
    await page.close();
  });

  test('an unknown product is a 404 page inside the chrome', async () => {
    const page = await browser.context.newPage();
    const response = await page.goto(`${site.url}/catalog/p/no-such-thing`);
    assert.equal(response.status(), 404);
    assert.match(await page.textContent('main'), /No such product/);
    assert.equal(await page.locator('#tessera-chrome .chrome').count(), 1, 'inside the chrome');
    await page.close();
  });
});

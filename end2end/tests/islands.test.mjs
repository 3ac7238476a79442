// The islands no other browser test drives: the catalog's product editor, the inventory's "Stock a new
// SKU" form and an order's "Cancel this order". Each posts from the page, says how it went in the page, and
// leaves the rest of the page to the server's rendering (no reload).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ADMIN, SHOPPER, hydrated, launchBrowser, login, startTessera } from './helpers.mjs';

describe('islands', () => {
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

  test('staff edit a product and stock a new SKU without leaving the page', async () => {
    const page = await browser.context.newPage();
    await login(page, site.url, ADMIN);

    await page.goto(`${site.url}/catalog/p/mug-stn-01/edit`);
    await hydrated(page);
    await page.evaluate(() => { window.tesseraMarker = 'editor'; });
    const editor = page.locator('[data-testid=product-editor]');
    assert.equal(await editor.locator('input[name="input[name]"]').inputValue(), 'Stoneware mug');
    // A price the editor refuses: said in the page, nothing saved.
    await editor.locator('input[name="input[price]"]').fill('twelve');
    await editor.locator('button[type=submit]').click();
    await page.locator('[data-testid=editor-status].error').waitFor();
    await editor.locator('input[name="input[price]"]').fill('15.50');
    await editor.locator('input[name="input[name]"]').fill('Stoneware mug, glazed');
    await editor.locator('button[type=submit]').click();
    await page.locator('[data-testid=editor-status]', { hasText: 'Saved. View Stoneware mug, glazed' }).waitFor();
    assert.equal(await page.evaluate(() => window.tesseraMarker), 'editor', 'saved without a reload');
    await page.goto(`${site.url}/catalog/p/mug-stn-01`);
    assert.equal(await page.textContent('article.product-page h1'), 'Stoneware mug, glazed');
    assert.equal((await page.textContent('[data-testid=price]')).trim(), 'EUR 15.50');

    await page.goto(`${site.url}/admin/inventory?q=BOTTLE-NEW`);
    await hydrated(page);
    await page.evaluate(() => { window.tesseraMarker = 'stock'; });
    assert.equal(await page.locator('[data-testid=stock-table] tbody tr').count(), 0);
    await page.click('details.new-sku summary');
    const form = page.locator('form[data-form=new-sku]');
    await form.locator('input[name=sku]').fill('BOTTLE-NEW-01');
    await form.locator('input[name=quantity]').fill('7');
    await form.locator('button[type=submit]').click();
    await page.locator('[data-testid=form-status]', { hasText: 'BOTTLE-NEW-01 stocked: 7 on hand.' }).waitFor();
    // The table is the server's again, with the new row in it.
    await page.locator('tr[data-sku="BOTTLE-NEW-01"] [data-testid=on-hand]', { hasText: '7' }).waitFor();
    // Sent again, the form receives seven more: the status line and the row follow.
    await form.locator('button[type=submit]').click();
    await page.locator('[data-testid=form-status]', { hasText: 'BOTTLE-NEW-01 stocked: 14 on hand.' }).waitFor();
    await page.locator('tr[data-sku="BOTTLE-NEW-01"] [data-testid=on-hand]', { hasText: '14' }).waitFor();
    assert.equal(await page.evaluate(() => window.tesseraMarker), 'stock', 'no reload');

    assert.deepEqual(browser.errors, [], 'no script errors on any page');
    await page.close();
  });

  test('a shopper cancels an order awaiting payment from its page', async () => {
    await browser.context.clearCookies();
    const page = await browser.context.newPage();
    await login(page, site.url, SHOPPER);
    await page.goto(`${site.url}/catalog?q=stoneware`);
    await hydrated(page);
    const mug = page.locator('li.product[data-sku="MUG-STN-01"]');
    await mug.locator('button.add-to-cart').click();
    await mug.locator('.status', { hasText: 'Added to your cart' }).waitFor();

    await page.goto(`${site.url}/cart/checkout`);
    await hydrated(page);
    await page.fill('input[name=name]', 'Sam Shopper');
    await page.fill('input[name=street]', '1 Loop Lane');
    await page.fill('input[name=city]', 'Berlin');
    await page.fill('input[name=postcode]', '10115');
    await Promise.all([page.waitForURL(/\/sandbox-pay\/pay\//), page.click('[data-testid=place-order]')]);

    // Not paid: the shopper goes to their orders and cancels it there.
    await page.goto(`${site.url}/cart/orders`);
    const order = page.locator('[data-testid=orders] tbody tr').first();
    await Promise.all([page.waitForURL(/\/cart\/orders\/[0-9a-f-]+$/), order.locator('a').click()]);
    await hydrated(page);
    assert.equal((await page.textContent('[data-testid=order-status]')).trim(), 'Awaiting payment');
    await page.evaluate(() => { window.tesseraMarker = 'order'; });
    await page.click('[data-testid=cancel-order]');
    await page.locator('[data-testid=order-status]', { hasText: 'Cancelled' }).waitFor({ timeout: 20_000 });
    assert.equal(await page.locator('[data-testid=cancel-order]').count(), 0, 'nothing left to cancel');
    assert.equal(await page.evaluate(() => window.tesseraMarker), 'order', 'no reload');

    assert.deepEqual(browser.errors, [], 'no script errors on any page');
    await page.close();
  });
});

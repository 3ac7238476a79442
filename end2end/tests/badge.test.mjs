// The cart badge, the home page's mini cart and the cart page tell one story: as a guest, right after
// signing in with a guest cart (before anything merged it), and after each change on the cart page.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { SHOPPER, hydrated, launchBrowser, login, startTessera } from './helpers.mjs';

const badge = async (page) => (await page.textContent('[data-testid=cart-badge]')).trim();

/** The home page's mini cart as a number of items (0 when it says the cart is empty). */
async function miniCart(page) {
  const widget = page.locator('section.widget-cart');
  if ((await widget.textContent()).includes('Your cart is empty.')) return 0;
  return Number.parseInt(await widget.locator('[data-testid=mini-cart-count]').textContent(), 10);
}

/** The cart page's lines, summed. */
async function cartPage(page) {
  const quantities = await page.locator('[data-testid=quantity]').allTextContents();
  return quantities.reduce((sum, quantity) => sum + Number.parseInt(quantity, 10), 0);
}

describe('badge, mini cart and cart page agree', () => {
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

  test('as a guest, after signing in with a guest cart, and after every change', async () => {
    const page = await browser.context.newPage();
    await page.goto(`${site.url}/catalog?q=stoneware`);
    await hydrated(page);
    const mug = page.locator('li.product[data-sku="MUG-STN-01"]');
    await mug.locator('button.add-to-cart').click();
    await mug.locator('.status', { hasText: 'Added to your cart' }).waitFor();
    await page.waitForFunction(() => document.querySelector('[data-testid=cart-badge]').textContent.trim() === '1');

    await page.goto(`${site.url}/`);
    assert.equal(await badge(page), '1', 'guest: badge');
    assert.equal(await miniCart(page), 1, 'guest: mini cart');

    // Signing in lands on the home page; the guest cart is not merged yet, and both already show it.
    await login(page, site.url, SHOPPER);
    assert.equal(await badge(page), '1', 'signed in: badge');
    assert.equal(await miniCart(page), 1, 'signed in: mini cart');

    // The cart page merges; its badge agrees from the first render and follows each change.
    await page.goto(`${site.url}/cart`);
    await hydrated(page);
    assert.equal(await cartPage(page), 1);
    assert.equal(await badge(page), '1', 'cart page: badge');
    const line = page.locator('tr[data-sku="MUG-STN-01"]');
    await line.locator('button[aria-label="one more"]').click();
    await page.locator('tr[data-sku="MUG-STN-01"] [data-testid=quantity]', { hasText: '2' }).waitFor();
    await page.waitForFunction(() => document.querySelector('[data-testid=cart-badge]').textContent.trim() === '2');
    await page.locator('tr[data-sku="MUG-STN-01"] button', { hasText: 'Remove' }).click();
    await page.locator('[data-testid=cart-empty]').waitFor();
    await page.waitForFunction(() => document.querySelector('[data-testid=cart-badge]').textContent.trim() === '0');

    await page.goto(`${site.url}/`);
    assert.equal(await badge(page), '0', 'home after emptying: badge');
    assert.equal(await miniCart(page), 0, 'home after emptying: mini cart');
    assert.deepEqual(browser.errors, []);
  });
});

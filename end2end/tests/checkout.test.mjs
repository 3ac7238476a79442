// The whole journey of a purchase across every part of the site: a shopper browses the catalog, adds to
// the cart, checks out, pays at the sandbox provider and sees the order paid (from the provider's webhook);
// staff fulfil it in the inventory admin; the shopper's order shows it fulfilled.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ADMIN, SHOPPER, hydrated, launchBrowser, login, startTessera } from './helpers.mjs';

/** Reloads `page` until `[data-testid=order-status]` reads `status` (webhooks and events are asynchronous). */
async function waitForOrderStatus(page, status) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const text = (await page.textContent('[data-testid=order-status]'))?.trim();
    if (text === status) return;
    if (Date.now() > deadline) throw new Error(`order status stayed ${text}, expected ${status}`);
    await new Promise((resolve) => setTimeout(resolve, 300));
    await page.reload();
  }
}

describe('checkout', () => {
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

  test('browse → add → checkout → pay → paid → staff fulfil → fulfilled', async () => {
    const page = await browser.context.newPage();
    await login(page, site.url, SHOPPER);

    // Browse: the mug's page; add two to the cart (the badge follows).
    await page.goto(`${site.url}/catalog/p/mug-stn-01`);
    await hydrated(page);
    await page.click('article.product-page button.add-to-cart');
    await page.locator('article.product-page .status', { hasText: 'Added to your cart' }).waitFor();
    await page.click('article.product-page button.add-to-cart');
    await page.waitForFunction(() => document.querySelector('[data-testid=cart-badge]').textContent.trim() === '2');

    // The cart: the line is held for the shopper, with its expiry; the home page's mini cart agrees.
    await page.goto(`${site.url}/cart`);
    await hydrated(page);
    const line = page.locator('tr[data-sku="MUG-STN-01"]');
    assert.equal((await line.locator('[data-testid=quantity]').textContent()).trim(), '2');
    assert.match(await line.locator('[data-testid=hold]').textContent(), /Held for you until \d{4}-\d\d-\d\d \d\d:\d\d UTC/);
    assert.equal((await page.textContent('[data-testid=subtotal]')).trim(), 'EUR 29.00');
    const step = () => page.textContent('[data-testid=steps] [aria-current=step]');
    assert.equal(await step(), 'Cart');

    // Checkout: address, express shipping, place the order → the provider's payment page.
    await Promise.all([page.waitForURL(/\/cart\/checkout$/), page.click('[data-testid=to-checkout]')]);
    await hydrated(page);
    assert.equal(await step(), 'Delivery');
    await page.fill('input[name=name]', 'Sam Shopper');
    await page.fill('input[name=street]', '1 Loop Lane');
    await page.fill('input[name=city]', 'Berlin');
    await page.fill('input[name=postcode]', '10115');
    await page.check('input[name=shipping][value=express]');
    await Promise.all([page.waitForURL(/\/sandbox-pay\/pay\//), page.click('[data-testid=place-order]')]);
    assert.match(await page.textContent('body'), /SANDBOX/);
    assert.match(await page.textContent('body'), /EUR 41\.95/, 'two mugs and express shipping');

    // A declined card first: the provider says so and the shopper may try another.
    await page.fill('input[name=card_number]', '4000 0000 0000 0002');
    await page.fill('input[name=expiry]', '12/39');
    await page.fill('input[name=cvc]', '123');
    await page.click('button[type=submit]');
    await page.locator('text=declined').first().waitFor();

    // The good card: back to the shop's order page, which turns paid when the webhook arrives.
    await page.fill('input[name=card_number]', '4242 4242 4242 4242');
    await page.fill('input[name=expiry]', '12/39');
    await page.fill('input[name=cvc]', '123');
    await Promise.all([page.waitForURL(/\/cart\/orders\/[0-9a-f-]+\?payment=/), page.click('button[type=submit]')]);
    const orderUrl = page.url().split('?')[0];
    // No reload: the page asks again by itself while the order awaits payment.
    await hydrated(page);
    await page.locator('[data-testid=order-status]', { hasText: 'Paid' }).waitFor({ timeout: 20_000 });
    await page.reload();
    assert.equal(await step(), 'Confirmed');
    await page.waitForFunction(() => document.querySelector('[data-testid=cart-badge]').textContent.trim() === '0');

    // Staff fulfil the paid order in the inventory admin (the same browser: sign in as staff, then back).
    await browser.context.clearCookies();
    const admin = await browser.context.newPage();
    await login(admin, site.url, ADMIN);
    await admin.goto(`${site.url}/admin/inventory/reservations`);
    await hydrated(admin);
    const row = admin.locator('tr[data-status="hard"]', { hasText: 'MUG-STN-01' });
    await row.getByRole('button', { name: 'Fulfil' }).click();
    await admin.locator('[role=status]', { hasText: 'fulfilled' }).waitFor();
    await admin.close();

    // The shopper's order shows it, with the whole timeline.
    await browser.context.clearCookies();
    await login(page, site.url, SHOPPER);
    await page.goto(orderUrl);
    await waitForOrderStatus(page, 'Fulfilled');
    const timeline = await page.textContent('[data-testid=timeline]');
    for (const step of ['Order placed', 'Payment attempt failed', 'Payment received', 'Your order has shipped']) {
      assert.match(timeline, new RegExp(step), `timeline has "${step}"`);
    }
    await page.goto(`${site.url}/cart/orders`);
    assert.match(await page.textContent('[data-testid=orders]'), /Fulfilled/);

    assert.deepEqual(browser.errors, [], 'no script errors on any page');
    await page.close();
  });
});

// The walking skeleton, as a person uses it: one login at the shell, three independently built fragments
// that each know the user and each hydrate, logout everywhere, role checks, and a stopped fragment.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ADMIN, SHOPPER, hydrated, launchBrowser, login, startTessera } from './helpers.mjs';

describe('one site, one login, three fragments', () => {
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

  test('an admin logs in once, is known by every fragment, uses each one, and logs out everywhere', async () => {
    const page = await browser.context.newPage();
    await login(page, site.url, ADMIN);
    assert.equal(await page.textContent('[data-testid=user-name]'), ADMIN.name);

    // Catalog: the fragment itself verified the cookie; search and "Add to cart" work after hydration.
    await page.goto(`${site.url}/catalog`);
    await hydrated(page);
    assert.equal(await page.textContent('[data-testid=user-name]'), ADMIN.name, 'chrome shows the user');
    assert.match(await page.textContent('[data-testid=fragment-user]'), /Ada Admin/);
    const products = page.locator('[data-testid=product-list] li.product');
    assert.equal(await products.count(), 24, 'a full first page of the demo catalogue');
    await page.fill('[data-testid=catalog-search]', 'stoneware');
    await Promise.all([page.waitForURL(/q=stoneware/), page.click('[data-testid=listing-form] button[type=submit]')]);
    await page.waitForFunction(() => document.querySelectorAll('li.product').length === 1);
    const mug = page.locator('li.product[data-sku="MUG-STN-01"]');
    await mug.locator('button.add-to-cart').click();
    await mug.locator('.status', { hasText: 'Added to your cart' }).waitFor();
    // The shell's badge heard the cart's DOM event.
    await page.waitForFunction(() => document.querySelector('[data-testid=cart-badge]').textContent.trim() === '1');

    // Cart: the line is there; "+" changes it through a server function and survives a reload.
    await page.goto(`${site.url}/cart`);
    await hydrated(page);
    assert.equal((await page.textContent('[data-testid=cart-badge]')).trim(), '1', 'badge rendered by the shell');
    assert.match(await page.textContent('[data-testid=fragment-user]'), /Ada Admin/);
    const line = page.locator('tr[data-sku="MUG-STN-01"]');
    assert.equal(await line.locator('[data-testid=quantity]').textContent(), '1');
    await line.locator('button[aria-label="one more"]').click();
    await page.locator('tr[data-sku="MUG-STN-01"] [data-testid=quantity]', { hasText: '2' }).waitFor();
    await page.reload();
    await hydrated(page);
    assert.equal(await page.locator('tr[data-sku="MUG-STN-01"] [data-testid=quantity]').textContent(), '2');
    assert.equal((await page.textContent('[data-testid=cart-badge]')).trim(), '2');

    // The access cookie expires (the browser drops it); the next server-function call from the hydrated
    // page is refreshed by the shell from the refresh cookie, without a visible sign-in.
    await browser.context.clearCookies({ name: 'tessera_access' });
    await page.locator('tr[data-sku="MUG-STN-01"] button[aria-label="one more"]').click();
    await page.locator('tr[data-sku="MUG-STN-01"] [data-testid=quantity]', { hasText: '3' }).waitFor();
    const renewed = (await browser.context.cookies()).find((c) => c.name === 'tessera_access');
    assert.ok(renewed, 'a fresh access cookie was set');

    // Inventory admin: stock table, "Receive 1" persists.
    await page.goto(`${site.url}/admin/inventory?q=PEN-GEL`);
    await hydrated(page);
    assert.match(await page.textContent('[data-testid=fragment-user]'), /Ada Admin/);
    const row = page.locator('tr[data-sku="PEN-GEL-BK"]');
    const before = Number(await row.locator('[data-testid=on-hand]').textContent());
    await row.getByRole('button', { name: 'Receive 1' }).click();
    await page.locator('tr[data-sku="PEN-GEL-BK"] [data-testid=on-hand]', { hasText: String(before + 1) }).waitFor();
    await page.reload();
    assert.equal(Number(await page.locator('tr[data-sku="PEN-GEL-BK"] [data-testid=on-hand]').textContent()), before + 1);

    // Logout at the shell ends the session on every fragment.
    await Promise.all([page.waitForURL(`${site.url}/`), page.click('[data-testid=logout]')]);
    assert.equal(await page.locator('[data-testid=user-name]').count(), 0);
    await page.goto(`${site.url}/catalog`);
    assert.match(await page.textContent('[data-testid=fragment-user]'), /guest/);
    await page.goto(`${site.url}/cart`);
    assert.match(await page.textContent('[data-testid=fragment-user]'), /guest/);
    const inventory = await page.goto(`${site.url}/admin/inventory`);
    assert.equal(inventory.status(), 401);

    assert.deepEqual(browser.errors, [], 'no script errors on any page');
    await page.close();
  });

  test('a shopper gets a 403 page on inventory admin and no inventory link', async () => {
    const page = await browser.context.newPage();
    await login(page, site.url, SHOPPER);
    assert.equal(await page.locator('nav a[href="/admin/inventory"]').count(), 0);
    const response = await page.goto(`${site.url}/admin/inventory`);
    assert.equal(response.status(), 403);
    assert.match(await page.textContent('main h1'), /Not allowed/);
    assert.equal(await page.textContent('[data-testid=user-name]'), SHOPPER.name, 'chrome still there');
    await Promise.all([page.waitForURL(`${site.url}/`), page.click('[data-testid=logout]')]);
    await page.close();
  });
});

describe('a fragment in its own process', () => {
  let shell;
  let catalog;
  let browser;

  before(async () => {
    const { freePort } = await import('./helpers.mjs');
    const shellPort = await freePort();
    const shellUrl = `http://127.0.0.1:${shellPort}`;
    // The catalog starts first and will fetch the shell's JWKS lazily, on the first signed-in request.
    catalog = await startTessera({ args: ['--fragment', 'catalog'], env: { TESSERA_JWKS_URL: `${shellUrl}/.well-known/jwks.json` } });
    shell = await startTessera({
      port: shellPort,
      env: {
        TESSERA_FRAGMENTS__CATALOG__UPSTREAM: catalog.url,
        TESSERA_FRAGMENTS__CATALOG__TIMEOUT_MS: '1500',
      },
    });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await shell?.stop();
    await catalog?.stop();
  });

  test('is composed over HTTP, knows the user via JWKS, and when stopped shows the fallback while the rest works', async () => {
    const page = await browser.context.newPage();
    await login(page, shell.url, SHOPPER);
    await page.goto(`${shell.url}/catalog`);
    await hydrated(page);
    assert.match(await page.textContent('[data-testid=fragment-user]'), /Sam Shopper/);
    assert.equal(await page.textContent('[data-testid=user-name]'), SHOPPER.name);

    await catalog.stop();

    const response = await page.goto(`${shell.url}/catalog`);
    assert.equal(response.status(), 503);
    assert.match(await page.textContent('[data-testid=fragment-fallback]'), /not available/);
    assert.equal(await page.textContent('[data-testid=user-name]'), SHOPPER.name, 'chrome and login survive');

    const cart = await page.goto(`${shell.url}/cart`);
    assert.equal(cart.status(), 200);
    await hydrated(page);
    assert.match(await page.textContent('[data-testid=fragment-user]'), /Sam Shopper/);

    const home = await page.goto(`${shell.url}/`);
    assert.equal(home.status(), 200);
    assert.match(await page.textContent('[data-widget=catalog]'), /not available/);
    assert.match(await page.textContent('[data-widget=cart]'), /cart/i);
    await page.close();
  });
});

// Screenshots of the main pages at 1280 and 390 px (the first screen of each), as JPEG, for closing notes
// and docs/screenshots: the home page, catalog, a product, the cart, checkout, a paid order, the account
// page, the inventory and a SKU page, as a guest, a shopper and staff on the demo site.
//
// Usage (TESSERA_BIN and TESSERA_SITE_DIR set, as for the browser tests): node screenshots.mjs OUTDIR SUFFIX
// writes OUTDIR/<page>-<width>-<SUFFIX>.jpg.
import { ADMIN, SHOPPER, hydrated, launchBrowser, login, startTessera } from './tests/helpers.mjs';

const [out, suffix] = process.argv.slice(2);
const site = await startTessera();
const browser = await launchBrowser();
const WIDTHS = [[1280, 800], [390, 844]];

async function shoot(page, name) {
  for (const [width, height] of WIDTHS) {
    await page.setViewportSize({ width, height });
    await page.waitForTimeout(300);
    await page.screenshot({ path: `${out}/${name}-${width}-${suffix}.jpg`, type: 'jpeg', quality: 70 });
  }
}

async function visit(page, path, name) {
  try {
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.goto(`${site.url}${path}`);
    await hydrated(page).catch(() => {});
    await shoot(page, name);
    console.log('ok', name);
  } catch (error) {
    console.log('FAILED', name, error.message);
  }
}

try {
  const guest = await browser.context.newPage();
  await visit(guest, '/', 'home');
  await visit(guest, '/catalog', 'catalog');
  await visit(guest, '/catalog/p/tee-blu-m', 'product');
  await guest.close();

  const page = await browser.context.newPage();
  await login(page, site.url, SHOPPER);
  await page.goto(`${site.url}/catalog/p/mug-stn-01`);
  await hydrated(page);
  await page.click('button.add-to-cart');
  await page.waitForFunction(() => document.querySelector('[data-testid=cart-badge]')?.textContent.trim() === '1', null, { timeout: 10_000 }).catch(() => {});
  await visit(page, '/cart', 'cart');
  await visit(page, '/cart/checkout', 'checkout');
  try {
    await page.fill('input[name=name]', 'Sam Shopper');
    await page.fill('input[name=street]', '1 Loop Lane');
    await page.fill('input[name=city]', 'Berlin');
    await page.fill('input[name=postcode]', '10115');
    await Promise.all([page.waitForURL(/\/sandbox-pay\/pay\//), page.click('[data-testid=place-order]')]);
    await page.fill('input[name=card_number]', '4242 4242 4242 4242');
    await page.fill('input[name=expiry]', '12/39');
    await page.fill('input[name=cvc]', '123');
    await Promise.all([page.waitForURL(/\/cart\/orders\/[0-9a-f-]+/), page.click('button[type=submit]')]);
    await page.locator('[data-testid=order-status]', { hasText: 'Paid' }).waitFor({ timeout: 20_000 });
    await page.reload();
    await hydrated(page).catch(() => {});
    await shoot(page, 'order');
    console.log('ok order');
  } catch (error) {
    console.log('FAILED order', error.message);
  }
  await visit(page, '/account', 'account');
  await page.close();

  await browser.context.clearCookies();
  const staff = await browser.context.newPage();
  await login(staff, site.url, ADMIN);
  await visit(staff, '/admin/inventory', 'inventory');
  await visit(staff, '/admin/inventory/sku/MUG-STN-01', 'sku');
  await staff.close();
} finally {
  await browser.close();
  await site.stop();
}

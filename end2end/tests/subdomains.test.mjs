// Subdomain deploys: the shell on shop.localhost, the catalog alone on catalog.shop.localhost (Chromium
// resolves every *.localhost name to loopback). One sign-in at the shell sets a Domain=shop.localhost
// cookie, and the catalog, verifying it with the shell's JWKS, knows the user without a login of its own.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DEMO_PASSWORD, SHOPPER, freePort, hydrated, launchBrowser, startTessera } from './helpers.mjs';

describe('sites on subdomains share one login', () => {
  let shell;
  let catalog;
  let browser;
  let shellUrl;
  let catalogUrl;

  before(async () => {
    const shellPort = await freePort();
    const catalogPort = await freePort();
    shellUrl = `http://shop.localhost:${shellPort}`;
    catalogUrl = `http://catalog.shop.localhost:${catalogPort}`;
    const shared = { TESSERA_COOKIE_DOMAIN: 'shop.localhost' };
    catalog = await startTessera({
      port: catalogPort,
      args: ['--fragment', 'catalog'],
      env: { ...shared, TESSERA_PUBLIC_URL: catalogUrl, TESSERA_JWKS_URL: `http://127.0.0.1:${shellPort}/.well-known/jwks.json` },
    });
    shell = await startTessera({
      port: shellPort,
      env: { ...shared, TESSERA_PUBLIC_URL: shellUrl, TESSERA_FRAGMENTS__CATALOG__UPSTREAM: `http://127.0.0.1:${catalogPort}` },
    });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await shell?.stop();
    await catalog?.stop();
  });

  test('signing in once at the shell signs the user in on the catalog subdomain, and signing out ends it there', async () => {
    const page = await browser.context.newPage();
    await page.goto(`${shellUrl}/login`);
    await page.fill('input[name=email]', SHOPPER.email);
    await page.fill('input[name=password]', DEMO_PASSWORD);
    await Promise.all([page.waitForURL(`${shellUrl}/`), page.click('button[type=submit]')]);
    const cookies = await browser.context.cookies(catalogUrl);
    const access = cookies.find((c) => c.name === 'tessera_access');
    assert.ok(access, `the catalog subdomain receives the access cookie: ${JSON.stringify(cookies)}`);
    assert.equal(access.domain, '.shop.localhost');
    assert.equal(access.httpOnly, true);
    // The 30-day refresh cookie stays on the shell's host: the catalog's subdomain never receives it.
    assert.equal(cookies.find((c) => c.name === 'tessera_refresh'), undefined, JSON.stringify(cookies));
    const shellCookies = await browser.context.cookies(shellUrl);
    assert.equal(shellCookies.find((c) => c.name === 'tessera_refresh')?.domain, 'shop.localhost');

    // The catalog's own origin: no shell in between, no login of its own.
    await page.goto(`${catalogUrl}/catalog`);
    await hydrated(page);
    assert.match(await page.textContent('[data-testid=fragment-user]'), /Sam Shopper/);
    // Its hydrated search works on its own origin, laid out by its own stylesheet.
    await page.fill('[data-testid=catalog-search]', 'stoneware');
    await Promise.all([page.waitForURL(/q=stoneware/), page.click('[data-testid=listing-form] button[type=submit]')]);
    await page.waitForFunction(() => document.querySelectorAll('li.product').length === 1);

    await page.goto(`${shellUrl}/`);
    await Promise.all([page.waitForURL(`${shellUrl}/`), page.click('[data-testid=logout]')]);
    await page.goto(`${catalogUrl}/catalog`);
    assert.match(await page.textContent('[data-testid=fragment-user]'), /guest/);
    assert.deepEqual(browser.errors, []);
    await page.close();
  });
});

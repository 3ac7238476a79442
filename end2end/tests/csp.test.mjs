// The Content-Security-Policy the shell sets on every response, as a browser enforces it: every page of
// every fragment hydrates with no violation, while a script that is not the site's own does not run.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ADMIN, hydrated, launchBrowser, login, startTessera } from './helpers.mjs';

describe('the security policy', () => {
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

  test('pages hydrate without a violation and an injected inline script is refused', async () => {
    const page = await browser.context.newPage();
    // Every violation the page reports, from its very start.
    await page.addInitScript(() => {
      window.__violations = [];
      document.addEventListener('securitypolicyviolation', (event) => window.__violations.push(`${event.violatedDirective} ${event.blockedURI}`));
    });
    await login(page, site.url, ADMIN);
    for (const path of ['/catalog', '/catalog?q=mug', '/cart', '/admin/inventory', '/']) {
      await page.goto(`${site.url}${path}`);
      if (path !== '/') await hydrated(page);
      assert.deepEqual(await page.evaluate(() => window.__violations), [], `${path} ran into the policy`);
    }
    await page.goto(`${site.url}/catalog?q=stoneware`);
    await hydrated(page);
    // The cart badge's listener (the chrome's script file) still works: add a product from the listing.
    const mug = page.locator('li.product[data-sku="MUG-STN-01"]');
    await mug.locator('button.add-to-cart').click();
    await mug.locator('.status', { hasText: 'Added to your cart' }).waitFor();
    await page.waitForFunction(() => document.querySelector('[data-testid=cart-badge]').textContent.trim() === '1');
    // Markup that slipped into the page cannot run script: it lacks the response's nonce.
    await page.evaluate(() => {
      const script = document.createElement('script');
      script.textContent = 'window.__injected = true';
      document.body.append(script);
    });
    assert.equal(await page.evaluate(() => window.__injected), undefined);
    assert.ok((await page.evaluate(() => window.__violations)).some((violation) => violation.startsWith('script-src')));
  });
});

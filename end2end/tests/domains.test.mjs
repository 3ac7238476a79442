// A fragment on a domain of its own: the shell on shop.test, the inventory alone on ops.example — two names
// with no parent in common, both mapped to loopback by Chromium's host resolver. The ops.example cookie
// jar never holds the shell's cookie; the inventory signs its users in at the shell with OpenID Connect
// (the shell is the provider, the fragment a relying party) and keeps a session of its own.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { ADMIN, DEMO_PASSWORD, freePort, hydrated, launchBrowser, startTessera } from './helpers.mjs';

// The bound within which a sign-out at the shell reaches the fragment, as the fragment is told.
const CHECK_SECONDS = 2;

describe('a fragment on another domain shares the one login', () => {
  let shell;
  let ops;
  let browser;
  let shellUrl;
  let opsUrl;

  before(async () => {
    const shellPort = await freePort();
    const opsPort = await freePort();
    shellUrl = `http://shop.test:${shellPort}`;
    opsUrl = `http://ops.example:${opsPort}`;
    const secret = () => randomBytes(32).toString('hex');
    // Nothing to share between the two for events and calls: each service signs with its own key and
    // publishes the public half in its description.
    const clientSecret = secret();
    ops = await startTessera({
      port: opsPort,
      args: ['--fragment', 'inventory'],
      env: {
        TESSERA_PUBLIC_URL: opsUrl,
        TESSERA_JWKS_URL: `http://127.0.0.1:${shellPort}/.well-known/jwks.json`,
        TESSERA_OIDC_PROVIDER__ISSUER: shellUrl,
        // Server to server the fragment reaches the shell at its internal address.
        TESSERA_OIDC_PROVIDER__URL: `http://127.0.0.1:${shellPort}`,
        TESSERA_OIDC_PROVIDER__CLIENT_ID: 'ops',
        TESSERA_OIDC_PROVIDER__CLIENT_SECRET: clientSecret,
        TESSERA_OIDC_PROVIDER__SESSION_CHECK_SECONDS: String(CHECK_SECONDS),
      },
    });
    shell = await startTessera({
      port: shellPort,
      env: {
        TESSERA_PUBLIC_URL: shellUrl,
        // The same inventory process also serves the shell's own pages.
        TESSERA_FRAGMENTS__INVENTORY__UPSTREAM: `http://127.0.0.1:${opsPort}`,
        TESSERA_OIDC_CLIENTS__OPS__REDIRECT_URIS: `${opsUrl}/oidc/callback`,
        TESSERA_OIDC_CLIENTS__OPS__SECRET: clientSecret,
        TESSERA_OIDC_CLIENTS__OPS__POST_LOGOUT_REDIRECT_URIS: `${opsUrl}/admin/inventory`,
      },
    });
    browser = await launchBrowser({ args: ['--host-resolver-rules=MAP shop.test 127.0.0.1, MAP ops.example 127.0.0.1'] });
  });

  after(async () => {
    await browser?.close();
    await shell?.stop();
    await ops?.stop();
  });

  test('sign in once at the shell, follow a link to the other domain, sign out at either', async () => {
    const page = await browser.context.newPage();
    const visited = [];
    // Every document request, redirects included (a redirect chain commits only its last page).
    page.on('request', (request) => request.isNavigationRequest() && request.frame() === page.mainFrame() && visited.push(request.url()));

    await page.goto(`${shellUrl}/login`);
    await page.fill('input[name=email]', ADMIN.email);
    await page.fill('input[name=password]', DEMO_PASSWORD);
    await Promise.all([page.waitForURL(`${shellUrl}/`), page.click('button[type=submit]')]);

    // A link on the shell's page over to ops.example: through the shell and back, without a form,
    // signed in as the same person.
    visited.length = 0;
    await page.evaluate((href) => {
      const link = Object.assign(document.createElement('a'), { href, textContent: 'Inventory admin' });
      link.dataset.testid = 'ops-link';
      document.querySelector('main').append(link);
    }, `${opsUrl}/admin/inventory`);
    await Promise.all([page.waitForURL(`${opsUrl}/admin/inventory`), page.click('[data-testid=ops-link]')]);
    await hydrated(page);
    assert.equal(page.url(), `${opsUrl}/admin/inventory`);
    assert.match(await page.textContent('[data-testid=fragment-user]'), /Ada Admin/);
    assert.ok(visited.some((url) => url.startsWith(`${shellUrl}/oauth/authorize`)), visited.join('\n'));
    assert.ok(!visited.some((url) => url.startsWith(`${shellUrl}/login`)), `a sign-in form was shown:\n${visited.join('\n')}`);
    const opsCookies = await browser.context.cookies(opsUrl);
    assert.equal(opsCookies.find((c) => c.name === 'tessera_access'), undefined, 'the shell cookie reached the other domain');
    const session = opsCookies.find((c) => c.name === 'tessera_rp_session');
    assert.ok(session?.httpOnly, JSON.stringify(opsCookies));
    assert.equal(session.domain, 'ops.example', 'the session cookie is host-only');
    // The fragment's hydrated pages work on its own domain: a server function sees the same staff user.
    await page.goto(`${opsUrl}/admin/inventory/sku/MUG-STN-01`);
    await hydrated(page);
    const receive = page.locator('form[data-form=receive]');
    await receive.locator('input[name=quantity]').fill('5');
    await receive.locator('button[type=submit]').click();
    await page.locator('[data-testid=form-status]', { hasText: 'Saved:' }).waitFor();

    // Signing out at the shell ends the session on ops.example within the stated bound.
    await page.goto(`${shellUrl}/`);
    await Promise.all([page.waitForURL(`${shellUrl}/`), page.click('[data-testid=logout]')]);
    await new Promise((resolve) => setTimeout(resolve, CHECK_SECONDS * 1000 + 500));
    await page.goto(`${opsUrl}/admin/inventory`);
    assert.equal(page.url(), `${opsUrl}/admin/inventory`);
    assert.match(await page.textContent('main'), /Please sign in/);

    // Signing in from the fragment's own link: the shell's form, then back.
    await Promise.all([page.waitForURL(`${shellUrl}/login**`), page.click('a[href^="/login"]')]);
    await page.fill('input[name=email]', ADMIN.email);
    await page.fill('input[name=password]', DEMO_PASSWORD);
    await Promise.all([page.waitForURL(`${opsUrl}/admin/inventory`), page.click('button[type=submit]')]);
    await hydrated(page);
    assert.match(await page.textContent('[data-testid=fragment-user]'), /Ada Admin/);

    // Signing out at the fragment signs out at the shell too, and comes back to the fragment.
    await page.goto(`${opsUrl}/logout`);
    await Promise.all([page.waitForURL(`${opsUrl}/admin/inventory`), page.click('button[type=submit]')]);
    assert.match(await page.textContent('main'), /Please sign in/);
    await page.goto(`${shellUrl}/`);
    assert.equal(await page.locator('[data-testid=logout]').count(), 0, 'still signed in at the shell');
    assert.deepEqual(browser.errors, []);
    await page.close();
  });
});

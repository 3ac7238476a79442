// The inventory admin as staff use it: find stock, record movements on a SKU page, see the ledger and
// chart move, and fulfil a paid order whose reservation the cart made through the service API.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomUUID, sign } from 'node:crypto';
import { ADMIN, hydrated, launchBrowser, login, startTessera } from './helpers.mjs';

// The cart's signing key (tessera_fragment::signature): the site is given it as the cart's own
// (TESSERA_SERVICE_KEYS__CART), and this test signs the cart's calls and events with it.
const CART_KEY = generateKeyPairSync('ed25519');
const CART_PKCS8 = CART_KEY.privateKey.export({ format: 'der', type: 'pkcs8' }).toString('base64');
const CART_PUBLIC = CART_KEY.publicKey.export({ format: 'jwk' }).x; // the raw key, base64url
const CART_KID = createHash('sha256').update(Buffer.from(CART_PUBLIC, 'base64url')).digest('base64url').slice(0, 16);

/** A JSON POST from the cart, Ed25519-signed over `<domain>\n<timestamp>.cart.<message>`. */
function signedPost(url, domain, message, body) {
  const timestamp = Math.floor(Date.now() / 1000);
  const signature = sign(null, Buffer.from(`${domain}\n${timestamp}.cart.${message}`), CART_KEY.privateKey).toString('base64');
  return fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'x-tessera-event-producer': 'cart',
      'x-tessera-event-timestamp': String(timestamp),
      'x-tessera-event-signature': `ed25519=${CART_KID}.${signature}`,
    },
    body,
  });
}

/** A service call: the method and path are signed with the body. */
function serviceCall(url, path, body) {
  const json = JSON.stringify(body);
  return signedPost(`${url}${path}`, 'tessera-call', `POST ${path}\n${json}`, json);
}

/** An event from the cart, signed like the relay signs it. */
function sendEvent(url, type, aggregateId, payload) {
  const envelope = JSON.stringify({
    id: randomUUID(), type, version: 1, aggregate_type: 'order', aggregate_id: aggregateId,
    sequence: 1, occurred_at_ms: Date.now(), producer: 'cart', payload,
  });
  return signedPost(`${url}/admin/inventory/events`, 'tessera-event', envelope, envelope);
}

describe('inventory admin', () => {
  let site;
  let browser;

  before(async () => {
    site = await startTessera({ env: { TESSERA_SERVICE_KEYS__CART: CART_PKCS8 } });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await site?.stop();
  });

  test('staff search stock, record movements, and fulfil a paid order', async () => {
    const page = await browser.context.newPage();
    await login(page, site.url, ADMIN);

    // The home page widget counts low stock; the stock table searches and filters with plain GET forms.
    await page.goto(`${site.url}/`);
    assert.match(await page.textContent('.widget-inventory'), /\d+ SKUs with fewer than 5 available/);
    await page.goto(`${site.url}/admin/inventory`);
    await hydrated(page);
    await page.fill('[data-testid=stock-search]', 'cap-blk');
    await page.check('input[name=low]');
    await Promise.all([page.waitForURL(/low=true/), page.click('form.filters button[type=submit]')]);
    assert.equal(await page.locator('tr[data-sku="CAP-BLK-01"]').count(), 1, 'sold out: low');
    await page.fill('[data-testid=stock-search]', 'mug-stn');
    await Promise.all([page.waitForURL(/q=mug-stn/), page.click('form.filters button[type=submit]')]);
    assert.equal(await page.locator('tr[data-sku="MUG-STN-01"]').count(), 0, 'plenty of mugs: not low');
    await page.uncheck('input[name=low]');
    await Promise.all([page.waitForURL((url) => !url.search.includes('low=')), page.click('form.filters button[type=submit]')]);
    assert.equal(await page.locator('[data-testid=stock-table] tbody tr').count(), 1);

    // The SKU page: receive, write off with a reason, and see counters, ledger and chart follow.
    await Promise.all([page.waitForURL(/\/sku\/MUG-STN-01$/), page.click('a[href="/admin/inventory/sku/MUG-STN-01"]')]);
    await hydrated(page);
    const onHand = async () => Number(await page.locator('[data-testid=counters] [data-testid=on-hand]').first().textContent());
    const start = await onHand();
    const receive = page.locator('form[data-form=receive]');
    await receive.locator('input[name=quantity]').fill('5');
    await receive.locator('button[type=submit]').click();
    await page.locator('[data-testid=form-status]', { hasText: `Saved: ${start + 5} on hand` }).waitFor();
    await page.locator('[data-testid=counters] [data-testid=on-hand]', { hasText: String(start + 5) }).waitFor();
    assert.ok(await page.locator('[data-testid=ledger] tr[data-kind=RECEIVED]').count() >= 2, 'seed and this receipt');

    const shrink = page.locator('form[data-form=shrinkage]');
    await shrink.locator('input[name=quantity]').fill('1000');
    await shrink.locator('input[name=reason]').fill('flood in the back room');
    await shrink.locator('button[type=submit]').click();
    await page.locator('[data-testid=form-status]', { hasText: 'unreserved units of MUG-STN-01' }).waitFor();
    assert.equal(await onHand(), start + 5, 'a refused write-off changes nothing');
    await shrink.locator('input[name=quantity]').fill('2');
    await shrink.locator('button[type=submit]').click();
    await page.locator('[data-testid=counters] [data-testid=on-hand]', { hasText: String(start + 3) }).waitFor();
    assert.match(await page.textContent('[data-testid=ledger]'), /flood in the back room/);
    assert.equal(await page.locator('[data-testid=stock-chart] polyline').count(), 2);

    // The cart holds 2 mugs, the order is paid: staff see a hard reservation and fulfil it.
    const reserved = await serviceCall(site.url, '/admin/inventory/service/reservations', {
      idempotency_key: 'e2e-1', owner: 'shopper', lines: [{ sku: 'MUG-STN-01', quantity: 2 }], ttl_seconds: 600,
    });
    assert.equal(reserved.status, 201, await reserved.clone().text());
    const reservation = await reserved.json();
    const paid = await sendEvent(site.url, 'cart.order_paid', 'e2e-0001', {
      order_id: 'e2e-0001', reservation_id: reservation.id, lines: reservation.lines,
    });
    assert.equal(paid.status, 200, await paid.text());
    await page.goto(`${site.url}/admin/inventory/reservations`);
    await hydrated(page);
    const row = page.locator(`tr[data-reservation="${reservation.id}"]`);
    assert.equal(await row.getAttribute('data-status'), 'hard');
    await row.getByRole('button', { name: 'Fulfil' }).click();
    await page.locator('[role=status]', { hasText: 'Order e2e-0001 fulfilled' }).waitFor();
    await page.goto(`${site.url}/admin/inventory/sku/MUG-STN-01`);
    assert.equal(await onHand(), start + 1, 'fulfilment took the two mugs');
    assert.equal(await page.locator('[data-testid=ledger] tr[data-kind=FULFILLED]').count(), 1);

    assert.deepEqual(browser.errors, [], 'no script errors on any page');
    await page.close();
  });
});

// Losing any one process loses nothing (PostgreSQL + NATS JetStream, two of every process): one instance
// of each service is killed with SIGKILL under a load of shoppers and started again later.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { inFlightAtKill, kill, restart, shopperLoad, sql, startCluster, stopCluster } from '../faults.mjs';

const BIN_DIR = process.env.TESSERA_BIN_DIR;
const SITE = process.env.TESSERA_SITE_DIR;
const PG = process.env.TESSERA_TEST_POSTGRES_URL;
const NATS = process.env.TESSERA_TEST_NATS_URL;
if (!BIN_DIR || !SITE) throw new Error('TESSERA_BIN_DIR and TESSERA_SITE_DIR must be set (run through `cargo xtask test`)');
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` (returning [ok, detail]) for up to `ms`. */
async function settles(what, ms, check) {
  const deadline = Date.now() + ms;
  let detail;
  for (;;) {
    const [ok, latest] = check();
    detail = latest;
    if (ok) return;
    if (Date.now() > deadline) assert.fail(`${what}: ${detail}`);
    await sleep(250);
  }
}

describe('killing one instance of every service under load', { skip: !PG || !NATS ? 'needs TESSERA_TEST_POSTGRES_URL and TESSERA_TEST_NATS_URL' : false }, () => {
  let cluster;
  before(async () => {
    cluster = await startCluster({ binDir: BIN_DIR, siteDir: SITE, pgUrl: PG, natsUrl: NATS });
  });
  after(async () => {
    if (cluster) await stopCluster(cluster);
  });

  test('nothing paid is lost, nothing is applied twice, and only requests in flight at a kill fail', async (t) => {
    const load = shopperLoad(cluster, 4);
    await load.ready;
    await sleep(2500);
    const plan = [['catalog', 0], ['cart', 1], ['inventory', 0], ['shell', 1]];
    for (const [name, index] of plan) {
      await kill(cluster, name, index);
      await sleep(700);
    }
    await sleep(1500);
    for (const [name, index] of plan) await restart(cluster, name, index);
    await sleep(3000);
    const stats = await load.stop();
    const p = cluster.prefix;
    const q = (service, query) => sql(cluster, service, query);
    const scalar = (service, query) => Number(q(service, query)[0]?.[0] ?? 'NaN');
    const unexplained = stats.failures.filter((failure) => failure.method === 'GET' || !inFlightAtKill(cluster, failure));
    t.diagnostic(
      `${stats.checkouts} checkouts paid, ${stats.requests} requests (${stats.gets} GETs), ${stats.failures.length} failed ` +
        `(${stats.failures.length - unexplained.length} in flight at a kill); kills: ${cluster.kills.map((k) => `${k.name}#${k.index}`).join(', ')}`,
    );
    const t0 = cluster.kills[0]?.at ?? 0;
    const timeline = cluster.kills.map((k) => `${k.name}#${k.index} killed at +${k.at - t0} ms`).join(', ');
    const described = unexplained.map((f) => ({ ...f, started: f.started - t0, ended: f.ended - t0 }));
    assert.deepEqual(described, [], `every failed request was a non-GET in flight at a killed instance (${timeline})`);
    assert.ok(stats.checkouts >= 5, `only ${stats.checkouts} checkouts`);

    // Every paid order is hard-reserved in inventory (the paid event arrived once the relays resumed).
    const unreserved = `SELECT COUNT(*) FROM ${p}cart.orders o WHERE o.status IN ('paid', 'fulfilled') AND NOT EXISTS
      (SELECT 1 FROM ${p}inventory.reservations r WHERE r.order_id = o.id AND r.status IN ('hard', 'fulfilled'))`;
    await settles('paid orders hard-reserved', 30_000, () => {
      const count = scalar('cart', unreserved);
      return [count === 0, `${count} paid orders are not hard-reserved`];
    });
    const paid = scalar('cart', `SELECT COUNT(*) FROM orders WHERE status IN ('paid', 'fulfilled')`);
    assert.ok(paid >= stats.checkouts, `${paid} paid orders in the cart, ${stats.checkouts} seen paid by shoppers`);
    for (const id of stats.paid) {
      assert.equal(q('cart', `SELECT status FROM orders WHERE id = '${id}'`)[0]?.[0], 'paid', `order ${id}`);
    }
    // Each paid order shows its whole timeline, with each step once.
    const incomplete = scalar(
      'cart',
      `SELECT COUNT(*) FROM orders o WHERE o.status = 'paid' AND (
         (SELECT COUNT(*) FROM order_timeline t WHERE t.order_id = o.id AND t.status = 'awaiting_payment') <> 1 OR
         (SELECT COUNT(*) FROM order_timeline t WHERE t.order_id = o.id AND t.status = 'paid') <> 1)`,
    );
    assert.equal(incomplete, 0, 'paid orders with a missing or doubled timeline step');
    // No event applied twice: one hard reservation per order and SKU in the ledger.
    const doubled = scalar('inventory', `SELECT COUNT(*) FROM (SELECT order_id, sku FROM ledger WHERE kind = 'HARD_RESERVED' GROUP BY order_id, sku HAVING COUNT(*) > 1) d`);
    assert.equal(doubled, 0, 'orders hard-reserved twice');
    // The catalog's availability equals inventory's, once the stock events are through.
    const differing = `SELECT COUNT(*) FROM (SELECT sku, SUM(GREATEST(on_hand - soft_reserved - hard_reserved - unavailable - safety_stock, 0)) AS available
      FROM ${p}inventory.stock_levels GROUP BY sku) s LEFT JOIN ${p}catalog.availability a ON a.sku = s.sku WHERE a.available IS DISTINCT FROM s.available`;
    await settles("the catalog's availability equals inventory's", 30_000, () => {
      const count = scalar('catalog', differing);
      return [count === 0, `${count} SKUs differ`];
    });
    // No unit oversold, and the ledger replays to the stock levels.
    assert.equal(scalar('inventory', 'SELECT COUNT(*) FROM stock_levels WHERE soft_reserved + hard_reserved + unavailable > on_hand'), 0);
    const verify = spawnSync(process.env.TESSERA_BIN ?? `${BIN_DIR}/tessera`, ['inventory', 'verify'], {
      env: { ...process.env, TESSERA_POSTGRES_URL: PG, TESSERA_SCHEMA_PREFIX: p, TESSERA_LOG: 'warn' },
      encoding: 'utf8',
    });
    assert.equal(verify.status, 0, `tessera inventory verify: ${verify.stdout}${verify.stderr}`);
    t.diagnostic(`inventory verify: ${verify.stdout.trim()}`);
  });
});

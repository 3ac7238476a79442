// `cargo xtask bench --only scaleout`: the site as separate processes on PostgreSQL (release binaries),
// measured side by side in one run:
// - events/s and commit-to-effect latency of inventory's stock events reaching the catalog, over NATS
//   JetStream against HTTP (one instance of every process);
// - whole checkouts/s (browse, add, place, pay, paid by webhook) with 1 and with 2 instances of every
//   process (events over NATS), the shoppers spread over the shells.
//
// Usage: node bench-scaleout.mjs <binary dir> <site dir> <seconds of checkout load> <postgres url> <nats url>
import { shopperLoad, startCluster, stopCluster } from './faults.mjs';

const [binDir, siteDir, seconds = '5', pgUrl, natsUrl] = process.argv.slice(2);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function post(url, cookie, path, body) {
  const response = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: { cookie, origin: url, 'content-type': 'application/x-www-form-urlencoded' },
    body,
    redirect: 'manual',
  });
  await response.arrayBuffer();
  return response;
}

async function adminCookie(url) {
  const response = await post(url, '', '/login', 'email=admin%40example.com&password=tessera-demo');
  return response.headers.getSetCookie().map((c) => c.split(';')[0]).filter((c) => !c.endsWith('=')).join('; ');
}

async function catalogStatus(url, cookie) {
  return (await fetch(`${url}/catalog/events/status`, { headers: { cookie } })).json();
}

const SKUS = ['TEE-BLU-M', 'TEE-RED-L', 'MUG-STN-01', 'CAP-BLK-01', 'BAG-CNV-01', 'NTB-A5-DOT', 'PEN-GEL-BK', 'STK-RST-10'];

/** Stock receipts by admins: one at a time (latency), then a burst (throughput). */
async function events(cluster) {
  const url = `http://127.0.0.1:${cluster.ports.shell[0]}`;
  const cookie = await adminCookie(url);
  const sequential = 200;
  for (let n = 0; n < sequential; n += 1) {
    const response = await post(url, cookie, '/admin/inventory/api/adjust_stock', `sku=${SKUS[n % SKUS.length]}&delta=1`);
    if (response.status !== 200) throw new Error(`adjust_stock answered ${response.status}`);
    await sleep(5);
  }
  await sleep(1000);
  const steady = await catalogStatus(url, cookie);
  const before = steady.received;
  const changes = 2000;
  const workers = 16;
  const started = Date.now();
  await Promise.all(
    Array.from({ length: workers }, async (_, worker) => {
      for (let n = worker; n < changes; n += workers) {
        const response = await post(url, cookie, '/admin/inventory/api/adjust_stock', `sku=${SKUS[n % SKUS.length]}&delta=1`);
        if (response.status !== 200) throw new Error(`adjust_stock answered ${response.status}`);
      }
    }),
  );
  const committed = Date.now() - started;
  let last;
  for (;;) {
    last = await catalogStatus(url, cookie);
    if (last.received >= before + changes) break;
    if (Date.now() - started > 120_000) throw new Error(`only ${last.received - before} of ${changes} events arrived`);
    await sleep(20);
  }
  const consumed = Date.now() - started;
  return { steady: steady.latency_ms, burst: last.latency_ms, committed, consumed, changes };
}

console.log('| events: inventory → catalog, PostgreSQL, one instance of every process, release | HTTP | NATS JetStream |');
console.log('|---|--:|--:|');
const results = {};
for (const [name, nats] of [['HTTP', null], ['NATS', natsUrl]]) {
  const cluster = await startCluster({ binDir, siteDir, pgUrl, natsUrl: nats, instances: 1 });
  try {
    results[name] = await events(cluster);
  } finally {
    await stopCluster(cluster);
  }
}
const row = (label, value) => console.log(`| ${label} | ${value(results.HTTP)} | ${value(results.NATS)} |`);
row('commit → effect, 200 changes one at a time, p50 / p99 / max', (r) => `${r.steady.p50} / ${r.steady.p99} / ${r.steady.max} ms`);
row('2000 changes from 16 admins: all committed after', (r) => `${(r.committed / 1000).toFixed(2)} s`);
row('… all applied by the catalog after', (r) => `${(r.consumed / 1000).toFixed(2)} s`);
row('… events/s, commit to consumer effect', (r) => `${Math.round((r.changes * 1000) / r.consumed)}`);
row('… commit → effect during the burst, p50 / p99 / max', (r) => `${r.burst.p50} / ${r.burst.p99} / ${r.burst.max} ms`);

console.log();
console.log(`| checkouts, events over NATS, PostgreSQL, 8 shoppers, ${seconds} s, release | checkouts/s | requests/s | failed |`);
console.log('|---|--:|--:|--:|');
for (const instances of [1, 2]) {
  const cluster = await startCluster({ binDir, siteDir, pgUrl, natsUrl, instances });
  try {
    const load = shopperLoad(cluster, 8);
    await load.ready;
    await sleep(1000);
    const from = { checkouts: load.stats.checkouts, requests: load.stats.requests, at: Date.now() };
    await sleep(Number(seconds) * 1000);
    const span = (Date.now() - from.at) / 1000;
    const checkouts = load.stats.checkouts - from.checkouts;
    const requests = load.stats.requests - from.requests;
    const stats = await load.stop();
    console.log(`| ${instances} instance${instances > 1 ? 's' : ''} of every process | ${(checkouts / span).toFixed(1)} | ${Math.round(requests / span)} | ${stats.failures.length} |`);
  } finally {
    await stopCluster(cluster);
  }
}

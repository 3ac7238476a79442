// `cargo xtask bench --only scaleout`: the site as separate processes on PostgreSQL (release binaries),
// measured side by side in one run:
// - events/s and commit-to-effect latency of inventory's stock events reaching the catalog, over HTTP
//   with the polling relay, over HTTP with the relay fed by PostgreSQL's replication stream (CDC), and
//   over NATS JetStream (two instances of every process), with the database's load idle and per event,
//   and, given an earlier build's binaries, that build's figures beside each;
// - whole checkouts/s (browse, add, place, pay, paid by webhook) with 1 and with 2 instances of every
//   process (events over NATS), the shoppers spread over the shells.
//
// Usage: node bench-scaleout.mjs <binary dir> <site dir> <seconds of checkout load> <postgres url> <nats url> [<before binary dir>]
import { execFileSync } from 'node:child_process';
import { shopperLoad, startCluster, stopCluster } from './faults.mjs';

const [binDir, siteDir, seconds = '5', pgUrl, natsUrl, beforeDir] = process.argv.slice(2);
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

/** The whole database's committed transactions and rows read so far (PostgreSQL's statistics). */
function databaseLoad() {
  const out = execFileSync('psql', [pgUrl, '-X', '-Atc', "SELECT xact_commit, tup_returned + tup_fetched FROM pg_stat_database WHERE datname = current_database()"]).toString().trim();
  const [transactions, rows] = out.split('|').map(Number);
  return { transactions, rows, at: Date.now() };
}

/** Whether the server keeps per-statement statistics (the `pg_stat_statements` extension, loaded by
 * `shared_preload_libraries`): then each setup also prints where its burst's database work went. */
const statementStats = (() => {
  try {
    return execFileSync('psql', [pgUrl, '-X', '-Atc', "SELECT COUNT(*) FROM pg_extension WHERE extname = 'pg_stat_statements'"]).toString().trim() === '1';
  } catch {
    return false;
  }
})();

function resetStatements() {
  if (statementStats) execFileSync('psql', [pgUrl, '-X', '-Atc', 'SELECT pg_stat_statements_reset()']);
}

/** The statements that touched the most buffers since the reset, per event of the burst. */
function topStatements(changes) {
  if (!statementStats) return [];
  const sql = `SELECT calls, shared_blks_hit + shared_blks_read, rows, round(total_exec_time::numeric, 0), regexp_replace(left(query, 110), '\\s+', ' ', 'g')
    FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    ORDER BY shared_blks_hit + shared_blks_read DESC LIMIT 8`;
  return execFileSync('psql', [pgUrl, '-X', '-At', '-F', '\t', '-c', sql]).toString().trim().split('\n').filter(Boolean).map((line) => {
    const [calls, blocks, rows, ms, query] = line.split('\t');
    return { callsPerEvent: Number(calls) / changes, blocksPerEvent: Number(blocks) / changes, rowsPerCall: Number(rows) / Math.max(1, Number(calls)), ms: Number(ms), query };
  });
}

/** Deliveries still pending in every producer's outbox of the cluster. */
function pendingDeliveries(cluster) {
  const sum = ['inventory', 'cart', 'catalog'].map((service) => `(SELECT COUNT(*) FROM ${cluster.prefix}${service}.outbox_deliveries WHERE status = 'pending')`).join(' + ');
  return Number(execFileSync('psql', [pgUrl, '-X', '-Atc', `SELECT ${sum}`]).toString().trim());
}

/** Per second between two samples. Backends report their statistics within a second of a transaction
 * (within ten when idle), so windows are long. */
function rate(from, to, key) {
  return (to[key] - from[key]) / ((to.at - from.at) / 1000);
}

/** Stock receipts by admins: one at a time (latency), then a burst (throughput); the database's load
 * while the site is idle and per event during the burst. */
async function events(cluster) {
  const url = `http://127.0.0.1:${cluster.ports.shell[0]}`;
  const cookie = await adminCookie(url);
  // Idle means settled: the start's events delivered (a subscriber that came up later gets them on a
  // retry), then a few seconds more.
  const settling = Date.now();
  while (pendingDeliveries(cluster) > 0) {
    if (Date.now() - settling > 120_000) throw new Error('the start-up events were never delivered');
    await sleep(500);
  }
  await sleep(5000);
  const idleFrom = databaseLoad();
  await sleep(30_000);
  const idleTo = databaseLoad();
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
  await sleep(10_000);
  resetStatements();
  const burstFrom = databaseLoad();
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
    if (Date.now() - started > 120_000) throw new Error(`only ${last.received - before} of ${changes} events arrived (${JSON.stringify(cluster.common.TESSERA_OUTBOX_RELAY ?? 'poll')}, NATS ${Boolean(cluster.common.TESSERA_NATS_URL)})`);
    await sleep(20);
  }
  const consumed = Date.now() - started;
  await sleep(1500);
  const burstTo = databaseLoad();
  const statements = topStatements(changes);
  const idle = { transactions: rate(idleFrom, idleTo, 'transactions'), rows: rate(idleFrom, idleTo, 'rows') };
  const perEvent = { transactions: (burstTo.transactions - burstFrom.transactions) / changes, rows: (burstTo.rows - burstFrom.rows) / changes };
  return { steady: steady.latency_ms, burst: last.latency_ms, committed, consumed, changes, idle, perEvent, statements };
}

const setups = [
  ['HTTP, polling relay', { natsUrl: null }],
  ['HTTP, CDC relay', { natsUrl: null, relay: 'cdc' }],
  ['NATS JetStream, polling relay', { natsUrl }],
];
// With a "before" binary directory (an earlier build of every deployable), each transport runs on both,
// one after the other, and the table shows them side by side.
const builds = beforeDir ? [['before', beforeDir], ['after', binDir]] : [['', binDir]];
const columns = setups.flatMap(([name]) => builds.map(([label]) => (label ? `${name}, ${label}` : name)));
console.log(`| events: inventory → catalog, PostgreSQL, two instances of every process, release | ${columns.join(' | ')} |`);
console.log(`|---|${columns.map(() => '--:').join('|')}|`);
const results = [];
for (const [name, options] of setups) {
  for (const [label, dir] of builds) {
    const cluster = await startCluster({ binDir: dir, siteDir, pgUrl, instances: 2, ...options });
    try {
      const result = await events(cluster);
      console.error(`bench: ${name}${label ? `, ${label}` : ''}: ${Math.round((result.changes * 1000) / result.consumed)} events/s`);
      results.push(result);
      if (result.statements.length) {
        console.error(`bench: ${name}${label ? `, ${label}` : ''}: the burst's heaviest statements (pg_stat_statements), per event: calls · buffers · rows per call · total ms · statement`);
        for (const s of result.statements) {
          console.error(`  ${s.callsPerEvent.toFixed(2)} · ${s.blocksPerEvent.toFixed(1)} · ${s.rowsPerCall.toFixed(1)} · ${s.ms} · ${s.query}`);
        }
      }
    } finally {
      await stopCluster(cluster);
    }
  }
}
const row = (label, value) => console.log(`| ${label} | ${results.map(value).join(' | ')} |`);
row('commit → effect, 200 changes one at a time, p50 / p99 / max', (r) => `${r.steady.p50} / ${r.steady.p99} / ${r.steady.max} ms`);
row('2000 changes from 16 admins: all committed after', (r) => `${(r.committed / 1000).toFixed(2)} s`);
row('… all applied by the catalog after', (r) => `${(r.consumed / 1000).toFixed(2)} s`);
row('… events/s, commit to consumer effect', (r) => `${Math.round((r.changes * 1000) / r.consumed)}`);
row('… commit → effect during the burst, p50 / p99 / max', (r) => `${r.burst.p50} / ${r.burst.p99} / ${r.burst.max} ms`);
row('database idle, 30 s: transactions/s · rows read/s', (r) => `${r.idle.transactions.toFixed(1)} · ${Math.round(r.idle.rows)}`);
row('database per event in the burst: transactions · rows read', (r) => `${r.perEvent.transactions.toFixed(1)} · ${Math.round(r.perEvent.rows)}`);

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

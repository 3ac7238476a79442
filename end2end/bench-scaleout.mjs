// `cargo xtask bench --only scaleout`: the site as separate processes on PostgreSQL (release binaries),
// measured side by side in one run:
// - events/s and commit-to-effect latency of inventory's stock events reaching the catalog, over HTTP
//   with the polling relay, over HTTP with the relay fed by PostgreSQL's replication stream (CDC), and
//   over NATS JetStream (two instances of every process), with the database's load idle and per event,
//   and, given an earlier build's binaries, that build's figures beside each;
// - the event path alone (events written straight into inventory's outbox, no admin requests): 1,000
//   changes/s offered for 30 s, then 10,000 at once;
// - whole checkouts/s (browse, add, place, pay, paid by webhook) with 1 and with 2 instances of every
//   process (events over NATS), the shoppers spread over the shells.
//
// Usage: node bench-scaleout.mjs <binary dir> <site dir> <seconds of checkout load> <postgres url> <nats url> [<before binary dir>]
import { execFileSync, spawn } from 'node:child_process';
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
  // The event path alone: 1,000 changes/s offered for 30 s, then 10,000 at once.
  const steadyLoad = await injected(cluster, { perTick: 10, ticks: 3000 });
  const flood = await injected(cluster, { total: 10_000 });
  const idle = { transactions: rate(idleFrom, idleTo, 'transactions'), rows: rate(idleFrom, idleTo, 'rows') };
  const perEvent = { transactions: (burstTo.transactions - burstFrom.transactions) / changes, rows: (burstTo.rows - burstFrom.rows) / changes };
  return { steady: steady.latency_ms, burst: last.latency_ms, committed, consumed, changes, idle, perEvent, statements, steadyLoad, flood };
}

function psql(sql) {
  return execFileSync('psql', [pgUrl, '-X', '-Atc', sql]).toString().trim();
}

/** Events alone, without the admin requests that cause them: stock changes written straight into
 * inventory's outbox the way its transactions write them (an outbox row, one delivery per subscriber of
 * `inventory.stock_changed`), through one psql session, for the relays to send and the catalog to apply.
 * `perTick` events in one transaction every 10 ms (open loop; 10 per tick is 1,000 changes/s), for
 * `ticks` ticks; `perTick` 0 sends `total` at once in transactions of 2,000. Returns when the catalog
 * applied them all: events/s from the first commit to the last effect, and commit → effect per event. */
async function injected(cluster, { perTick = 0, ticks = 0, total = 0 }) {
  const inventory = `${cluster.prefix}inventory`;
  const catalog = `${cluster.prefix}catalog`;
  const subscribers = psql(`SELECT DISTINCT d.subscriber FROM ${inventory}.outbox_deliveries d JOIN ${inventory}.outbox o ON o.seq = d.seq WHERE o.event_type = 'inventory.stock_changed'`).split('\n').filter(Boolean);
  const skus = psql(`SELECT DISTINCT sku FROM ${inventory}.stock_levels ORDER BY sku`).split('\n').filter(Boolean);
  if (!subscribers.length || !skus.length) throw new Error('inventory has no stock_changed subscribers or no SKUs to inject events for');
  const skuArray = `ARRAY[${skus.map((sku) => `'${sku}'`).join(', ')}]`;
  const statement = (count, offset) => `WITH o AS (INSERT INTO ${inventory}.outbox (id, event_type, version, aggregate_type, aggregate_id, payload, occurred_at_ms)
      SELECT gen_random_uuid()::text, 'inventory.stock_changed', 1, 'sku', sku, json_build_object('sku', sku, 'on_hand', 500 + i % 50, 'available', 400 + i % 50)::text,
             (extract(epoch FROM clock_timestamp()) * 1000)::bigint
      FROM (SELECT i, (${skuArray})[1 + (i + ${offset}) % ${skus.length}] AS sku FROM generate_series(1, ${count}) AS i) AS picked
      RETURNING seq, aggregate_id, occurred_at_ms)
    INSERT INTO ${inventory}.outbox_deliveries (seq, subscriber, aggregate_key, next_attempt_at_ms)
      SELECT o.seq, s.subscriber, 'sku:' || o.aggregate_id, o.occurred_at_ms FROM o CROSS JOIN (VALUES ${subscribers.map((name) => `('${name}')`).join(', ')}) AS s (subscriber);\n`;
  const from = Number(psql(`SELECT COALESCE(MAX(position), 0) FROM ${catalog}.inbox`));
  const session = spawn('psql', [pgUrl, '-X', '-q', '-v', 'ON_ERROR_STOP=1'], { stdio: ['pipe', 'ignore', 'inherit'] });
  const finished = new Promise((resolve, reject) => session.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`psql exited with ${code}`)))));
  const load = databaseLoad();
  const started = Date.now();
  let sent = 0;
  if (perTick > 0) {
    for (let tick = 0; tick < ticks; tick += 1) {
      session.stdin.write(statement(perTick, sent));
      sent += perTick;
      const next = started + (tick + 1) * 10;
      await sleep(Math.max(0, next - Date.now()));
    }
  } else {
    for (; sent < total; sent += 2000) session.stdin.write(statement(Math.min(2000, total - sent), sent));
  }
  session.stdin.end();
  await finished;
  const written = Date.now() - started;
  let applied = 0;
  for (;;) {
    applied = Number(psql(`SELECT COUNT(*) FROM ${catalog}.inbox WHERE position > ${from} AND event_type = 'inventory.stock_changed'`));
    if (applied >= sent) break;
    // Reported, not thrown: how far the event path got is the figure.
    if (Date.now() - started > 180_000) break;
    await sleep(50);
  }
  await sleep(1500);
  const after = databaseLoad();
  const [first, last, p50, p99, max] = psql(`SELECT MIN(occurred_at_ms), MAX(received_at_ms),
      percentile_disc(0.5) WITHIN GROUP (ORDER BY received_at_ms - occurred_at_ms), percentile_disc(0.99) WITHIN GROUP (ORDER BY received_at_ms - occurred_at_ms),
      MAX(received_at_ms - occurred_at_ms) FROM ${catalog}.inbox WHERE position > ${from} AND event_type = 'inventory.stock_changed'`).split('|').map(Number);
  // Until everything arrived, or for as long as the bench waited.
  const end = applied >= sent ? last : started + 180_000;
  return {
    events: sent,
    applied,
    writtenPerSecond: (sent * 1000) / written,
    perSecond: (applied * 1000) / Math.max(1, end - first),
    latency: { p50, p99, max },
    perEvent: { transactions: (after.transactions - load.transactions) / sent, rows: (after.rows - load.rows) / sent },
  };
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
const arrived = (phase) => (phase.applied < phase.events ? ` (${phase.applied} of ${phase.events} within 180 s)` : '');
row('events alone (written into the outbox), 1,000 changes/s offered for 30 s: written/s · applied/s', (r) => `${Math.round(r.steadyLoad.writtenPerSecond)} · ${Math.round(r.steadyLoad.perSecond)}${arrived(r.steadyLoad)}`);
row('… commit → effect, p50 / p99 / max', (r) => `${r.steadyLoad.latency.p50} / ${r.steadyLoad.latency.p99} / ${r.steadyLoad.latency.max} ms`);
row('… database per event: transactions · rows read (writer included)', (r) => `${r.steadyLoad.perEvent.transactions.toFixed(2)} · ${Math.round(r.steadyLoad.perEvent.rows)}`);
row('events alone, 10,000 written at once: events/s, first commit to last effect', (r) => `${Math.round(r.flood.perSecond)}${arrived(r.flood)}`);
row('… commit → effect, p50 / p99 / max', (r) => `${r.flood.latency.p50} / ${r.flood.latency.p99} / ${r.flood.latency.max} ms`);
row('… database per event: transactions · rows read (writer included)', (r) => `${r.flood.perEvent.transactions.toFixed(2)} · ${Math.round(r.flood.perEvent.rows)}`);

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

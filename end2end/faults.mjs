// Losing any one process loses nothing: the whole site as separate processes on PostgreSQL (a schema per
// service) and NATS JetStream (a stream per producer) — two shell replicas, two instances each of catalog,
// cart and inventory — under a load of shoppers who browse, add to cart, check out and pay, while one
// instance of every service is killed (SIGKILL, no drain) and later started again. Used by
// `tests/faults.test.mjs`.
//
// The shoppers reach the two shells through a small client-side balancer, as a load balancer would: a
// connection that is refused (it reached no process) goes to the other shell, and so does a GET whose
// connection broke (idempotent). Every failed request is recorded with when it started and ended, so the
// test can tell a request that was in flight at a killed process (allowed to fail, unless it is a GET)
// from any other failure (never allowed).
import { execFileSync, spawn } from 'node:child_process';
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, secretsFor } from './rollout.mjs';

const SERVICES = { inventory: 'tessera-inventory', cart: 'tessera-cart', catalog: 'tessera-catalog' };
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function launch(bin, args, env, port) {
  const output = [];
  const child = spawn(bin, args, { env: { ...process.env, TESSERA_LOG: 'warn', ...env, TESSERA_ADDR: `127.0.0.1:${port}` }, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.on('data', (d) => output.push(d.toString()));
  child.stderr.on('data', (d) => output.push(d.toString()));
  return { child, port, output, url: `http://127.0.0.1:${port}`, bin, args, env };
}

async function ready(proc) {
  const deadline = Date.now() + 90_000;
  while (Date.now() < deadline) {
    if (proc.child.exitCode !== null) throw new Error(`${proc.bin} exited early:\n${proc.output.join('').slice(-3000)}`);
    try {
      if ((await fetch(`${proc.url}/readyz`)).status === 200) return proc;
    } catch {
      // not listening yet
    }
    await sleep(50);
  }
  throw new Error(`${proc.bin} was not ready on ${proc.port}:\n${proc.output.join('').slice(-3000)}`);
}

/** Runs SQL in one service's schema with psql; returns the rows as arrays of strings. */
export function sql(cluster, service, query) {
  const out = execFileSync('psql', [cluster.pgUrl, '-X', '-q', '-At', '-F', '\t', '-v', 'ON_ERROR_STOP=1', '-c', `SET search_path TO ${cluster.prefix}${service}`, '-c', query], {
    encoding: 'utf8',
  });
  return out.split('\n').filter((line) => line.length > 0).map((line) => line.split('\t'));
}

/** The cluster: the instances of each process started at the same moment on one database. */
/// `instances` of every process (2 by default); events over NATS when `natsUrl` is given, else HTTP;
/// `relay: 'cdc'` relays the outboxes from PostgreSQL's replication stream instead of polling.
export async function startCluster({ binDir, siteDir, pgUrl, natsUrl, relay, instances = 2 }) {
  const scratch = mkdtempSync(join(tmpdir(), 'tessera-faults-'));
  const prefix = `f${Math.random().toString(36).slice(2, 10)}_`;
  const portsOf = async () => {
    const list = [];
    for (let n = 0; n < instances; n += 1) list.push(await freePort());
    return list;
  };
  const ports = { shell: await portsOf() };
  for (const name of Object.keys(SERVICES)) ports[name] = await portsOf();
  const urls = (name) => ports[name].map((port) => `http://127.0.0.1:${port}`).join(',');
  const common = {
    TESSERA_POSTGRES_URL: pgUrl,
    TESSERA_SCHEMA_PREFIX: prefix,
    TESSERA_POSTGRES_POOL_SIZE: '4',
    ...(natsUrl ? { TESSERA_NATS_URL: natsUrl, TESSERA_NATS_PREFIX: prefix.replace(/_$/, '') } : {}),
    ...(relay ? { TESSERA_OUTBOX_RELAY: relay } : {}),
    TESSERA_PUBLIC_URL: `http://127.0.0.1:${ports.shell[0]}`,
    TESSERA_JWKS_URL: `http://127.0.0.1:${ports.shell[0]}/.well-known/jwks.json`,
    TESSERA_DEMO_EXTRA_PRODUCTS: '0',
    TESSERA_HEALTH_INTERVAL_MS: '200',
    TESSERA_DRAIN_NOTICE_MS: '0',
    TESSERA_EVENTS_BASE_BACKOFF_MS: '50',
  };
  for (const name of Object.keys(SERVICES)) common[`TESSERA_FRAGMENTS__${name.toUpperCase()}__UPSTREAMS`] = urls(name);
  const cluster = { scratch, prefix, pgUrl, ports, common, processes: {}, kills: [] };
  // The shells serve the sandbox payment provider; the cart calls it at either.
  const extra = { cart: { TESSERA_PAYMENT_URL: urls('shell') } };
  const envFor = (name, index) => ({ ...common, ...(extra[name] ?? {}), ...secretsFor(name, 'faults'), TESSERA_DATA_DIR: join(scratch, `${name}-${index}`), TESSERA_SITE_DIR: siteDir });
  const pair = async (name, bin, args) => {
    const started = ports[name].map((port, index) => launch(bin, args, envFor(name, index), port));
    cluster.processes[name] = await Promise.all(started.map(ready));
  };
  for (const name of Object.keys(SERVICES)) await pair(name, join(binDir, SERVICES[name]), ['--demo']);
  await pair('shell', join(binDir, 'tessera-shell'), ['serve', '--demo']);
  const deadline = Date.now() + 30_000;
  for (const shell of cluster.processes.shell) {
    for (const path of ['/catalog', '/cart', '/admin/inventory']) {
      while ((await fetch(`${shell.url}${path}`, { redirect: 'manual' })).status >= 500) {
        if (Date.now() > deadline) throw new Error(`${path} never came up at ${shell.url}`);
        await sleep(100);
      }
    }
  }
  return cluster;
}

/** SIGKILL one instance (no drain: whatever it was doing is cut off). */
export async function kill(cluster, name, index) {
  const proc = cluster.processes[name][index];
  const exited = new Promise((resolve) => proc.child.once('exit', resolve));
  const kill = { name, index, port: proc.port, at: Date.now(), exitedAt: Infinity };
  cluster.kills.push(kill);
  proc.child.kill('SIGKILL');
  await exited;
  // Until the process is gone, the kernel may still accept connections on its behalf, which then break.
  kill.exitedAt = Date.now();
}

/** Starts a killed instance again on its address. */
export async function restart(cluster, name, index) {
  const old = cluster.processes[name][index];
  cluster.processes[name][index] = await ready(launch(old.bin, old.args.filter((arg) => arg !== '--demo'), old.env, old.port));
}

export async function stopCluster(cluster) {
  for (const procs of Object.values(cluster.processes)) {
    for (const proc of procs) {
      if (proc.child.exitCode === null) {
        const exited = new Promise((resolve) => proc.child.once('exit', resolve));
        proc.child.kill('SIGTERM');
        const timer = setTimeout(() => proc.child.kill('SIGKILL'), 15_000);
        await exited;
        clearTimeout(timer);
      }
    }
  }
  try {
    for (const service of ['shell', 'paysandbox', ...Object.keys(SERVICES)]) {
      execFileSync('psql', [cluster.pgUrl, '-X', '-q', '-v', 'client_min_messages=warning', '-c', 'SET client_min_messages = warning', '-c', `DROP SCHEMA IF EXISTS ${cluster.prefix}${service} CASCADE`, '-c', `DROP PUBLICATION IF EXISTS tessera_outbox_${cluster.prefix}${service}`]);
    }
  } catch {
    // leave them; the prefix is unique
  }
  rmSync(cluster.scratch, { recursive: true, force: true });
}

/** Shoppers through both shells. Returns { stats, stop() }. */
export function shopperLoad(cluster, shoppers) {
  const shells = cluster.ports.shell.map((port) => `http://127.0.0.1:${port}`);
  const stats = { checkouts: 0, requests: 0, gets: 0, failures: [], paid: [] };
  let cursor = 0;
  let running = true;

  // One request through the balancer: refused connections go to the other shell; a GET is also
  // resent when its connection broke. A GET may reuse a kept-alive connection; anything else opens a
  // connection of its own, so "refused" tells exactly that it reached no process (on a kept-alive
  // connection a request can be written into a socket whose process just died). Records the times.
  const keepAlive = new http.Agent({ keepAlive: true });
  const once = (base, method, path, headers, body) =>
    new Promise((resolve, reject) => {
      const url = new URL(path, base);
      const outgoing = http.request(url, { method, headers, agent: method === 'GET' ? keepAlive : false, timeout: 20_000 }, (response) => {
        const chunks = [];
        response.on('data', (chunk) => chunks.push(chunk));
        response.on('end', () => resolve({ status: response.statusCode, headers: response.headers, text: Buffer.concat(chunks).toString() }));
        response.on('error', reject);
      });
      outgoing.on('timeout', () => outgoing.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
      outgoing.on('error', reject);
      outgoing.end(body);
    });
  const request = async (method, path, { cookie = '', body } = {}) => {
    const started = Date.now();
    const first = cursor++ % shells.length;
    let lastError;
    for (let attempt = 0; attempt < shells.length; attempt += 1) {
      const base = shells[(first + attempt) % shells.length];
      try {
        const headers = { cookie };
        // Both shells serve one site at one public address (the first's, standing in for the balancer's).
        if (method === 'POST') Object.assign(headers, { origin: shells[0], 'content-type': 'application/x-www-form-urlencoded' });
        const response = await once(base, method, path, headers, body);
        stats.requests += 1;
        if (method === 'GET') stats.gets += 1;
        let json = null;
        try {
          json = JSON.parse(response.text);
        } catch {
          // HTML
        }
        const cookies = [response.headers['set-cookie'] ?? []].flat();
        return { status: response.status, text: response.text, json, cookies, started, ended: Date.now(), method, path };
      } catch (error) {
        lastError = error;
        if (error.code === 'ECONNREFUSED' || method === 'GET') continue;
        break;
      }
    }
    return { status: 0, text: String(lastError?.code ?? lastError), json: null, cookies: [], started, ended: Date.now(), method, path };
  };

  const failed = (answer, what) => {
    stats.failures.push({ what, method: answer.method, path: answer.path, status: answer.status, text: answer.text.slice(0, 200), started: answer.started, ended: answer.ended });
  };

  // A fresh address each attempt: a registration whose answer was lost may have succeeded.
  const signUp = async (n) => {
    while (running) {
      const email = `fault${n}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}@example.com`;
      const answer = await request('POST', '/register', { body: `email=${encodeURIComponent(email)}&name=Fault+${n}&password=fault-password-${n}` });
      const cookie = answer.cookies.map((c) => c.split(';')[0]).filter((c) => !c.endsWith('=')).join('; ');
      if (answer.status === 303 && cookie) return cookie;
      failed(answer, 'registering');
      await sleep(100);
    }
    return null;
  };

  const shopper = async (n) => {
    let cookie = await signUp(n);
    const step = async (what, method, path, body, ok = (a) => a.status === 200) => {
      const answer = await request(method, path, { cookie, body });
      if (!ok(answer)) {
        failed(answer, what);
        return null;
      }
      return answer;
    };
    while (running && cookie) {
      // Browse.
      if (!(await step('listing', 'GET', '/catalog'))) continue;
      if (!(await step('product page', 'GET', '/catalog/p/stk-rst-10'))) continue;
      // Buy. A failed step abandons this checkout; the shopper starts over with a fresh account, as an
      // interrupted checkout may leave the old cart in checkout until it is freed.
      const abandon = async () => {
        cookie = await signUp(n);
      };
      if (!(await step('adding', 'POST', '/cart/api/add_item', 'sku=STK-RST-10&quantity=1'))) {
        await abandon();
        continue;
      }
      const form = await step('checkout', 'POST', '/cart/api/checkout', '');
      if (!form) {
        await abandon();
        continue;
      }
      const address = 'name=Fault+Shopper&street=1+Kill+Lane&city=Berlin&postcode=10115&country=DE&shipping=standard';
      const placed = await step('placing', 'POST', '/cart/api/place_order', `key=${form.json.key}&${address}`);
      if (!placed) {
        await abandon();
        continue;
      }
      const orderId = placed.json.order_id;
      if (!placed.json.pay_url) {
        failed({ ...placed, status: placed.status, text: `no payment page: ${placed.text}` }, 'placing');
        await abandon();
        continue;
      }
      const paid = await step('paying', 'POST', placed.json.pay_url, 'card_number=4242424242424242&expiry=12%2F39&cvc=123', (a) => a.status === 303);
      if (!paid) {
        await abandon();
        continue;
      }
      const since = Date.now();
      let status = '';
      while (Date.now() - since < 60_000) {
        const order = await step('reading the order', 'GET', `/cart/orders/${orderId}`);
        const read = await request('POST', '/cart/api/order', { cookie, body: `id=${orderId}` });
        if (order && read.status === 200 && read.json?.status === 'Paid') {
          status = 'Paid';
          break;
        }
        await sleep(50);
      }
      if (status !== 'Paid') {
        stats.failures.push({ what: `order ${orderId} not paid within 60 s`, method: 'WAIT', path: '', status: 0, text: '', started: since, ended: Date.now() });
        await abandon();
        continue;
      }
      stats.paid.push(orderId);
      stats.checkouts += 1;
    }
  };

  // Enough stock that the load never runs out (a refusal would count as a failure).
  const stocked = (async () => {
    const signIn = await request('POST', '/login', { body: 'email=admin%40example.com&password=tessera-demo' });
    const admin = signIn.cookies.map((c) => c.split(';')[0]).filter((c) => !c.endsWith('=')).join('; ');
    const received = await request('POST', '/admin/inventory/api/record_movement', { cookie: admin, body: 'sku=STK-RST-10&movement=receive&quantity=10000&new_sku=false' });
    if (received.status !== 200) throw new Error(`receiving stock answered ${received.status}: ${received.text}`);
  })();
  const done = stocked.then(() => Promise.all(Array.from({ length: shoppers }, (_, n) => shopper(n))));
  return {
    stats,
    ready: stocked,
    async stop() {
      running = false;
      await done;
      return stats;
    },
  };
}

/** Whether a failure was in flight at a kill: it started before the process was gone and ended after
 * the signal was sent. */
export function inFlightAtKill(cluster, failure) {
  return cluster.kills.some((kill) => failure.started <= kill.exitedAt && failure.ended >= kill.at);
}

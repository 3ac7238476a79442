// A rolling redeploy of one fragment under continuous load, across real processes: the shell
// (`tessera-shell`), each fragment's own binary, two instances of the fragment being replaced. Used by the
// rollout test (`tests/rollout.test.mjs`, debug binaries) and by `cargo xtask bench --only rollout`
// (release binaries), which prints its figures.
//
// The instances are replaced one after the other by a *different build*: the same server binary with
// another bundle (its JS glue changed, so every file name, SRI hash and the build id differ), as a team's
// redeploy of its fragment would. Each step sends SIGTERM, waits for the instance to drain and exit, and
// starts the new build on the same address (the shell knows instances by address, like a Service).
import { spawn } from 'node:child_process';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync, renameSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// In the order they start: what a fragment calls is up before it.
const FRAGMENT_BINARIES = { inventory: 'tessera-inventory', cart: 'tessera-cart', catalog: 'tessera-catalog' };

/** One Ed25519 signing key per service and run, as base64 PKCS#8 (what `TESSERA_SERVICE_KEYS__<NAME>` takes). */
const serviceKeys = new Map();
function serviceKey(name, tag) {
  const id = `${tag}:${name}`;
  if (!serviceKeys.has(id)) {
    serviceKeys.set(id, generateKeyPairSync('ed25519').privateKey.export({ format: 'der', type: 'pkcs8' }).toString('base64'));
  }
  return serviceKeys.get(id);
}

/**
 * The secrets of a test deployment and who holds which: each fragment its own signing key (every instance
 * of it the same one, so a new instance signs with a key the others already learned from its
 * predecessors' descriptions), and the shared secrets of its own relationships only (the shell serves the
 * sandbox payment provider, so it holds the payment secrets and no fragment's key; it alone holds the key
 * that seals its token-signing keys). A process missing a secret it needs would generate its own and its
 * calls would be refused, so these runs show the split works.
 */
export function secretsFor(name, tag) {
  const secret = (relationship) => `${tag}-${relationship}-secret-0123456789abcdef`;
  const own = { [`TESSERA_SERVICE_KEYS__${name.toUpperCase()}`]: serviceKey(name, tag) };
  const payments = { TESSERA_PAYMENT_API_SECRET: secret('payment-api'), TESSERA_PAYMENT_WEBHOOK_SECRETS: secret('webhooks') };
  // Seals the signing keys in the shell's database: every shell replica must hold the same one.
  const signingKeys = { TESSERA_KEY_ENCRYPTION_KEY: secret('key-encryption') };
  const held = {
    catalog: { ...own },
    inventory: { ...own },
    cart: { ...own, ...payments },
    shell: { ...payments, ...signingKeys },
  };
  if (!held[name]) throw new Error(`no secrets are defined for ${name}`);
  return held[name];
}

/** A free loopback port (the browser tests use it too). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A copy of `siteDir` in which `fragment`'s bundle is another build (new JS, new names, new build id). */
export function anotherBuild(siteDir, fragment, label) {
  const dir = mkdtempSync(join(tmpdir(), `tessera-site-${label}-`));
  cpSync(siteDir, dir, { recursive: true });
  const bundle = join(dir, fragment);
  const manifestPath = join(bundle, 'manifest.json');
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
  const hex16 = (bytes) => createHash('sha256').update(bytes).digest('hex').slice(0, 16);
  const js = manifest.assets.find((asset) => asset.kind === 'js');
  const wasm = manifest.assets.find((asset) => asset.kind === 'wasm');
  const code = Buffer.concat([readFileSync(join(bundle, js.path)), Buffer.from(`\n// rollout build ${label}\n`)]);
  const wasmBytes = readFileSync(join(bundle, wasm.path));
  js.path = `pkg/${fragment}-${hex16(code)}.js`;
  js.integrity = `sha384-${createHash('sha384').update(code).digest('base64')}`;
  js.bytes = code.length;
  writeFileSync(join(bundle, js.path), code);
  manifest.build_id = hex16(Buffer.concat([code, wasmBytes]));
  writeFileSync(`${manifestPath}.tmp`, JSON.stringify(manifest, null, 2));
  renameSync(`${manifestPath}.tmp`, manifestPath);
  return { dir, buildId: manifest.build_id, jsPath: `/${manifest.route_prefix.replace(/^\//, '')}/${js.path}` };
}

/** Starts a process and waits until `/readyz` answers 200. */
async function start(bin, args, env, port) {
  const output = [];
  const child = spawn(bin, args, { env: { ...process.env, TESSERA_LOG: 'warn', ...env, TESSERA_ADDR: `127.0.0.1:${port}` }, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.on('data', (d) => output.push(d.toString()));
  child.stderr.on('data', (d) => output.push(d.toString()));
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${bin} exited early:\n${output.join('')}`);
    try {
      const response = await fetch(`http://127.0.0.1:${port}/readyz`);
      if (response.status === 200) return { child, port, output, url: `http://127.0.0.1:${port}` };
    } catch {
      // not listening yet
    }
    await sleep(50);
  }
  child.kill('SIGKILL');
  throw new Error(`${bin} was not ready on ${port}:\n${output.join('')}`);
}

/** SIGTERM, then wait for the drain to finish and the process to exit (SIGKILL after 30 s). */
async function stop(processInfo) {
  const { child } = processInfo;
  if (child.exitCode !== null) return child.exitCode;
  const exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const code = await exited;
  clearTimeout(timer);
  return code;
}

/** The whole site as separate processes, the rolled fragment with two instances. */
export async function startSite({ binDir, siteDir, rolled }) {
  const scratch = mkdtempSync(join(tmpdir(), 'tessera-rollout-'));
  const ports = { shell: await freePort(), inventory: [await freePort()], cart: [await freePort()], catalog: [await freePort()] };
  ports[rolled].push(await freePort());
  const shellUrl = `http://127.0.0.1:${ports.shell}`;
  const upstreams = {};
  for (const name of Object.keys(FRAGMENT_BINARIES)) {
    upstreams[`TESSERA_FRAGMENTS__${name.toUpperCase()}__UPSTREAMS`] = ports[name].map((port) => `http://127.0.0.1:${port}`).join(',');
  }
  const common = {
    ...upstreams,
    TESSERA_PUBLIC_URL: shellUrl,
    TESSERA_DEMO_EXTRA_PRODUCTS: '0',
    TESSERA_HEALTH_INTERVAL_MS: '200',
    TESSERA_DRAIN_NOTICE_MS: '1000',
  };
  const site = { scratch, shellUrl, processes: {}, rolledInstances: [], binDir, siteDir, common, rolled };
  const envFor = (name, dir) => ({ ...common, ...secretsFor(name, 'rollout'), TESSERA_DATA_DIR: join(scratch, name), TESSERA_SITE_DIR: dir ?? siteDir });
  // The cart pays at the sandbox the shell serves (on the shopper's origin).
  const extra = { cart: { TESSERA_PAYMENT_URL: shellUrl } };
  for (const name of Object.keys(FRAGMENT_BINARIES)) {
    const bin = join(binDir, FRAGMENT_BINARIES[name]);
    // The first instance migrates and seeds; the second shares its data (one database per service).
    for (const [index, port] of ports[name].entries()) {
      const started = await start(bin, ['--demo'], { ...envFor(name), ...(extra[name] ?? {}) }, port);
      if (name === rolled) site.rolledInstances[index] = started;
      else site.processes[name] = started;
    }
  }
  site.processes.shell = await start(join(binDir, 'tessera-shell'), ['serve', '--demo'], envFor('shell'), ports.shell);
  // Every fragment registered and its instances in rotation (the health checks run every 200 ms).
  const deadline = Date.now() + 30_000;
  for (const path of ['/catalog', '/cart', '/admin/inventory']) {
    while ((await fetch(`${shellUrl}${path}`, { redirect: 'manual' })).status >= 500) {
      if (Date.now() > deadline) throw new Error(`${path} never came up`);
      await sleep(100);
    }
  }
  site.envFor = (dir) => ({ ...envFor(rolled, dir), ...(extra[rolled] ?? {}) });
  return site;
}

/** Replaces the rolled fragment's instances one after the other with the build in `newSiteDir`. */
export async function rollOut(site, newSiteDir, log = () => {}) {
  const bin = join(site.binDir, FRAGMENT_BINARIES[site.rolled]);
  for (const [index, old] of site.rolledInstances.entries()) {
    const started = Date.now();
    const code = await stop(old);
    log(`instance ${index + 1} drained and exited (code ${code}) in ${Date.now() - started} ms`);
    if (code !== 0) throw new Error(`instance ${index + 1} exited with ${code}:\n${old.output.join('')}`);
    site.rolledInstances[index] = await start(bin, [], site.envFor(newSiteDir), old.port);
    log(`instance ${index + 1} replaced by the new build, ready after ${Date.now() - started} ms`);
    // Let the shell's checks see it before the next one goes.
    await sleep(600);
  }
}

export async function stopSite(site) {
  for (const instance of site.rolledInstances) await stop(instance);
  for (const processInfo of Object.values(site.processes)) await stop(processInfo);
  rmSync(site.scratch, { recursive: true, force: true });
}

/** Catalog load: pages through the shell, and every bundle file a page names, fetched once each. */
export function catalogLoad(shellUrl, workers) {
  const stats = { served: 0, failed: 0, failures: [], assets: new Map(), builds: new Set() };
  let running = true;
  const paths = ['/catalog', '/catalog/p/mug-stn-01', '/catalog?q=pen', '/catalog/c/mugs'];
  const fail = (what) => {
    stats.failed += 1;
    if (stats.failures.length < 10) stats.failures.push(what);
  };
  const worker = async (n) => {
    for (let i = n; running; i += 1) {
      const path = paths[i % paths.length];
      try {
        const response = await fetch(`${shellUrl}${path}`);
        const html = await response.text();
        if (response.status !== 200 || html.includes('fragment-fallback')) {
          fail(`${path}: ${response.status}${html.includes('fragment-fallback') ? ' (fallback page)' : ''}`);
          continue;
        }
        stats.served += 1;
        for (const [asset] of html.matchAll(/\/catalog\/pkg\/[A-Za-z0-9_.-]+/g)) {
          if (!stats.assets.has(asset)) {
            stats.assets.set(asset, 'pending');
            const loaded = await fetch(`${shellUrl}${asset}`);
            await loaded.arrayBuffer();
            stats.assets.set(asset, loaded.status);
            if (loaded.status !== 200) fail(`${asset} (named by ${path}): ${loaded.status}`);
          }
        }
        const build = html.match(/\/catalog\/pkg\/catalog-([0-9a-f]{16})\.js/);
        if (build) stats.builds.add(build[1]);
      } catch (error) {
        fail(`${path}: ${error.cause?.code ?? error.message}`);
      }
    }
  };
  const done = Promise.all(Array.from({ length: workers }, (_, n) => worker(n)));
  return {
    stats,
    async stop() {
      running = false;
      await done;
      return stats;
    },
  };
}

/** Checkout load: shoppers each run whole checkouts (add, place, pay at the sandbox, wait for paid). */
export async function checkoutLoad(shellUrl, shoppers) {
  const stats = { served: 0, failed: 0, failures: [], placed: new Map() };
  let running = true;
  const fail = (what) => {
    stats.failed += 1;
    if (stats.failures.length < 10) stats.failures.push(what);
  };
  const post = async (cookie, path, body) => {
    const response = await fetch(`${shellUrl}${path}`, {
      method: 'POST',
      headers: { cookie, origin: shellUrl, 'content-type': 'application/x-www-form-urlencoded' },
      body,
      redirect: 'manual',
    });
    const text = await response.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      // not JSON
    }
    return { status: response.status, json, text };
  };
  const signUp = async (path, body) => {
    const response = await fetch(`${shellUrl}${path}`, {
      method: 'POST',
      headers: { origin: shellUrl, 'content-type': 'application/x-www-form-urlencoded' },
      body,
      redirect: 'manual',
    });
    const cookie = response.headers.getSetCookie().map((c) => c.split(';')[0]).filter((c) => !c.endsWith('=')).join('; ');
    if (response.status !== 303 || !cookie) throw new Error(`${path} answered ${response.status}`);
    return cookie;
  };
  // Enough stock that the load never runs out (a refusal would count as a failure).
  const admin = await signUp('/login', 'email=admin%40example.com&password=tessera-demo');
  const received = await post(admin, '/admin/inventory/api/record_movement', 'sku=STK-RST-10&movement=receive&quantity=10000&new_sku=false');
  if (received.status !== 200) throw new Error(`receiving stock answered ${received.status}: ${received.text}`);
  const cookies = [];
  for (let n = 0; n < shoppers; n += 1) {
    const email = `rollout${n}-${Date.now()}@example.com`;
    const cookie = await signUp('/register', `email=${encodeURIComponent(email)}&name=Rollout+${n}&password=rollout-password-${n}`);
    cookies.push(cookie);
    stats.placed.set(cookie, []);
  }
  const checkout = async (cookie) => {
    const step = async (what, path, body, expected = 200) => {
      const answer = await post(cookie, path, body);
      if (answer.status !== expected) throw new Error(`${what} answered ${answer.status}: ${answer.text.slice(0, 200)}`);
      return answer.json;
    };
    await step('adding', '/cart/api/add_item', 'sku=STK-RST-10&quantity=1');
    const form = await step('checkout', '/cart/api/checkout', '');
    const address = 'name=Rollout+Shopper&street=1+Load+Lane&city=Berlin&postcode=10115&country=DE&shipping=standard';
    const placed = await step('placing', '/cart/api/place_order', `key=${form.key}&${address}`);
    stats.placed.get(cookie).push(placed.order_id);
    const paid = await post('', placed.pay_url, 'card_number=4242424242424242&expiry=12%2F39&cvc=123');
    if (paid.status !== 303) throw new Error(`paying answered ${paid.status}: ${paid.text.slice(0, 200)}`);
    const started = Date.now();
    for (;;) {
      const order = await step('reading the order', '/cart/api/order', `id=${placed.order_id}`);
      if (order.status === 'Paid') return;
      if (Date.now() - started > 30_000) throw new Error(`order ${placed.order_id} not paid after 30 s`);
      await sleep(20);
    }
  };
  const worker = async (cookie) => {
    while (running) {
      try {
        await checkout(cookie);
        stats.served += 1;
      } catch (error) {
        fail(error.cause?.code ?? error.message);
      }
    }
  };
  const done = Promise.all(cookies.map((cookie) => worker(cookie)));
  return {
    stats,
    async stop() {
      running = false;
      await done;
      // Every order placed exists and is paid (none lost), and the shopper's order list (the newest 100)
      // is exactly the newest orders placed, each once (none doubled).
      stats.ordersChecked = 0;
      for (const [cookie, placed] of stats.placed) {
        for (const id of placed) {
          const order = await post(cookie, '/cart/api/order', `id=${id}`);
          if (order.status !== 200 || order.json?.status !== 'Paid') fail(`order ${id}: ${order.status} ${order.json?.status ?? order.text.slice(0, 100)}`);
          stats.ordersChecked += 1;
        }
        const listed = ((await post(cookie, '/cart/api/my_orders', '')).json ?? []).map((order) => order.id);
        const newest = [...placed].reverse().slice(0, 100);
        if (JSON.stringify(listed) !== JSON.stringify(newest)) fail(`a shopper's orders ${JSON.stringify(listed.slice(0, 5))}… are not the ${newest.length} placed`);
      }
      return stats;
    },
  };
}

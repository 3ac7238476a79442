// Shared helpers of the browser tests: start real `tessera` processes on free loopback ports with fresh
// data dirs, and drive Debian's Chromium through playwright-core (no downloaded browser).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { freePort } from '../rollout.mjs';

export { freePort };

const BIN = process.env.TESSERA_BIN;
const SITE = process.env.TESSERA_SITE_DIR;
if (!BIN || !SITE) {
  throw new Error('TESSERA_BIN and TESSERA_SITE_DIR must be set (run the browser tests through `cargo xtask test`)');
}

export const DEMO_PASSWORD = 'tessera-demo';
export const SHOPPER = { email: 'shopper@example.com', name: 'Sam Shopper' };
export const ADMIN = { email: 'admin@example.com', name: 'Ada Admin' };

async function waitForPort(port, child, output) {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`tessera exited early:\n${output.join('')}`);
    try {
      const response = await fetch(`http://127.0.0.1:${port}/healthz`);
      if (response.status < 500) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`tessera did not listen on ${port}:\n${output.join('')}`);
}

/** Starts `tessera serve` with demo data; `args` selects a fragment, `env` adds settings. */
export async function startTessera({ args = [], env = {}, port: chosenPort } = {}) {
  const port = chosenPort ?? (await freePort());
  const dataDir = mkdtempSync(join(tmpdir(), 'tessera-e2e-'));
  const output = [];
  const child = spawn(BIN, ['serve', '--demo', ...args], {
    env: {
      ...process.env,
      TESSERA_ADDR: `127.0.0.1:${port}`,
      TESSERA_PUBLIC_URL: `http://127.0.0.1:${port}`,
      TESSERA_DATA_DIR: dataDir,
      TESSERA_SITE_DIR: SITE,
      TESSERA_LOG: 'warn',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.on('data', (d) => output.push(d.toString()));
  child.stderr.on('data', (d) => output.push(d.toString()));
  await waitForPort(port, child, output);
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    output,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Chromium with a fresh profile; `args` adds command-line flags (host-resolver rules, say). */
export async function launchBrowser({ args = [] } = {}) {
  const userDataDir = mkdtempSync(join(tmpdir(), 'tessera-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      ...args,
    ],
  });
  const errors = [];
  context.on('page', (page) => watch(page, errors));
  for (const page of context.pages()) watch(page, errors);
  return {
    context,
    errors,
    async close() {
      await context.close();
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

function watch(page, errors) {
  page.on('pageerror', (error) => errors.push(`pageerror: ${error.message}`));
  page.on('console', (message) => {
    // Pages that answer 401/403/503 on purpose log "Failed to load resource"; script errors are what count.
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
      errors.push(`console: ${message.text()}`);
    }
  });
}

/** Signs in through the shell's login form and waits for the redirect home. */
export async function login(page, baseUrl, { email }, password = DEMO_PASSWORD) {
  await page.goto(`${baseUrl}/login`);
  await page.fill('input[name=email]', email);
  await page.fill('input[name=password]', password);
  await Promise.all([page.waitForURL(`${baseUrl}/`), page.click('button[type=submit]')]);
}

/** Waits until the page's fragment app has hydrated (the module script marks `<body>` when done). */
export async function hydrated(page) {
  await page.waitForSelector('body[data-hydrated="true"]', { timeout: 15_000 });
}

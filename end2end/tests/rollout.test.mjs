// A rolling redeploy with zero failed requests, across real processes: two instances of a fragment
// behind the shell under continuous load, replaced one after the other by a different build.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { anotherBuild, catalogLoad, checkoutLoad, rollOut, startSite, stopSite } from '../rollout.mjs';

const BIN_DIR = process.env.TESSERA_BIN_DIR;
const SITE = process.env.TESSERA_SITE_DIR;
if (!BIN_DIR || !SITE) throw new Error('TESSERA_BIN_DIR and TESSERA_SITE_DIR must be set (run through `cargo xtask test`)');

describe('rolling out the catalog while shoppers browse', () => {
  let site;
  let build;
  before(async () => {
    site = await startSite({ binDir: BIN_DIR, siteDir: SITE, rolled: 'catalog' });
    build = anotherBuild(SITE, 'catalog', 'B');
  });
  after(async () => {
    if (site) await stopSite(site);
    if (build) rmSync(build.dir, { recursive: true, force: true });
  });

  test('every request succeeds and every page names bundle files that load', async (t) => {
    const load = catalogLoad(site.shellUrl, 4);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const steps = [];
    await rollOut(site, build.dir, (line) => steps.push(line));
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const stats = await load.stop();
    const summary = `${stats.served} served, ${stats.failed} failed: ${stats.failures.join('; ')}\n${steps.join('\n')}`;
    t.diagnostic(`catalog rollout: ${stats.served} pages served, ${stats.failed} failed, ${stats.assets.size} bundle files loaded, builds ${[...stats.builds].join(', ')}`);
    assert.equal(stats.failed, 0, summary);
    assert.ok(stats.served > 50, summary);
    // Both builds were served during the rollout, and every bundle file a page named loaded.
    assert.ok(stats.builds.size >= 2, `builds seen: ${[...stats.builds]}`);
    assert.ok([...stats.assets.values()].every((status) => status === 200), JSON.stringify([...stats.assets]));
    // The new build is the one live now.
    const html = await (await fetch(`${site.shellUrl}/catalog`)).text();
    assert.ok(html.includes(build.jsPath), `pages now name ${build.jsPath}`);
  });
});

describe('rolling out the cart during checkouts', () => {
  let site;
  let build;
  before(async () => {
    site = await startSite({ binDir: BIN_DIR, siteDir: SITE, rolled: 'cart' });
    build = anotherBuild(SITE, 'cart', 'B');
  });
  after(async () => {
    if (site) await stopSite(site);
    if (build) rmSync(build.dir, { recursive: true, force: true });
  });

  test('no checkout fails and no order is lost or doubled', async (t) => {
    const load = await checkoutLoad(site.shellUrl, 3);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const steps = [];
    await rollOut(site, build.dir, (line) => steps.push(line));
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const stats = await load.stop();
    const summary = `${stats.served} checkouts, ${stats.failed} failed: ${stats.failures.join('; ')}\n${steps.join('\n')}`;
    t.diagnostic(`cart rollout: ${stats.served} checkouts paid, ${stats.failed} failed, ${stats.ordersChecked} orders checked`);
    assert.equal(stats.failed, 0, summary);
    assert.ok(stats.served >= 5, summary);
    assert.ok(stats.ordersChecked >= stats.served, summary);
  });
});

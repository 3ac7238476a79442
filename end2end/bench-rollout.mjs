// `cargo xtask bench --only rollout`: a rolling redeploy of the catalog (shoppers browsing) and of the cart
// (shoppers checking out), each with two instances behind the shell, release binaries; prints one table
// row per rollout: what was served and what failed while it ran.
//
// Usage: node bench-rollout.mjs <binary dir> <site dir> <seconds of load around each rollout>
import { rmSync } from 'node:fs';
import { anotherBuild, catalogLoad, checkoutLoad, rollOut, startSite, stopSite } from './rollout.mjs';

const [binDir, siteDir, seconds = '5'] = process.argv.slice(2);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const half = (Number(seconds) * 1000) / 2;

console.log(`| rolling redeploy, 2 instances replaced one after the other by another build, ${seconds} s of load around it | served | failed | rollout took | notes |`);
console.log('|---|--:|--:|--:|---|');
for (const rolled of ['catalog', 'cart']) {
  const site = await startSite({ binDir, siteDir, rolled });
  const build = anotherBuild(siteDir, rolled, 'B');
  try {
    const load = rolled === 'catalog' ? catalogLoad(site.shellUrl, 8) : await checkoutLoad(site.shellUrl, 4);
    await sleep(half);
    const started = Date.now();
    await rollOut(site, build.dir);
    const took = Date.now() - started;
    await sleep(half);
    const stats = await load.stop();
    const what = rolled === 'catalog' ? 'catalog pages from 8 workers, each bundle file a page names fetched' : 'whole checkouts (add, place, pay, paid by webhook)';
    const notes = rolled === 'catalog'
      ? `${stats.assets.size} bundle files loaded; builds served: ${stats.builds.size}`
      : `${stats.ordersChecked} orders read back paid; each shopper's newest 100 orders are exactly the newest placed`;
    console.log(`| ${rolled}: ${what} | ${stats.served} | ${stats.failed} | ${(took / 1000).toFixed(1)} s | ${notes}${stats.failures.length ? `; first failure: ${stats.failures[0]}` : ''} |`);
  } finally {
    await stopSite(site);
    rmSync(build.dir, { recursive: true, force: true });
  }
}

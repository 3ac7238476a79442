// `cargo xtask bench --only browser`: how soon pages are interactive, as Chromium sees them.
//
// For the catalog listing, a product page, the cart and an inventory SKU page (release binary, demo data):
// - warm: the page visited again with its bundle cached, 10 times; navigation start → the fragment's
//   hydrated marker (`<body data-hydrated>`, set after `hydrate()` returned), largest contentful paint
//   and the time to the first byte, with the shell's Server-Timing phases of the last visit;
// - first visit over an emulated slow network (1.6 Mbit/s down, 750 kbit/s up, 150 ms round trip, the
//   browser cache emptied), once with compression as served and once with `Accept-Encoding: identity`,
//   the site as it was before it compressed anything: hydrated, LCP and bytes transferred.
//
// Usage (with TESSERA_BIN and TESSERA_SITE_DIR set, as xtask does): node bench-browser.mjs [visits]
import { ADMIN, SHOPPER, hydrated, launchBrowser, login, startTessera } from './tests/helpers.mjs';

const visits = Number(process.argv[2] ?? 10);
const SLOW = { offline: false, latency: 150, downloadThroughput: (1.6e6 / 8), uploadThroughput: (750e3 / 8) };

const PAGES = [
  { name: 'catalog listing', path: '/catalog', user: null },
  { name: 'product page', path: '/catalog/p/mug-stn-01', user: null },
  { name: 'cart', path: '/cart', user: SHOPPER },
  { name: 'inventory SKU page', path: '/admin/inventory/sku/MUG-STN-01', user: ADMIN },
];

// Runs before any page script: notes when the hydrated marker appears, and the largest contentful paint.
const OBSERVE = () => {
  window.__bench = { hydrated: null, lcp: null };
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) window.__bench.lcp = entry.startTime;
  }).observe({ type: 'largest-contentful-paint', buffered: true });
  new MutationObserver((_, observer) => {
    if (document.body?.dataset.hydrated === 'true') {
      window.__bench.hydrated = performance.now();
      observer.disconnect();
    }
  }).observe(document, { subtree: true, attributes: true, attributeFilter: ['data-hydrated'] });
};

async function visit(page, url) {
  const response = await page.goto(url);
  if (!response || response.status() !== 200) throw new Error(`${url} answered ${response?.status()}`);
  await hydrated(page);
  // LCP is final once the page had a moment without new paints.
  await page.waitForTimeout(100);
  return page.evaluate(() => {
    const navigation = performance.getEntriesByType('navigation')[0];
    const resources = performance.getEntriesByType('resource');
    return {
      hydrated: window.__bench.hydrated,
      lcp: window.__bench.lcp,
      ttfb: navigation.responseStart,
      bytes: navigation.transferSize + resources.reduce((sum, entry) => sum + entry.transferSize, 0),
      serverTiming: navigation.serverTiming.map((entry) => `${entry.name} ${entry.duration.toFixed(1)}`).join(', '),
    };
  });
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};
const ms = (value) => (value === null || value === undefined ? '–' : `${Math.round(value)} ms`);

const site = await startTessera();
const warm = [];
const slow = [];
try {
  for (const target of PAGES) {
    // A browser of its own per page: its own user, its own cache.
    const browser = await launchBrowser();
    try {
    const page = await browser.context.newPage();
    await page.addInitScript(OBSERVE);
    const cdp = await browser.context.newCDPSession(page);
    await cdp.send('Network.enable');
    if (target.user) await login(page, site.url, target.user);
    const url = `${site.url}${target.path}`;
    await visit(page, url);
    const runs = [];
    for (let n = 0; n < visits; n += 1) runs.push(await visit(page, url));
    warm.push({ target, runs });

    for (const encoding of ['as served (brotli)', 'identity (uncompressed)']) {
      await cdp.send('Network.clearBrowserCache');
      await cdp.send('Network.setExtraHTTPHeaders', { headers: encoding.startsWith('identity') ? { 'Accept-Encoding': 'identity' } : {} });
      await cdp.send('Network.emulateNetworkConditions', SLOW);
      slow.push({ target, encoding, run: await visit(page, url) });
      await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
      await cdp.send('Network.setExtraHTTPHeaders', { headers: {} });
    }
    if (browser.errors.length) throw new Error(`${target.path} reported errors:\n${browser.errors.join('\n')}`);
    } finally {
      await browser.close();
    }
  }
} finally {
  await site.stop();
}

console.log(`| warm visit (bundle cached), median of ${visits} | navigation → hydrated | p90 | largest contentful paint | first byte | Server-Timing of the last visit (ms) |`);
console.log('|---|--:|--:|--:|--:|---|');
for (const { target, runs } of warm) {
  const hydratedTimes = runs.map((run) => run.hydrated);
  const p90 = [...hydratedTimes].sort((a, b) => a - b)[Math.min(runs.length - 1, Math.floor(runs.length * 0.9))];
  console.log(`| ${target.name} \`${target.path}\` | ${ms(median(hydratedTimes))} | ${ms(p90)} | ${ms(median(runs.map((run) => run.lcp)))} | ${ms(median(runs.map((run) => run.ttfb)))} | ${runs.at(-1).serverTiming} |`);
}
console.log();
console.log('| first visit, 1.6 Mbit/s, 150 ms RTT, empty cache | encoding | navigation → hydrated | largest contentful paint | bytes transferred |');
console.log('|---|---|--:|--:|--:|');
for (const { target, encoding, run } of slow) {
  console.log(`| ${target.name} | ${encoding} | ${ms(run.hydrated)} | ${ms(run.lcp)} | ${run.bytes.toLocaleString('en-US')} B |`);
}

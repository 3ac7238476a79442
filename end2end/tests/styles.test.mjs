// Each fragment owns its stylesheet: linked with SRI on its own pages and in its own widget, scoped at
// build time so that even a deliberately leaky rule cannot reach the chrome or another fragment, and a
// new look ships with the fragment's bundle alone (the server follows the manifest, no restart).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hydrated, launchBrowser, startTessera } from './helpers.mjs';

const RED = 'rgb(255, 0, 0)';
// As broad as a rule gets: every element that the chrome, the catalog and the cart all have.
const LEAKY_RULE = 'header, nav, a, h1, h2, p, li, button, section, div { background-color: rgb(255, 0, 0) !important; }';

/** Another build of the catalog in `site`: its stylesheet with the leaky rule inside its scope, as
 * `cargo xtask build` would have wrapped it, under a new name and SRI; the manifest swapped atomically. */
function deployLeakyCatalogStyles(site) {
  const bundle = join(site, 'catalog');
  const manifestPath = join(bundle, 'manifest.json');
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
  const css = manifest.assets.find((asset) => asset.kind === 'css');
  const scoped = readFileSync(join(bundle, css.path), 'utf8');
  const end = scoped.lastIndexOf('}');
  const leaky = Buffer.from(`${scoped.slice(0, end)}\n${LEAKY_RULE}\n${scoped.slice(end)}`);
  const hex16 = createHash('sha256').update(leaky).digest('hex').slice(0, 16);
  css.path = `pkg/catalog-${hex16}.css`;
  css.integrity = `sha384-${createHash('sha384').update(leaky).digest('base64')}`;
  css.bytes = leaky.length;
  writeFileSync(join(bundle, css.path), leaky);
  manifest.build_id = `${manifest.build_id.slice(0, 8)}${hex16.slice(0, 8)}`;
  writeFileSync(`${manifestPath}.tmp`, JSON.stringify(manifest, null, 2));
  renameSync(`${manifestPath}.tmp`, manifestPath);
  return css.path;
}

const background = (page, selector) => page.$eval(selector, (element) => getComputedStyle(element).backgroundColor);

describe('styles owned by each fragment', () => {
  let site;
  let siteDir;
  let browser;

  before(async () => {
    siteDir = mkdtempSync(join(tmpdir(), 'tessera-site-styles-'));
    cpSync(process.env.TESSERA_SITE_DIR, siteDir, { recursive: true });
    site = await startTessera({ env: { TESSERA_SITE_DIR: siteDir } });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await site?.stop();
    if (siteDir) rmSync(siteDir, { recursive: true, force: true });
  });

  test('a fragment links only its own stylesheet, and a leaky rule in it stays inside the fragment', async () => {
    const page = await browser.context.newPage();
    const stylesheets = () => page.$$eval('link[rel=stylesheet]', (links) => links.map((link) => ({ href: new URL(link.href).pathname, integrity: link.integrity })));

    await page.goto(`${site.url}/catalog`);
    await hydrated(page);
    const catalogSheets = await stylesheets();
    assert.ok(catalogSheets.some((sheet) => sheet.href === '/style/tessera.css'), JSON.stringify(catalogSheets));
    const own = catalogSheets.find((sheet) => /^\/catalog\/pkg\/catalog-[0-9a-f]{16}\.css$/.test(sheet.href));
    assert.ok(own?.integrity.startsWith('sha384-'), `the catalog's stylesheet, with SRI: ${JSON.stringify(catalogSheets)}`);
    // Its rules apply (the sidebar layout is the catalog's own).
    assert.equal(await page.$eval('.listing', (element) => getComputedStyle(element).display), 'grid');
    assert.notEqual(await background(page, 'main h1'), RED);

    await page.goto(`${site.url}/cart`);
    await hydrated(page);
    const cartSheets = await stylesheets();
    assert.ok(cartSheets.some((sheet) => /^\/cart\/pkg\/cart-[0-9a-f]{16}\.css$/.test(sheet.href)), JSON.stringify(cartSheets));
    assert.ok(!cartSheets.some((sheet) => sheet.href.startsWith('/catalog/')), `the cart's page loads no catalog styles: ${JSON.stringify(cartSheets)}`);

    // The catalog team ships a rule as broad as they come; the server follows the new manifest.
    const leakyPath = deployLeakyCatalogStyles(siteDir);
    await page.goto(`${site.url}/catalog`);
    await hydrated(page);
    assert.ok((await stylesheets()).some((sheet) => sheet.href === `/catalog/${leakyPath}`), 'the new look ships without a restart');
    // Inside the catalog's markup it applies…
    assert.equal(await background(page, 'main h1'), RED);
    assert.equal(await background(page, '[data-testid=product-list] li'), RED);
    // …but not to the chrome, which is inside the same <body>.
    for (const selector of ['#tessera-chrome', '#tessera-chrome nav', '#tessera-chrome a']) {
      assert.notEqual(await background(page, selector), RED, `${selector} styled by the catalog`);
    }

    // The home page holds both fragments' widgets: the catalog's rule styles the catalog's widget only.
    await page.goto(`${site.url}/`);
    await page.waitForSelector('[data-widget=catalog] section');
    assert.equal(await background(page, '[data-widget=catalog] section h2'), RED);
    for (const selector of ['[data-widget=catalog]', '[data-widget=cart] section', '[data-widget=cart] section h2', '[data-widget=cart] a', 'main h1', '#tessera-chrome a']) {
      assert.notEqual(await background(page, selector), RED, `${selector} styled by the catalog`);
    }
    assert.deepEqual(browser.errors, []);
    await page.close();
  });
});

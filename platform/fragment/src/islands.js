// Tessera's page runtime for island-hydrated fragments (inlined into each page's module script by
// `tessera_kit::manifest::hydration_tags`).
//
// A fragment page is server-rendered HTML; only its `<leptos-island>` elements run code. This runtime
// 1. hydrates the islands under a root, calling the bundle's export the island names (`data-component`),
//    with the `<leptos-children>` hooks Leptos sets for children rendered on the server;
// 2. navigates inside the fragment without reloading: a link or GET form under the fragment's prefix
//    fetches that page, swaps its `<main class="fragment">` in, updates the title and the address, and
//    hydrates the new islands; back and forward do the same. Anything else is an ordinary load: a
//    different build or fragment answering (so a deploy takes effect at the next navigation), a page
//    without the fragment's main (a 404 page), a redirect out of the fragment, an error;
// 3. `window.tesseraPage.refresh()` re-renders the page's `[data-refresh]` regions from the server after
//    an island changed data, so a page shows what the server says instead of an island's copy of it.
export function tesseraPage(bundle, prefix) {
  const hydrated = new WeakSet();
  const build = () => document.querySelector('meta[name="tessera-build"]')?.content;
  const fragment = () => document.querySelector('meta[name="tessera-fragment"]')?.content;

  function hydrate(root) {
    const childrenHooks = [];
    const visit = (node) => {
      const tag = node.tagName.toLowerCase();
      if (tag === 'leptos-island' && !hydrated.has(node)) {
        hydrated.add(node);
        const hook = childrenHooks[childrenHooks.length - 1];
        if (hook) hook();
        const island = bundle[node.dataset.component];
        if (island) island(node);
        else console.warn('tessera: this bundle has no island', node.dataset.component);
      }
      if (tag === 'leptos-children') childrenHooks.push(node.$$on_hydrate);
      for (const child of node.children) visit(child);
      if (tag === 'leptos-children') childrenHooks.pop();
    };
    visit(root);
  }

  const inside = (url) =>
    url.origin === location.origin &&
    (url.pathname === prefix || url.pathname.startsWith(prefix + '/')) &&
    !url.pathname.startsWith(prefix + '/api/') &&
    !url.pathname.startsWith(prefix + '/pkg/');

  async function fetchPage(url) {
    const response = await fetch(url, { headers: { accept: 'text/html' }, credentials: 'same-origin' });
    const type = response.headers.get('content-type') || '';
    if (!response.ok || !type.includes('text/html')) return null;
    if (response.redirected && !inside(new URL(response.url))) return null;
    const next = new DOMParser().parseFromString(await response.text(), 'text/html');
    const sameApp =
      next.querySelector('meta[name="tessera-build"]')?.content === build() &&
      next.querySelector('meta[name="tessera-fragment"]')?.content === fragment();
    return sameApp ? { doc: next, url: response.redirected ? response.url : url } : null;
  }

  let latest = 0;
  async function navigate(href, push) {
    const ticket = ++latest;
    let page = null;
    try {
      page = await fetchPage(href);
    } catch (_) {
      page = null;
    }
    if (ticket !== latest) return;
    const main = page?.doc.querySelector('main.fragment');
    const current = document.querySelector('main.fragment');
    if (!main || !current) {
      location.assign(href);
      return;
    }
    const adopted = document.adoptNode(main);
    current.replaceWith(adopted);
    document.title = page.doc.title;
    for (const selector of ['meta[name="description"]', 'link[rel="canonical"]', 'script[type="application/ld+json"]']) {
      const old = document.head.querySelector(selector);
      const fresh = page.doc.head.querySelector(selector);
      if (old && fresh) old.replaceWith(document.adoptNode(fresh));
      else if (old) old.remove();
      else if (fresh) document.head.append(document.adoptNode(fresh));
    }
    if (push) history.pushState({ tessera: true }, '', page.url);
    else if (page.url !== href) history.replaceState({ tessera: true }, '', page.url);
    const hash = new URL(page.url, location.href).hash;
    const target = hash && document.getElementById(decodeURIComponent(hash.slice(1)));
    if (target) target.scrollIntoView();
    else if (push) window.scrollTo(0, 0);
    hydrate(adopted);
    window.dispatchEvent(new CustomEvent('tessera:navigated', { detail: { url: page.url } }));
  }

  document.addEventListener('click', (event) => {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    const link = event.target instanceof Element ? event.target.closest('a[href]') : null;
    if (!link || link.target || link.hasAttribute('download') || link.getAttribute('rel')?.includes('external')) return;
    const url = new URL(link.href, location.href);
    if (!inside(url)) return;
    if (url.pathname === location.pathname && url.search === location.search && url.hash) return;
    event.preventDefault();
    navigate(url.href, true);
  });

  document.addEventListener('submit', (event) => {
    const form = event.target;
    if (event.defaultPrevented || !(form instanceof HTMLFormElement) || form.method.toLowerCase() !== 'get' || form.target) return;
    const url = new URL(form.action, location.href);
    if (!inside(url)) return;
    const data = new FormData(form, event.submitter);
    url.search = new URLSearchParams([...data].filter(([, value]) => typeof value === 'string')).toString();
    event.preventDefault();
    navigate(url.href, true);
  });

  history.replaceState({ tessera: true }, '', location.href);
  window.addEventListener('popstate', (event) => {
    if (event.state?.tessera) navigate(location.href, false);
  });

  async function refresh() {
    const page = await fetchPage(location.href).catch(() => null);
    if (!page) {
      location.reload();
      return;
    }
    for (const region of document.querySelectorAll('[data-refresh]')) {
      const name = region.dataset.refresh;
      const fresh = [...page.doc.querySelectorAll('[data-refresh]')].find((r) => r.dataset.refresh === name);
      if (!fresh) {
        region.remove();
        continue;
      }
      const adopted = document.adoptNode(fresh);
      region.replaceWith(adopted);
      hydrate(adopted);
    }
  }

  window.tesseraPage = { refresh, navigate: (href) => navigate(new URL(href, location.href).href, true) };
  hydrate(document.body);
}

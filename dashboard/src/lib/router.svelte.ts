// A tiny hash router: `#/links?tu_id=...`. The server only ever serves /dashboard/ (index.html) and its
// assets, so every page of the dashboard is the same document and the hash says which page shows.

export type Query = Record<string, string>;

function parse(hash: string): { page: string; query: Query } {
  const [path = '', search = ''] = hash.replace(/^#\/?/, '').split('?', 2);
  return { page: decodeURIComponent(path.replace(/\/+$/, '')), query: Object.fromEntries(new URLSearchParams(search)) };
}

export const route = $state(parse(location.hash));

addEventListener('hashchange', () => {
  const next = parse(location.hash);
  route.page = next.page;
  route.query = next.query;
});

/** The href of a page, with optional query parameters (empty values left out). */
export function href(page: string, query: Query = {}): string {
  const search = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== '')).toString();
  return `#/${page}${search ? `?${search}` : ''}`;
}

/** Shows a page; `replace` keeps the browser history as it is (for redirects). */
export function go(page: string, query: Query = {}, replace = false): void {
  const target = href(page, query);
  if (replace) {
    history.replaceState(history.state, '', target);
    const next = parse(target);
    route.page = next.page;
    route.query = next.query;
  } else {
    location.hash = target;
  }
}

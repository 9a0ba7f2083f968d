// The browser beacon: pageviews, outbound clicks and custom events, sent to `POST <host>/t/auto`. No cookies, no
// storage, nothing that identifies the browser: `session_id` is random and lives as long as the page does.
//
//   <script async src="https://<host>/t.js" data-key="<key prefix>"></script>
//   <script>window.tracker=window.tracker||function(){(tracker.q=tracker.q||[]).push(arguments)}</script>
//   <script>tracker('signup', {plan: 'pro'})</script>
//
// Attributes (those of the replaced system's beacon work unchanged):
//   data-key      the tenant's key prefix (required: without it the script does nothing)
//   data-host     where events go (default: where this script was loaded from)
//   data-track    outbound (default) | all | none: which link clicks are events
//   data-no-spa   no pageviews on history changes
//   data-dnt      send nothing when the browser asks not to be tracked (Global Privacy Control, Do Not Track)
//   data-exclude  comma-separated paths that send no pageviews; `*` matches anything (`/admin/*,/preview`); with
//                 data-hash the hash is part of the path (`/#/admin*`)
//   data-hash     hash routing: the hash is part of the page, and a hash change is a navigation
//
// Bodies are JSON sent as text/plain, which browsers send without a CORS preflight. `sendBeacon` outlives the page,
// so a clicked link navigates at once and its event still arrives; `fetch` with `keepalive` where it is missing or
// refuses. The `ad_click_id` a tracking link's redirect put in the landing URL goes with every event of the page.
(function (w, d) {
  var script = d.currentScript;
  var key = script && script.getAttribute('data-key');
  if (!key) return;
  var attr = function (name) {
    return script.getAttribute('data-' + name);
  };
  var has = function (name) {
    return script.hasAttribute('data-' + name);
  };
  var nav = w.navigator;
  var queued = (w.tracker && w.tracker.q) || [];
  if (has('dnt') && (nav.globalPrivacyControl || nav.doNotTrack == '1' || w.doNotTrack == '1')) {
    w.tracker = function () {};
    return;
  }
  var endpoint = (attr('host') || new URL(script.src, location.href).origin).replace(/\/+$/, '') + '/t/auto';
  var track = attr('track') || 'outbound';
  var hashRouting = has('hash');
  var excluded = (attr('exclude') || '')
    .split(',')
    .filter(Boolean)
    .map(function (path) {
      return new RegExp('^' + path.trim().replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*') + '$');
    });
  var session = Array.prototype.map
    .call(crypto.getRandomValues(new Uint8Array(16)), function (b) {
      return (b + 256).toString(16).slice(1);
    })
    .join('');
  var clickId = new URLSearchParams(location.search).get('ad_click_id');
  var lastPage;

  function page() {
    return location.pathname + location.search + (hashRouting ? location.hash : '');
  }

  function send(type, params) {
    var body = { key_prefix: key, event_type: type, page: page(), session_id: session, screen_width: w.innerWidth };
    if (clickId) body.ad_click_id = clickId;
    if (d.referrer) body.referrer = d.referrer;
    if (params) body.params = params;
    body = JSON.stringify(body);
    if (!(nav.sendBeacon && nav.sendBeacon(endpoint, body))) {
      fetch(endpoint, { method: 'POST', body: body, keepalive: true, credentials: 'omit' }).catch(function () {});
    }
  }

  function pageview() {
    var current = page();
    // replaceState to the same address, or a hash change without hash routing: not a new page
    if (current == lastPage) return;
    lastPage = current;
    var path = location.pathname + (hashRouting ? location.hash : '');
    for (var i = 0; i < excluded.length; i++) if (excluded[i].test(path)) return;
    send('pageview');
  }

  // custom events; calls made before this script ran wait in `tracker.q`
  w.tracker = function (type, params) {
    if (typeof type == 'string' && type) send(type, params && typeof params == 'object' ? params : undefined);
  };
  pageview();
  for (var i = 0; i < queued.length; i++) w.tracker.apply(null, queued[i]);

  if (!has('no-spa')) {
    ['pushState', 'replaceState'].forEach(function (name) {
      var original = history[name];
      history[name] = function () {
        var result = original.apply(this, arguments);
        pageview();
        return result;
      };
    });
    w.addEventListener('popstate', pageview);
    if (hashRouting) w.addEventListener('hashchange', pageview);
  }

  if (track != 'none') {
    var onClick = function (e) {
      var link = e.target && e.target.closest && e.target.closest('a[href]');
      if (!link || !/^https?:$/.test(link.protocol)) return;
      if (track == 'outbound' && link.hostname == location.hostname) return;
      send('outbound_click', { href: link.href, text: (link.textContent || '').trim().slice(0, 150) });
    };
    d.addEventListener('click', onClick, true);
    // a middle click opens the link too
    d.addEventListener('auxclick', function (e) {
      if (e.button == 1) onClick(e);
    }, true);
  }
})(window, document);

'use strict';
// restpipe status page. It polls api/state (relative: the page works under
// any path prefix a proxy adds) and draws the answer. Everything from the
// node is put in the page as text (textContent, setAttribute on fixed
// attribute names): peer names, plugin errors and failure messages come from
// outside, and nothing here ever parses them as markup.
(function () {
  const $ = (id) => document.getElementById(id);
  const SVG = 'http://www.w3.org/2000/svg';
  const RETRY_MS = 2000; // how often to retry while the node does not answer
  const TIMEOUT_MS = 5000; // a poll that takes longer counts as failed
  const KEEP_FAILURES = 100; // as many as the node keeps
  const SHOW_FAILURES = 20; // shown before "Show all"

  const int = new Intl.NumberFormat('en');
  const dec1 = new Intl.NumberFormat('en', { maximumFractionDigits: 1 });
  const dec2 = new Intl.NumberFormat('en', { maximumFractionDigits: 2 });

  // h makes an element. props: class, text, and plain attributes; children
  // are nodes or strings (appended as text).
  function h(tag, props, ...kids) {
    const e = document.createElement(tag);
    setProps(e, props);
    for (const k of kids) {
      if (k !== null && k !== undefined && k !== false) e.append(k instanceof Node ? k : String(k));
    }
    return e;
  }
  function s(tag, props) {
    const e = document.createElementNS(SVG, tag);
    setProps(e, props);
    return e;
  }
  function setProps(e, props) {
    if (!props) return;
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.setAttribute('class', v);
      else if (k === 'text') e.textContent = String(v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
  }

  // ---- formatting ----
  function bytes(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? int.format(n) : dec1.format(n)) + ' ' + units[i];
  }
  function duration(sec) {
    sec = Math.max(0, Math.floor(sec));
    if (sec < 60) return sec + ' s';
    const m = Math.floor(sec / 60);
    if (m < 60) return m + ' min';
    const hr = Math.floor(m / 60);
    if (hr < 48) return hr + ' h ' + (m % 60) + ' min';
    return Math.floor(hr / 24) + ' d ' + (hr % 24) + ' h';
  }
  function ms(v) {
    if (v < 1) return dec2.format(v) + ' ms';
    if (v < 1000) return dec1.format(v) + ' ms';
    return dec2.format(v / 1000) + ' s';
  }
  function rate(v) { return (v < 10 ? dec2 : dec1).format(v) + '/s'; }
  function two(n) { return String(n).padStart(2, '0'); }
  function clock(t) {
    const d = new Date(t);
    if (isNaN(d)) return '—';
    const hms = two(d.getHours()) + ':' + two(d.getMinutes()) + ':' + two(d.getSeconds());
    const today = new Date();
    if (d.toDateString() === today.toDateString()) return hms;
    return d.getFullYear() + '-' + two(d.getMonth() + 1) + '-' + two(d.getDate()) + ' ' + hms;
  }
  function iso(t) { const d = new Date(t); return isNaN(d) ? '' : d.toISOString(); }
  function ago(t) { return duration((now() - Date.parse(t)) / 1000) + ' ago'; }
  function plural(n, one, many) { return int.format(n) + ' ' + (n === 1 ? one : many); }

  // The node's clock: ages are measured against it, not the viewer's.
  let clockOffset = 0;
  function now() { return Date.now() + clockOffset; }

  // States, as the node names them, to a colour class. Anything unknown is
  // neutral; data never becomes a class name.
  const stateClass = {
    running: 'ok', alive: 'ok', up: 'ok', ok: 'ok', connected: 'ok', healthy: 'ok',
    starting: 'warn', restarting: 'warn', joining: 'warn', suspect: 'warn', leaving: 'warn', draining: 'warn',
    quarantined: 'bad', misconfigured: 'bad', refused: 'bad', conflict: 'bad',
    dead: 'bad', down: 'bad', failed: 'bad', unreachable: 'bad',
  };
  function badge(state) {
    const cls = Object.prototype.hasOwnProperty.call(stateClass, state) ? stateClass[state] : 'idle';
    return h('span', { class: 'badge ' + cls, text: state || 'unknown' });
  }

  // ---- what the page shows, and asks for ----
  const view = { offset: 0, limit: 50, sort: 'name', order: 'asc', q: '' };
  const sorts = ['name', 'server', 'since', 'rtt', 'in_flight', 'bytes_in', 'bytes_out', 'changes'];
  const page = {
    started: null, // the node's start, to tell a restart
    failures: [], // newest first, at most KEEP_FAILURES
    failuresSeen: 0, // seq of the newest failure held
    failKind: '',
    showAllFailures: false,
    refresh: 1000,
    down: null, // since when the node does not answer
    lastOK: null,
    busy: false,
    again: false,
    timer: 0,
  };

  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    const n = (k, d) => { const v = parseInt(p.get(k), 10); return Number.isFinite(v) && v >= 0 ? v : d; };
    view.offset = n('offset', 0);
    const lim = n('limit', 50);
    view.limit = [25, 50, 100, 200].includes(lim) ? lim : 50;
    view.sort = sorts.includes(p.get('sort')) ? p.get('sort') : 'name';
    view.order = p.get('order') === 'desc' ? 'desc' : 'asc';
    view.q = (p.get('q') || '').slice(0, 128);
  }
  function writeHash() {
    const p = new URLSearchParams();
    if (view.q) p.set('q', view.q);
    if (view.sort !== 'name') p.set('sort', view.sort);
    if (view.order !== 'asc') p.set('order', view.order);
    if (view.limit !== 50) p.set('limit', view.limit);
    if (view.offset) p.set('offset', view.offset);
    const hash = p.toString();
    history.replaceState(null, '', hash ? '#' + hash : location.pathname + location.search);
  }
  function query() {
    const p = new URLSearchParams({
      peers_offset: view.offset, peers_limit: view.limit, peers_sort: view.sort, peers_order: view.order,
    });
    if (view.q) p.set('peers_q', view.q);
    if (page.failuresSeen) p.set('failures_after', page.failuresSeen);
    return p.toString();
  }

  // ---- polling ----
  async function poll() {
    clearTimeout(page.timer);
    page.timer = 0;
    if (page.busy) { page.again = true; return; }
    page.busy = true;
    page.again = false;
    const ctl = new AbortController();
    const abort = setTimeout(() => ctl.abort(), TIMEOUT_MS);
    const asked = viewKey(); // the peers view this poll asks for
    let st = null;
    let err = null;
    try {
      const res = await fetch('api/state?' + query(), { cache: 'no-store', signal: ctl.signal, headers: { Accept: 'application/json' } });
      if (!res.ok) throw new Error('the node answered HTTP ' + res.status);
      if (!(res.headers.get('Content-Type') || '').startsWith('application/json')) {
        throw new Error('the answer is not the node\'s (a proxy in between?)');
      }
      st = await res.json();
    } catch (e) {
      err = e;
    } finally {
      clearTimeout(abort);
      page.busy = false;
    }
    if (st) {
      up(st, asked === viewKey());
    } else {
      down(err);
    }
    schedule();
  }

  function schedule() {
    clearTimeout(page.timer);
    if (document.hidden) {
      setConn('paused', 'Paused while this tab is hidden');
      return;
    }
    page.timer = setTimeout(poll, page.again ? 0 : (page.down ? RETRY_MS : page.refresh));
  }

  function setConn(cls, text) {
    const c = $('conn');
    if (c.textContent !== text) c.textContent = text;
    c.className = 'conn ' + cls;
  }

  function down(err) {
    if (!page.down) page.down = new Date();
    let why = err && err.name === 'AbortError' ? 'no answer within ' + TIMEOUT_MS / 1000 + ' s' : (err && err.message) || 'no answer';
    if (why === 'Failed to fetch') why = 'connection failed';
    setConn('down', 'Cannot reach the node since ' + clock(page.down) + ': retrying every ' + RETRY_MS / 1000 + ' s');
    $('updated').textContent = page.lastOK ? 'Showing what it said at ' + clock(page.lastOK) + ' (' + why + ')' : '(' + why + ')';
  }

  // viewKey identifies the peers view: a poll's answer for another view
  // than the one shown now (the user paged, sorted or filtered while it
  // was on its way) must not replace it.
  function viewKey() {
    return [view.offset, view.limit, view.sort, view.order, view.q].join('\u0000');
  }

  function up(st, current) {
    clockOffset = Date.parse(st.time) - Date.now();
    if (st.refresh_ms > 0) page.refresh = Math.min(Math.max(st.refresh_ms, 100), 2000);
    const notices = [];
    if (page.down) {
      notices.push('Reconnected at ' + clock(new Date()) + ' after ' + duration((Date.now() - page.down) / 1000) + ' without an answer.');
    }
    if (page.started !== null && st.node.started !== page.started) {
      notices.push('The node restarted at ' + clock(st.node.started) + '.');
      // A new run numbers its failures afresh: start over.
      page.failures = [];
      page.failuresSeen = 0;
      page.again = true;
    }
    page.started = st.node.started;
    page.down = null;
    page.lastOK = new Date();
    if (notices.length) {
      const n = $('notice');
      n.textContent = notices.join(' ');
      n.hidden = false;
    }
    setConn('live', 'Live');
    $('updated').textContent = 'Updated ' + clock(page.lastOK);
    mergeFailures(st.events);
    renderNode(st);
    renderCluster(st);
    if (current) renderPeers(st); // else the next poll, already due, brings the view asked for
    renderPlugins(st.plugins || []);
    renderEvents(st.events);
    renderFailures();
  }

  function mergeFailures(ev) {
    if (ev.failures_total < page.failuresSeen) {
      page.failures = [];
      page.failuresSeen = 0;
    }
    const fresh = (ev.failures || []).filter((f) => f.seq > page.failuresSeen);
    if (fresh.length) {
      page.failures = fresh.concat(page.failures).slice(0, KEEP_FAILURES);
      page.failuresSeen = page.failures[0].seq;
    }
    page.failuresTotal = ev.failures_total;
  }

  // label gives each cell of a table's body the text of its column's
  // header (the page's own words), which the phone layout shows beside it.
  function label(table) {
    const heads = [...table.tHead.rows[0].cells].map((th) => th.textContent.trim());
    for (const row of table.tBodies[0].rows) {
      [...row.cells].forEach((td, i) => td.setAttribute('data-label', heads[i] || ''));
    }
  }

  // ---- the node ----
  function fact(term, ...value) {
    return h('div', null, h('dt', { text: term }), h('dd', null, ...value));
  }
  function renderNode(st) {
    const n = st.node;
    document.title = n.name + ' (' + n.role + ') · restpipe';
    $('node-title').textContent = n.name + ' · ' + n.role;
    const facts = [
      fact('Role', n.role),
      fact('Name', n.name),
      fact('Version', n.version, n.commit && n.commit !== 'unknown' ? h('span', { class: 'sub', text: ' (' + n.commit.slice(0, 12) + ')' }) : null),
      fact('Uptime', h('span', { title: 'started ' + iso(n.started), text: duration(n.uptime_seconds) }),
        h('span', { class: 'sub', text: ' since ' + clock(n.started) })),
    ];
    if (n.link) {
      const l = n.link;
      facts.push(fact('Link to the server', l.up ? badge('up') : badge('down'),
        l.since ? h('span', { class: 'sub', text: ' since ' + clock(l.since) }) : null,
        h('div', { class: 'sub', text: l.server + ' · ' + plural(l.changes, 'change', 'changes') + ' · ' + plural(l.dials, 'dial', 'dials') })));
    }
    if (n.policy) {
      const p = n.policy;
      facts.push(fact('Policy', h('span', { text: p.file }),
        h('div', { class: 'sub', text: plural(p.allow_rules, 'allow rule', 'allow rules') + ', ' + plural(p.limit_rules, 'limit', 'limits') + ' · loaded ' + clock(p.loaded_at) }),
        h('div', { class: 'sub mono', text: 'sha256 ' + (p.sha256 || '').slice(0, 16) }),
        p.reload_error ? h('div', { class: 'error-text', text: 'Last reload refused: ' + p.reload_error }) : null));
    } else {
      facts.push(fact('Policy', 'none', h('div', { class: 'sub', text: 'every peer may call every route' })));
    }
    facts.push(fact('Events in flight (gateway)', int.format(n.gateway_in_flight || 0)));
    if (n.go_version) facts.push(fact('Go', n.go_version));
    $('node-facts').replaceChildren(...facts);
  }

  // ---- the cluster ----
  function renderCluster(st) {
    const sec = $('cluster');
    const c = st.cluster;
    sec.hidden = !c;
    $('peers-table').classList.toggle('has-server', !!c);
    if (!c) return;
    const held = (st.peers.summary && st.peers.summary.by_server) || {};
    const rows = (c.members || []).map((m) => h('tr', null,
      h('td', null, h('span', null, m.name, m.self ? h('span', { class: 'sub', text: ' (this node)' }) : null)),
      h('td', null, badge(m.state)),
      h('td', { class: 'num', text: int.format(held[m.name] || 0) })));
    $('cluster-table').tBodies[0].replaceChildren(...rows);
    label($('cluster-table'));
  }

  // ---- the peers ----
  function renderPeers(st) {
    const p = st.peers;
    view.offset = p.offset; // the node clamps a page past the end
    const sum = p.summary || {};
    $('peers-count').textContent = plural(p.total, 'link', 'links');
    if (p.total) {
      const bits = [
        plural(sum.busy || 0, 'peer', 'peers') + ' with events in flight (' + int.format(sum.events_in || 0) + ' in, ' + int.format(sum.events_out || 0) + ' out)',
        'RTT median ' + ms(sum.rtt_median_ms || 0) + ', max ' + ms(sum.rtt_max_ms || 0),
        plural(sum.relinked || 0, 'peer', 'peers') + ' relinked',
        plural(sum.fresh || 0, 'link', 'links') + ' younger than 5 min',
        bytes(sum.bytes_in || 0) + ' in, ' + bytes(sum.bytes_out || 0) + ' out',
      ];
      $('peers-summary').textContent = bits.join(' · ');
    } else {
      $('peers-summary').textContent = '';
    }
    const rows = p.rows.map((r) => h('tr', null,
      h('td', { class: 'clip' }, r.name),
      h('td', { class: 'col-server' }, r.server || '—'),
      h('td', { title: iso(r.connected_since) }, ago(r.connected_since)),
      h('td', { class: 'num' }, ms(r.rtt_ms)),
      h('td', { class: 'num' }, int.format(r.events_in) + ' in / ' + int.format(r.events_out) + ' out'),
      h('td', { class: 'num' }, bytes(r.bytes_in)),
      h('td', { class: 'num' }, bytes(r.bytes_out)),
      h('td', { class: 'num' }, int.format(r.link_changes)),
      h('td', { class: 'mono' }, r.remote_addr),
      h('td', { class: 'sub' }, r.software || '')));
    $('peers-table').tBodies[0].replaceChildren(...rows);
    label($('peers-table'));
    for (const th of $('peers-table').tHead.rows[0].cells) {
      if (th.dataset.sort === p.sort) th.setAttribute('aria-sort', p.order === 'desc' ? 'descending' : 'ascending');
      else th.removeAttribute('aria-sort');
    }
    const empty = $('peers-empty');
    if (p.total === 0) {
      empty.textContent = st.node.role === 'client' ? 'Not linked to the server.' : 'No client is linked.';
    } else if (p.matched === 0) {
      empty.textContent = 'No peer name holds “' + p.q + '”.';
    }
    empty.hidden = p.matched > 0;
    $('peers-table').hidden = p.matched === 0;
    const from = p.matched ? p.offset + 1 : 0;
    const to = p.offset + p.rows.length;
    let range = int.format(from) + '–' + int.format(to) + ' of ' + int.format(p.matched);
    if (p.q) range += ' matching “' + p.q + '” (' + int.format(p.total) + ' in all)';
    $('peers-range').textContent = range;
    $('peers-prev').disabled = p.offset === 0;
    $('peers-next').disabled = to >= p.matched;
    $('peers').querySelector('.pager').hidden = p.matched <= p.limit && p.offset === 0;
  }

  // ---- the plugins ----
  const openRoutes = new Set(); // plugins whose long route list is open
  function routes(p) {
    const list = p.routes || [];
    if (!list.length) return '—';
    const codes = h('div', { class: 'routes' }, ...list.map((r) => h('code', { text: r })));
    if (list.length <= 4) return codes;
    const d = h('details', { open: openRoutes.has(p.file) }, h('summary', { text: plural(list.length, 'route', 'routes') }), codes);
    d.addEventListener('toggle', () => { if (d.open) openRoutes.add(p.file); else openRoutes.delete(p.file); });
    return d;
  }
  function renderPlugins(list) {
    $('plugins-count').textContent = plural(list.length, 'plugin', 'plugins');
    const rows = list.map((p) => h('tr', { 'data-plugin': p.file },
      h('td', null, h('div', null, p.file, p.name && p.name !== p.file ? h('div', { class: 'sub', text: p.name }) : null)),
      h('td', null, badge(p.state)),
      h('td', { class: 'wrap' }, p.reason || ''),
      h('td', { class: 'num' }, int.format(p.restarts)),
      h('td', null, routes(p)),
      h('td', { class: 'num' }, p.pid ? String(p.pid) : '—'),
      h('td', null, p.version || ''),
      h('td', { class: 'num' }, int.format(p.in_flight || 0)),
      h('td', { class: 'wrap' }, p.last_error || p.last_crash ? h('div', null,
        p.last_error && p.last_error !== p.reason ? h('div', { class: 'error-text', text: p.last_error }) : null,
        p.last_error_at ? h('div', { class: 'sub', text: (p.last_error === p.reason ? 'as in “Why”, since ' : 'seen ') + clock(p.last_error_at) }) : null,
        p.last_crash ? h('div', { class: 'sub', text: 'last crash ' + clock(p.last_crash) + ' (the node\'s log says why)' }) : null) : '')));
    $('plugins-table').tBodies[0].replaceChildren(...rows);
    label($('plugins-table'));
    $('plugins-table').hidden = list.length === 0;
    const empty = $('plugins-empty');
    empty.textContent = 'This node runs no plugins (no --plugins directory, or nothing in it).';
    empty.hidden = list.length > 0;
  }

  // ---- the events ----
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }
  const W = 300;
  const H = 64;
  // path draws values as a line, skipping steps where skip(i) holds.
  function path(values, max, skip) {
    const n = values.length;
    let d = '';
    let pen = false;
    for (let i = 0; i < n; i++) {
      if (skip && skip(i)) { pen = false; continue; }
      const x = n > 1 ? (i / (n - 1)) * W : W / 2;
      const y = H - (Math.min(values[i], max) / max) * (H - 2) - 1;
      d += (pen ? 'L' : 'M') + x.toFixed(1) + ',' + y.toFixed(1);
      // A step alone between gaps still shows: a short dash.
      if (!pen && skip && (i === n - 1 || skip(i + 1))) d += i === n - 1 ? 'h-3' : 'h3';
      pen = true;
    }
    return d;
  }
  function pane(title, max, fmtMax, svgKids, label) {
    const svg = s('svg', { viewBox: '0 0 ' + W + ' ' + H, preserveAspectRatio: 'none', role: 'img', 'aria-label': label });
    for (const k of svgKids) svg.append(k);
    const guide = s('line', { class: 'guide', x1: 0, x2: 0, y1: 0, y2: H, visibility: 'hidden' });
    svg.append(guide);
    return { el: h('div', { class: 'pane' }, h('div', { class: 'pane-head' }, h('span', { text: title }), h('span', { text: 'max ' + fmtMax(max) })), svg), svg, guide };
  }
  function legend(...items) {
    return h('span', { class: 'sub' }, ...items.flatMap(([cls, text]) => [h('span', { class: 'swatch ' + cls }), text + ' ']));
  }
  // The node charts routes no handler answered, and routes beyond its
  // bound, together, under these names (see /metrics).
  const groupRoutes = {
    unconfirmed: '(routes no handler has answered)',
    other: '(routes beyond the node\'s series bound)',
    none: '(events refused before they had a route)',
  };
  function chart(r, ev) {
    const n = r.rate.length;
    const last = n - 1;
    const nowRate = n ? r.rate[last] : 0;
    const maxRate = niceMax(Math.max(...r.rate, 0));
    const anyFail = r.failed_rate.some((v) => v > 0);
    const rateKids = [
      s('path', { class: 'area', d: path(r.rate, maxRate) + 'L' + W + ',' + H + 'L0,' + H + 'Z' }),
      s('path', { class: 'line rate', d: path(r.rate, maxRate) }),
    ];
    if (anyFail) rateKids.push(s('path', { class: 'line fail', d: path(r.failed_rate, maxRate) }));
    const noEvents = (i) => r.rate[i] === 0;
    const maxLat = niceMax(Math.max(...r.p99_ms, 0));
    const latKids = [
      s('path', { class: 'line p50', d: path(r.p50_ms, maxLat, noEvents) }),
      s('path', { class: 'line p99', d: path(r.p99_ms, maxLat, noEvents) }),
    ];
    const p99now = [...r.p99_ms].reverse().find((v) => v > 0) || 0;
    const ratePane = pane('events/s', maxRate, rate, rateKids,
      r.route + ': ' + rate(nowRate) + ' in the last step, at most ' + rate(Math.max(...r.rate, 0)) + ' in 5 minutes');
    const latPane = pane('latency', maxLat, ms, latKids,
      r.route + ': p99 latency ' + ms(p99now) + ' in the latest step with events');
    const readout = h('p', { class: 'readout', 'aria-hidden': 'true' });
    const fig = h('figure', { class: 'chart', 'data-route': r.route },
      h('figcaption', null, h('span', null, h('code', { text: r.route }), Object.prototype.hasOwnProperty.call(groupRoutes, r.route) ? h('span', { class: 'sub', text: ' ' + groupRoutes[r.route] }) : null),
        h('span', { class: 'sub', text: plural(r.events, 'event', 'events') + ', ' + int.format(r.failed) + ' failed' })),
      ratePane.el, h('div', { class: 'axis' }, h('span', { text: '5 min ago' }), legend(['sw-rate', 'all'], ['sw-fail', 'failed']), h('span', { text: 'now' })),
      latPane.el, h('div', { class: 'axis' }, h('span', { text: '5 min ago' }), legend(['sw-p50', 'p50'], ['sw-p99', 'p99']), h('span', { text: 'now' })),
      readout);
    // Pointing at a chart reads out that step.
    for (const p of [ratePane, latPane]) {
      p.svg.addEventListener('pointermove', (e) => {
        const box = p.svg.getBoundingClientRect();
        const i = Math.round(((e.clientX - box.left) / box.width) * last);
        if (i < 0 || i > last) return;
        const x = (last ? i / last : 0.5) * W;
        for (const q of [ratePane, latPane]) {
          q.guide.setAttribute('x1', x);
          q.guide.setAttribute('x2', x);
          q.guide.setAttribute('visibility', 'visible');
        }
        const t = (ev.start + i * ev.step_seconds) * 1000;
        readout.textContent = clock(t) + ': ' + rate(r.rate[i]) + ' (' + rate(r.failed_rate[i]) + ' failed)' +
          (r.rate[i] ? ', p50 ' + ms(r.p50_ms[i]) + ', p99 ' + ms(r.p99_ms[i]) : '');
      });
      p.svg.addEventListener('pointerleave', () => {
        for (const q of [ratePane, latPane]) q.guide.setAttribute('visibility', 'hidden');
        readout.textContent = '';
      });
    }
    return fig;
  }
  function renderEvents(ev) {
    const routes = ev.routes || [];
    const total = routes.reduce((a, r) => a + (r.rate.length ? r.rate[r.rate.length - 1] : 0), 0);
    $('events-summary').textContent = routes.length
      ? rate(total) + ' over the charted routes in the last ' + ev.step_seconds + ' s step'
      : 'No events in the last 5 minutes.';
    $('charts').replaceChildren(...routes.map((r) => chart(r, ev)));
    const more = $('charts-more');
    more.hidden = ev.routes_total <= routes.length;
    more.textContent = 'and ' + plural(ev.routes_total - routes.length, 'quieter route', 'quieter routes') + ' not charted (see /metrics)';
  }

  // ---- the failures ----
  function renderFailures() {
    const all = page.failures;
    const kinds = new Map();
    for (const f of all) kinds.set(f.kind, (kinds.get(f.kind) || 0) + 1);
    if (page.failKind && !kinds.has(page.failKind)) page.failKind = '';
    $('failures-count').textContent = page.failuresTotal
      ? plural(page.failuresTotal, 'failure', 'failures') + ' since the node started; the newest ' + int.format(all.length) + ' here'
      : '';
    const chip = (kind, label) => {
      const b = h('button', { type: 'button', 'aria-pressed': String(page.failKind === kind), text: label });
      b.addEventListener('click', () => { page.failKind = kind; renderFailures(); });
      return b;
    };
    const chips = all.length ? [chip('', 'all ' + int.format(all.length))] : [];
    for (const [k, n] of [...kinds].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))) chips.push(chip(k, k + ' ' + int.format(n)));
    $('fail-kinds').replaceChildren(...chips);
    const shown = all.filter((f) => !page.failKind || f.kind === page.failKind);
    const list = page.showAllFailures ? shown : shown.slice(0, SHOW_FAILURES);
    const rows = list.map((f) => h('tr', { 'data-request-id': f.request_id },
      h('td', { title: iso(f.time) }, clock(f.time)),
      h('td', null, h('span', { class: 'badge bad', text: f.kind })),
      h('td', { class: 'clip' }, h('code', { text: f.route || '—' })),
      h('td', { class: 'clip' }, f.peer || ''),
      h('td', null, h('code', { class: 'reqid', text: f.request_id })),
      h('td', { class: 'num' }, ms(f.duration_ms)),
      h('td', { class: 'wrap' }, f.message || '')));
    $('failures-table').tBodies[0].replaceChildren(...rows);
    label($('failures-table'));
    $('failures-table').hidden = list.length === 0;
    const empty = $('failures-empty');
    empty.textContent = 'No failed events since the node started.';
    empty.hidden = all.length > 0;
    const more = $('failures-more');
    more.hidden = shown.length <= SHOW_FAILURES;
    more.textContent = page.showAllFailures ? 'Show the newest ' + SHOW_FAILURES : 'Show all ' + int.format(shown.length);
  }

  // ---- controls ----
  function changed() {
    writeHash();
    poll();
  }
  function wire() {
    readHash();
    $('peers-q').value = view.q;
    $('peers-limit').value = String(view.limit);
    let typing = 0;
    $('peers-q').addEventListener('input', (e) => {
      clearTimeout(typing);
      typing = setTimeout(() => {
        view.q = e.target.value.trim().slice(0, 128);
        view.offset = 0;
        changed();
      }, 250);
    });
    $('peers-limit').addEventListener('change', (e) => {
      view.limit = parseInt(e.target.value, 10) || 50;
      view.offset = 0;
      changed();
    });
    for (const b of $('peers-table').tHead.querySelectorAll('button[data-sort]')) {
      b.addEventListener('click', () => {
        const key = b.dataset.sort;
        if (view.sort === key) view.order = view.order === 'asc' ? 'desc' : 'asc';
        else { view.sort = key; view.order = key === 'name' || key === 'server' ? 'asc' : 'desc'; }
        view.offset = 0;
        changed();
      });
    }
    $('peers-prev').addEventListener('click', () => { view.offset = Math.max(0, view.offset - view.limit); changed(); });
    $('peers-next').addEventListener('click', () => { view.offset += view.limit; changed(); });
    $('failures-more').addEventListener('click', () => {
      page.showAllFailures = !page.showAllFailures;
      renderFailures();
    });
    document.addEventListener('visibilitychange', () => { if (!document.hidden) poll(); else schedule(); });
  }

  wire();
  poll();
})();

// Shared by every page of the ordermesh console: the fetch wrapper (JSON,
// errors, admin token), the error banner, toasts and small DOM/format helpers.
// Loaded before the page's own script; everything lives under window.OM.
'use strict';

const OM = (() => {
  const TOKEN_KEY = 'ordermesh.console.token';
  const SVG_NS = 'http://www.w3.org/2000/svg';

  // ---------------------------------------------------------------- DOM

  // h('a', {href: '/', class: 'x', dataset: {orderId: id}}, 'text', child)
  // Children are text (always set as text, never parsed as HTML: span names
  // and attributes come from the services) or nodes; null/false are skipped.
  function h(tag, attrs, ...children) {
    return build(document.createElement(tag), attrs, children);
  }

  function svg(tag, attrs, ...children) {
    return build(document.createElementNS(SVG_NS, tag), attrs, children);
  }

  function build(node, attrs, children) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'dataset') Object.assign(node.dataset, value);
      else if (key === 'text') node.textContent = value;
      else if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function $(selector, root = document) {
    return root.querySelector(selector);
  }

  // Sets text only when it changed, so polling does not churn the DOM.
  function setText(node, text) {
    const value = String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  // ------------------------------------------------------------- format

  function fmtMs(ms) {
    if (ms === null || ms === undefined || !Number.isFinite(ms)) return '?';
    return `${ms.toFixed(1)} ms`;
  }

  function fmtRate(perSecond) {
    if (perSecond === null || perSecond === undefined || !Number.isFinite(perSecond)) return '?/s';
    return `${perSecond < 100 ? perSecond.toFixed(1) : Math.round(perSecond)}/s`;
  }

  function fmtSeconds(seconds) {
    if (seconds < 1) return `${seconds.toFixed(2)} s`;
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
    return `${(seconds / 3600).toFixed(1)} h`;
  }

  // "0.8 s ago", "12 s ago", "3 min ago"; clock skew can make it negative.
  function fmtAgo(seconds) {
    const s = Math.max(0, seconds);
    if (s < 10) return `${s.toFixed(1)} s ago`;
    if (s < 90) return `${Math.round(s)} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    if (s < 172800) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  }

  function fmtDate(date) {
    const pad = (n) => String(n).padStart(2, '0');
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
  }

  function fmtClock(date) {
    const pad = (n, w = 2) => String(n).padStart(w, '0');
    return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
  }

  // Order ids are UUIDv7: their first characters are a timestamp shared by
  // every order of the same minute, so the tail is what tells them apart.
  function shortId(id) {
    return id && id.length > 12 ? `…${id.slice(-8)}` : id || '';
  }

  const FINAL_STATUSES = new Set(['COMPLETED', 'CANCELLED']);

  function statusBadge(status, attrs = {}) {
    const known = typeof status === 'string' && status.length > 0;
    const cls = known ? `badge status-${status.toLowerCase().replace(/[^a-z0-9]+/g, '-')}` : 'badge status-unknown';
    return h('span', { ...attrs, class: cls }, known ? status : 'unknown');
  }

  // Swaps only the status-* class, so a badge keeps its other classes (size).
  function updateBadge(node, status) {
    const fresh = statusBadge(status);
    const statusClass = [...fresh.classList].find((c) => c.startsWith('status-'));
    for (const c of [...node.classList]) if (c.startsWith('status-') && c !== statusClass) node.classList.remove(c);
    node.classList.add('badge', statusClass);
    setText(node, fresh.textContent);
  }

  // -------------------------------------------------------- error banner

  // Errors are kept per source ("map poll", "place order", …): a poll that
  // succeeds again clears its own error without hiding anyone else's.
  const errors = new Map();

  function showError(source, message) {
    errors.set(source, message);
    renderBanner();
  }

  function clearError(source) {
    if (errors.delete(source)) renderBanner();
  }

  function renderBanner() {
    const banner = document.getElementById('error-banner');
    if (!banner) return;
    if (errors.size === 0) {
      banner.hidden = true;
      banner.replaceChildren();
      return;
    }
    const items = [...errors].map(([source, message]) => h('li', {}, h('strong', {}, `${source}: `), message));
    banner.replaceChildren(
      h('div', { class: 'banner-icon', 'aria-hidden': 'true' }, '!'),
      h('ul', { class: 'banner-list' }, items),
      h('button', { type: 'button', class: 'banner-close', title: 'Dismiss', 'aria-label': 'Dismiss', onclick: () => { errors.clear(); renderBanner(); } }, '×'),
    );
    banner.hidden = false;
  }

  // --------------------------------------------------------------- toasts

  function toast(message, kind = 'info', ms = 7000) {
    let region = document.getElementById('toasts');
    if (!region) {
      region = h('div', { id: 'toasts', class: 'toasts', role: 'status', 'aria-live': 'polite' });
      document.body.append(region);
    }
    const node = h('div', { class: `toast toast-${kind}` }, message);
    region.append(node);
    setTimeout(() => node.remove(), ms);
  }

  // ---------------------------------------------------------- admin token

  // sessionStorage may be disabled (privacy settings): then the token is
  // kept in memory for this page only.
  let memoryToken = null;

  function storedToken() {
    try { return sessionStorage.getItem(TOKEN_KEY) || memoryToken; } catch { return memoryToken; }
  }

  function storeToken(token) {
    memoryToken = token || null;
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch { /* storage disabled: the token lives only until the form closes */ }
  }

  // Drawn, not an emoji: not every machine has an emoji font.
  function lockIcon() {
    return svg('svg', { class: 'lock-icon', viewBox: '0 0 16 16', width: 14, height: 14, 'aria-hidden': 'true' },
      svg('rect', { x: 3, y: 7, width: 10, height: 8, rx: 1.5, fill: 'currentColor' }),
      svg('path', { d: 'M5 7V5a3 3 0 0 1 6 0v2', fill: 'none', stroke: 'currentColor', 'stroke-width': 1.6 }));
  }

  // One form for every request that got a 401 at the same time: they all
  // wait on the same promise and retry once the token is entered.
  let pendingToken = null;

  function askForToken(why) {
    if (pendingToken) return pendingToken;
    pendingToken = new Promise((resolve, reject) => {
      const input = h('input', { id: 'token-input', type: 'password', autocomplete: 'off', placeholder: 'Bearer token', 'aria-label': 'Admin token' });
      const finish = (token) => {
        form.remove();
        pendingToken = null;
        if (token) resolve(token); else reject(new ApiError(401, 'unauthorized', 'Cancelled: this action needs the admin token.'));
      };
      const form = h('form', { id: 'token-form', class: 'token-form', onsubmit: (e) => { e.preventDefault(); finish(input.value.trim()); } },
        lockIcon(),
        h('div', { class: 'token-text' },
          h('strong', {}, 'Admin token required. '),
          why || 'This console protects its actions with a bearer token.'),
        input,
        h('button', { type: 'submit', class: 'btn btn-primary' }, 'Use token'),
        h('button', { type: 'button', class: 'btn', onclick: () => finish(null) }, 'Cancel'),
      );
      const banner = document.getElementById('error-banner');
      (banner ? banner.parentNode : document.body).insertBefore(form, banner ? banner.nextSibling : document.body.firstChild);
      input.focus();
    });
    return pendingToken;
  }

  // ------------------------------------------------------------------ API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // JSON in, JSON out. Throws ApiError with the server's own message for
  // any status >= 400 and for network failures (status 0). A 401 asks for
  // the admin token and retries; a rejected token asks again.
  async function api(method, path, body) {
    for (let attempt = 0; ; attempt++) {
      const token = storedToken();
      const headers = { Accept: 'application/json' };
      if (body !== undefined) headers['Content-Type'] = 'application/json';
      if (token) headers.Authorization = `Bearer ${token}`;
      let response;
      try {
        response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
      } catch (e) {
        throw new ApiError(0, 'network', `cannot reach the console server (${e.message || e})`);
      }
      if (response.status === 401 && attempt < 3) {
        const failure = await readError(response);
        if (token) storeToken(null);
        const why = token ? `The token was rejected (${failure.message}).` : failure.message;
        storeToken(await askForToken(why));
        continue;
      }
      if (!response.ok) throw await readError(response);
      if (response.status === 204) return null;
      const text = await response.text();
      if (!text) return null;
      try {
        return JSON.parse(text);
      } catch {
        throw new ApiError(response.status, 'bad_json', `${method} ${path}: the answer is not JSON`);
      }
    }
  }

  // {"error":{"code","message"}} when the console answered; a plain status
  // line when something in between did (a proxy, a crashed server).
  async function readError(response) {
    let code = `http_${response.status}`;
    let message = `HTTP ${response.status} ${response.statusText || ''}`.trim();
    try {
      const body = await response.json();
      if (body && body.error) {
        code = body.error.code || code;
        message = body.error.message || message;
      }
    } catch { /* not JSON: keep the status line */ }
    return new ApiError(response.status, code, message);
  }

  // Runs `task` every `intervalMs` after the previous run finished (never two
  // at once, so a slow server is not flooded); errors go to the banner under
  // `source` and clear on the next success. Returns {stop, now}.
  function poll(source, intervalMs, task) {
    let timer = null;
    let stopped = false;
    let running = false;
    async function run() {
      clearTimeout(timer);
      if (stopped || running) return;
      running = true;
      try {
        const keepGoing = await task();
        clearError(source);
        if (keepGoing === false) stopped = true;
      } catch (e) {
        showError(source, e.message || String(e));
      } finally {
        running = false;
        if (!stopped) timer = setTimeout(run, intervalMs);
      }
    }
    run();
    return {
      stop() { stopped = true; clearTimeout(timer); },
      now() { if (!stopped) run(); },
    };
  }

  return {
    h, svg, $, setText,
    fmtMs, fmtRate, fmtSeconds, fmtAgo, fmtDate, fmtClock, shortId,
    FINAL_STATUSES, statusBadge, updateBadge,
    showError, clearError, toast, lockIcon,
    api, ApiError, poll, storedToken, storeToken,
  };
})();

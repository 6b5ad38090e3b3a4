// The system map page: polls /api/map and /api/orders, draws the services,
// brokers and channels, and drives the admin actions (kill/stop/restart,
// place an order, generate traffic).
'use strict';

(() => {
  const { h, svg, $, setText } = OM;

  const MAP_INTERVAL_MS = 1500;
  const ORDERS_INTERVAL_MS = 2000;
  const TRAFFIC_INTERVAL_MS = 1000;
  const STALE_AFTER_S = 5;

  // ------------------------------------------------------------ layout
  // A fixed drawing, 982 x 680 units, scaled to the column's width. The
  // system is small and known, so every box and channel has a hand-placed
  // position and route: no layout engine, and no edge crosses another.

  const STAGE_W = 982;
  const STAGE_H = 688;
  const BOX_W = 200;
  const SERVICE_H = 118;
  const INFRA_H = 86;
  const COL = [16, 386, 766];
  const ROW = [12, 224, 436];
  const INFRA_Y = 596;

  const PLACES = {
    order: [COL[0], ROW[1]],
    stock: [COL[1], ROW[0]],
    payment: [COL[2], ROW[0]],
    loyalty: [COL[2], ROW[1]],
    shipping: [COL[1], ROW[2]],
    email: [COL[2], ROW[2]],
    postgres: [COL[0], INFRA_Y],
    rabbitmq: [COL[1], INFRA_Y],
    kafka: [COL[2], INFRA_Y],
  };

  const DISPLAY_NAMES = { postgres: 'PostgreSQL', rabbitmq: 'RabbitMQ', kafka: 'Kafka' };

  const ACTIONS = [
    { action: 'kill', label: 'Kill', title: 'Kill: SIGKILL, no chance to clean up', busy: 'killing…' },
    { action: 'stop', label: 'Stop', title: 'Stop: SIGTERM, a graceful shutdown', busy: 'stopping…' },
    { action: 'restart', label: 'Restart', title: 'Restart: stop, start and wait until ready (up to a minute)', busy: 'restarting…' },
  ];

  // Components the server names but the layout does not know go on a spare
  // row below the infrastructure instead of being dropped.
  const extraPlaces = new Map();
  let stageHeight = STAGE_H; // grows if extra components need rows

  function boxOf(name, kind) {
    let place = PLACES[name];
    if (!place) {
      if (!extraPlaces.has(name)) extraPlaces.set(name, [COL[extraPlaces.size % 3], INFRA_Y + INFRA_H + 20 + Math.floor(extraPlaces.size / 3) * (INFRA_H + 16)]);
      place = extraPlaces.get(name);
    }
    const infra = kind === 'infrastructure' || ['postgres', 'rabbitmq', 'kafka'].includes(name);
    const box = { x: place[0], y: place[1], w: BOX_W, h: infra ? INFRA_H : SERVICE_H };
    if (box.y + box.h + 12 > stageHeight) {
      stageHeight = box.y + box.h + 12;
      fitStage();
    }
    return box;
  }

  const top = (b, dx) => [b.x + dx, b.y];
  const bottom = (b, dx) => [b.x + dx, b.y + b.h];
  const left = (b, dy) => [b.x, b.y + dy];
  const right = (b, dy) => [b.x + b.w, b.y + dy];

  // Orthogonal routes of the known channels. Each branch is a polyline from
  // one producer to the consumer (order.replies has two: stock and payment)
  // and names its source so a branch whose producer is absent is skipped.
  function knownRoutes(b) {
    const { order: o, stock: s, payment: p, loyalty: l, shipping: sh, email: e } = b;
    const gapAB = (o.x + o.w + s.x) / 2;
    const gapBC = (s.x + s.w + p.x) / 2;
    const yStock = s.y + 56;
    const yReplies = s.y + s.h + 32;
    const yPayment = o.y - 28;
    return {
      'stock.commands:stock': {
        branches: [{ from: 'order', points: [top(o, 40), [o.x + 40, yStock], left(s, 56)] }],
        label: [(o.x + 40 + s.x) / 2, yStock],
      },
      'order.replies:order': {
        branches: [
          { from: 'stock', points: [bottom(s, 60), [s.x + 60, yReplies], [o.x + 100, yReplies], top(o, 100)] },
          { from: 'payment', points: [bottom(p, 20), [p.x + 20, yReplies], [o.x + 100, yReplies], top(o, 100)] },
        ],
        label: [(o.x + 100 + s.x + 60) / 2, yReplies],
      },
      'payment.commands:payment': {
        branches: [{ from: 'order', points: [top(o, 150), [o.x + 150, yPayment], [p.x + 140, yPayment], bottom(p, 140)] }],
        label: [gapBC, yPayment],
      },
      'orders:loyalty': {
        branches: [{ from: 'order', points: [right(o, 30), left(l, 30)] }],
        label: [(o.x + o.w + l.x) / 2 - 20, o.y + 30],
      },
      'orders:email': {
        branches: [{ from: 'order', points: [right(o, 88), [gapBC, o.y + 88], [gapBC, e.y + 30], left(e, 30)] }],
        label: [(o.x + o.w + gapBC) / 2 - 20, o.y + 88],
      },
      'orders:shipping': {
        branches: [{ from: 'order', points: [bottom(o, 140), [o.x + 140, sh.y + 44], left(sh, 44)] }],
        label: [gapAB, sh.y + 44],
      },
      'shipments:order': {
        branches: [{ from: 'shipping', points: [left(sh, 94), [o.x + 60, sh.y + 94], bottom(o, 60)] }],
        label: [gapAB, sh.y + 94],
      },
      'shipments:email': {
        branches: [{ from: 'shipping', points: [right(sh, 80), left(e, 80)] }],
        label: [gapBC, sh.y + 80],
      },
    };
  }

  // Unknown channels: a straight line between the boxes' borders.
  function fallbackRoute(edge, boxes) {
    const to = boxes[edge.to];
    const sources = edge.from.split(',').map((s) => s.trim()).filter((s) => boxes[s]);
    if (!to || sources.length === 0) return null;
    const branches = sources.map((from) => {
      const a = center(boxes[from]);
      const z = center(to);
      return { from, points: [clipToBox(a, z, boxes[from]), clipToBox(z, a, to)] };
    });
    const [p0, p1] = branches[0].points;
    return { branches, label: [(p0[0] + p1[0]) / 2, (p0[1] + p1[1]) / 2] };
  }

  const center = (b) => [b.x + b.w / 2, b.y + b.h / 2];

  // Where the segment from the box's centre towards `toward` leaves the box.
  function clipToBox([cx, cy], [tx, ty], box) {
    const dx = tx - cx;
    const dy = ty - cy;
    const sx = dx === 0 ? Infinity : (box.w / 2) / Math.abs(dx);
    const sy = dy === 0 ? Infinity : (box.h / 2) / Math.abs(dy);
    const s = Math.min(sx, sy, 1);
    return [cx + dx * s, cy + dy * s];
  }

  // Polyline with rounded corners, for the orthogonal routes.
  function roundedPath(points, radius = 9) {
    let d = `M${points[0][0]},${points[0][1]}`;
    for (let i = 1; i < points.length - 1; i++) {
      const [px, py] = points[i - 1];
      const [x, y] = points[i];
      const [nx, ny] = points[i + 1];
      const r = Math.min(radius, Math.hypot(x - px, y - py) / 2, Math.hypot(nx - x, ny - y) / 2);
      const inX = x - Math.sign(x - px) * r;
      const inY = y - Math.sign(y - py) * r;
      const outX = x + Math.sign(nx - x) * r;
      const outY = y + Math.sign(ny - y) * r;
      d += ` L${inX},${inY} Q${x},${y} ${outX},${outY}`;
    }
    const last = points[points.length - 1];
    return `${d} L${last[0]},${last[1]}`;
  }

  // ------------------------------------------------------------- state

  const stage = $('#map-stage');
  const viewport = $('#map-viewport');
  const componentNodes = new Map(); // name -> {root, fields…}
  const edgeNodes = new Map(); // edge id -> {group, …}
  const busy = new Map(); // component name -> action in flight
  const previousWaiting = new Map(); // edge id -> waiting at the previous sample
  let edgeLayer = null;
  let lastMap = null;
  let sampledAt = null;

  // --------------------------------------------------------- the stage

  function initStage() {
    stage.style.width = `${STAGE_W}px`;
    edgeLayer = svg('svg', { class: 'edges', width: STAGE_W, height: stageHeight, viewBox: `0 0 ${STAGE_W} ${stageHeight}` },
      svg('defs', {}, ...['rabbitmq', 'kafka', 'waiting', 'other'].map(arrowMarker)));
    stage.append(edgeLayer);
    stage.append(h('div', { class: 'map-waiting-first', id: 'map-waiting-first' }, 'Waiting for the first sample of the system…'));
    fitStage();
    new ResizeObserver(fitStage).observe(viewport);
  }

  const MARKER_COLOURS = { rabbitmq: '#7048e8', kafka: '#1c7ed6', waiting: '#f08c00', other: '#868e96' };

  function arrowMarker(name) {
    return svg('marker', { id: `arrow-${name}`, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, markerUnits: 'userSpaceOnUse', orient: 'auto-start-reverse' },
      svg('path', { d: 'M0,0 L10,5 L0,10 z', fill: MARKER_COLOURS[name] }));
  }

  // Scale the fixed drawing to the column so it is readable from 1100 px
  // wide screens up; never above 1:1, where it would only get blurry text.
  function fitStage() {
    const available = viewport.clientWidth - 24;
    const scale = Math.min(1, available / STAGE_W);
    stage.style.height = `${stageHeight}px`;
    if (edgeLayer) {
      edgeLayer.setAttribute('height', stageHeight);
      edgeLayer.setAttribute('viewBox', `0 0 ${STAGE_W} ${stageHeight}`);
    }
    stage.style.transform = `scale(${scale})`;
    viewport.style.height = `${Math.ceil(stageHeight * scale) + 16}px`;
  }

  // --------------------------------------------------------- components

  function createComponent(component) {
    const { name } = component;
    const box = boxOf(name, component.kind);
    const infra = component.kind === 'infrastructure';
    const stateText = h('span', { class: 'state-pill' });
    const url = h('a', { target: '_blank', rel: 'noopener' });
    const backlog = h('div', { class: 'comp-line backlog' });
    const rates = h('div', { class: 'comp-line rates' });
    const detail = h('div', { class: 'comp-line detail' });
    const busyText = h('span');
    const busyOverlay = h('div', { class: 'comp-busy', hidden: true }, h('span', { class: 'spinner' }), busyText);
    const buttons = ACTIONS.map((a) => h('button', {
      type: 'button',
      class: a.action === 'kill' ? 'btn btn-danger' : 'btn',
      dataset: { action: a.action, target: name },
      onclick: () => act(name, a),
    }, a.label));
    const root = h('div', {
      class: `comp ${infra ? 'infra' : 'service'}`,
      dataset: { component: name, state: component.state },
      style: `left:${box.x}px;top:${box.y}px;width:${box.w}px;height:${box.h}px`,
    },
    h('div', { class: 'comp-head' },
      infra ? h('span', { class: `broker-dot ${name}` }) : null,
      h('span', { class: 'comp-name' }, DISPLAY_NAMES[name] || name),
      stateText),
    infra ? null : h('div', { class: 'comp-line url' }, url),
    infra ? null : backlog,
    infra ? null : rates,
    detail,
    h('div', { class: 'comp-actions' }, buttons),
    busyOverlay);
    stage.append(root);
    const node = { root, box, infra, stateText, url, backlog, rates, detail, buttons, busyOverlay, busyText };
    componentNodes.set(name, node);
    return node;
  }

  function updateComponent(component, control) {
    const node = componentNodes.get(component.name) || createComponent(component);
    const { root } = node;
    if (root.dataset.state !== component.state) root.dataset.state = component.state;
    setText(node.stateText, component.state.replace('_', ' '));

    if (!node.infra) {
      if (component.url) {
        node.url.href = component.url;
        setText(node.url, component.url.replace(/^https?:\/\//, ''));
      } else {
        setText(node.url, 'no address');
      }
      updateBacklog(node.backlog, component.outbox, component.state);
      updateRates(node.rates, component);
    }
    // The detail says why a component is not ready; for services it takes
    // the place of the rates line, which is empty when the service is down.
    const detail = component.detail || (node.infra ? infraSummary(component.state) : '');
    setText(node.detail, detail);
    node.detail.title = detail;
    node.detail.hidden = !detail;
    if (!node.infra) node.rates.hidden = Boolean(component.detail);

    updateButtons(node, component.name, control);
  }

  function infraSummary(state) {
    return { ready: 'reachable', not_ready: 'not ready', down: 'not reachable' }[state] || '';
  }

  function updateBacklog(line, outbox, state) {
    // A service that answers without outbox figures has no outbox: email
    // and loyalty only consume.
    if (!outbox && state !== 'down') {
      line.replaceChildren('no outbox (consumes only)');
      line.classList.remove('backlog');
      line.title = 'This service publishes nothing, so it has no outbox.';
      return;
    }
    if (!outbox) {
      line.replaceChildren('outbox ', h('b', {}, '?'), ' (unknown)');
      line.classList.remove('backlog');
      line.title = 'The outbox backlog is unknown while the service does not answer.';
      return;
    }
    const pending = Math.round(outbox.pending);
    line.classList.toggle('backlog', pending > 0);
    line.replaceChildren('outbox ', h('b', {}, String(pending)), ' pending',
      pending > 0 ? ` · oldest ${OM.fmtSeconds(outbox.oldest_age_seconds)}` : '');
    line.title = 'Messages committed in the outbox that the relay has not published yet.';
  }

  function updateRates(line, component) {
    const out = OM.fmtRate(component.published_per_second);
    const inn = OM.fmtRate(component.consumed_per_second);
    line.replaceChildren(h('b', {}, out), ' out · ', h('b', {}, inn), ' in');
    line.title = 'Messages published / consumed per second';
  }

  function updateButtons(node, name, control) {
    const inFlight = busy.get(name);
    const enabled = control.enabled && !inFlight;
    for (const button of node.buttons) {
      button.disabled = !enabled;
      const spec = ACTIONS.find((a) => a.action === button.dataset.action);
      button.title = control.enabled ? spec.title : (control.reason || 'Actions are disabled');
    }
    node.busyOverlay.hidden = !inFlight;
    if (inFlight) setText(node.busyText, inFlight.busy);
    node.root.dataset.busy = inFlight ? 'true' : 'false';
  }

  // --------------------------------------------------------------- edges

  function createEdge(edge, route) {
    const group = svg('g', { class: 'edge', dataset: { edge: edge.id } });
    const lines = [];
    const flows = [];
    for (const branch of route.branches) {
      const d = roundedPath(branch.points);
      const line = svg('path', { class: 'line', d });
      const flow = svg('path', { class: 'flow', d });
      lines.push(line);
      flows.push(flow);
      group.append(line, flow);
    }
    const title = svg('title');
    const bg = svg('rect', { class: 'label-bg', rx: 4, ry: 4 });
    const channel = svg('text', { class: 'label-channel', 'text-anchor': 'middle', y: -3 });
    const waiting = svg('tspan', { dataset: { field: 'waiting' } });
    const waitingLabel = svg('tspan');
    const rate = svg('tspan');
    const trend = svg('tspan', { class: 'trend' });
    const stats = svg('text', { class: 'label-stats', 'text-anchor': 'middle', y: 12 }, waitingLabel, waiting, trend, rate);
    const label = svg('g', { class: 'label', transform: `translate(${route.label[0]},${route.label[1]})` }, bg, channel, stats);
    group.append(title, label);
    edgeLayer.append(group);
    const node = { group, lines, flows, bg, channel, waiting, waitingLabel, rate, trend, stats, title };
    edgeNodes.set(edge.id, node);
    return node;
  }

  function routeFor(edge, boxes) {
    const known = knownRoutes(boxes)[edge.id];
    if (!known) return fallbackRoute(edge, boxes);
    // Only the branches whose producer the server names.
    const sources = new Set(edge.from.split(',').map((s) => s.trim()));
    const branches = known.branches.filter((b) => sources.has(b.from));
    return branches.length ? { ...known, branches } : fallbackRoute(edge, boxes);
  }

  function updateEdge(edge, boxes) {
    let node = edgeNodes.get(edge.id);
    if (!node) {
      const route = routeFor(edge, boxes);
      if (!route) return;
      node = createEdge(edge, route);
    }
    const unknown = edge.waiting === null || edge.waiting === undefined;
    const waiting = unknown ? 0 : edge.waiting;
    const broker = edge.broker === 'rabbitmq' || edge.broker === 'kafka' ? edge.broker : 'other';
    const moving = Number.isFinite(edge.per_second) && edge.per_second > 0;

    node.group.setAttribute('class', `edge ${broker}${waiting > 0 ? ' waiting' : ''}${unknown ? ' unknown' : ''}${moving ? '' : ' idle'}`);
    // More waiting, thicker line: log scale so 5 and 5000 both read.
    const width = waiting > 0 ? 2.5 + Math.min(4.5, Math.log2(1 + waiting)) : 2;
    for (const line of node.lines) {
      line.style.strokeWidth = `${width}px`;
      line.setAttribute('marker-end', `url(#arrow-${waiting > 0 ? 'waiting' : unknown ? 'other' : broker})`);
    }

    setText(node.channel, edge.channel);
    setText(node.waitingLabel, `${edge.waiting_label} `);
    setText(node.waiting, unknown ? '?' : String(edge.waiting));
    setText(node.rate, ` · ${OM.fmtRate(edge.per_second)}`);
    setText(node.trend, trendMark(edge.id, edge.waiting));
    setText(node.title, `${edge.channel} (${edge.broker} ${edge.kind}) ${edge.from} → ${edge.to}\n${edge.waiting_label}: ${unknown ? 'unknown' : edge.waiting}\n${OM.fmtRate(edge.per_second)} messages per second`);
    sizeLabel(node);
  }

  // ▲ while the backlog grows from one sample to the next.
  function trendMark(id, waiting) {
    const before = previousWaiting.get(id);
    previousWaiting.set(id, waiting);
    if (waiting === null || waiting === undefined || waiting === 0 || before === undefined || before === null) return '';
    if (waiting > before) return ' ▲';
    if (waiting < before) return ' ▼';
    return '';
  }

  // The label box follows its text, measured after the text is set.
  function sizeLabel(node) {
    const a = node.channel.getBBox();
    const b = node.stats.getBBox();
    const width = Math.ceil(Math.max(a.width, b.width)) + 14;
    const y = Math.floor(Math.min(a.y, b.y)) - 4;
    const height = Math.ceil(Math.max(a.y + a.height, b.y + b.height)) + 4 - y;
    node.bg.setAttribute('x', -width / 2);
    node.bg.setAttribute('y', y);
    node.bg.setAttribute('width', width);
    node.bg.setAttribute('height', height);
  }

  // ------------------------------------------------------- dead letters

  // One row per broker, so eight destinations stay readable in two lines.
  function renderDeadLetters(deadLetters) {
    const panel = $('#dead-letters');
    const brokers = [...new Set(deadLetters.map((dl) => dl.broker))];
    const rows = brokers.map((broker) => h('div', { class: 'dlq-row' },
      h('span', { class: 'dlq-broker' }, h('span', { class: `broker-dot ${broker}` }), DISPLAY_NAMES[broker] || broker),
      deadLetters.filter((dl) => dl.broker === broker).map(deadLetterChip)));
    panel.replaceChildren(h('h3', {}, 'Dead letters'),
      rows.length ? h('div', { class: 'dlq-rows' }, rows) : h('span', { class: 'faint small' }, 'no dead-letter destinations reported'));
  }

  function deadLetterChip(dl) {
    const unknown = dl.pending === null || dl.pending === undefined;
    return h('span', {
      class: `dlq${!unknown && dl.pending > 0 ? ' has-letters' : ''}`,
      dataset: { destination: dl.destination },
      title: `${dl.destination}: ${unknown ? 'unknown number of' : dl.pending} dead letter(s) that ${dl.from} gave up on`,
    }, dl.destination, h('span', { class: 'count', dataset: { field: 'pending' } }, unknown ? '?' : String(dl.pending)));
  }

  function renderProblems(problems) {
    const box = $('#problems');
    box.hidden = problems.length === 0;
    $('#problem-list').replaceChildren(...problems.map((p) => h('li', {}, p)));
  }

  function renderControl(control) {
    const reason = $('#control-reason');
    reason.hidden = control.enabled;
    if (!control.enabled) {
      const text = control.reason || 'actions are disabled';
      reason.replaceChildren(h('strong', {}, 'Actions disabled: '), text);
      reason.title = text;
    }
    const chip = $('#token-chip');
    chip.hidden = !control.token_required;
    if (control.token_required) {
      const has = Boolean(OM.storedToken());
      chip.replaceChildren(OM.lockIcon(), 'admin token required', has ? ' · token set · ' : '',
        has ? h('button', { type: 'button', class: 'linklike', onclick: () => { OM.storeToken(null); renderControl(control); } }, 'forget') : '');
    }
  }

  // ---------------------------------------------------------- map poll

  async function pollMap() {
    const map = await OM.api('GET', '/api/map');
    lastMap = map;
    const control = map.control || { enabled: false, reason: 'the server sent no control state', token_required: false };
    renderControl(control);
    // Before the console's first sample the answer has only `control`.
    const components = map.components || [];
    $('#map-waiting-first').hidden = components.length > 0;
    sampledAt = map.sampled_at ? Date.parse(map.sampled_at) : null;
    if (map.sampled_at) $('#sampled-at').title = `sampled at ${map.sampled_at}`;
    tickFreshness();

    const boxes = {};
    for (const c of components) boxes[c.name] = boxOf(c.name, c.kind);
    for (const c of components) updateComponent(c, control);
    for (const e of map.edges || []) updateEdge(e, boxes);
    renderDeadLetters(map.dead_letters || []);
    renderProblems(map.problems || []);
  }

  function refreshButtons() {
    if (!lastMap) return;
    const control = lastMap.control || { enabled: false };
    for (const [name, node] of componentNodes) updateButtons(node, name, control);
  }

  function tickFreshness() {
    const label = $('#sampled-at');
    const freshness = $('#freshness');
    if (sampledAt === null || Number.isNaN(sampledAt)) {
      setText(label, 'waiting for the first sample…');
      freshness.classList.add('stale');
      return;
    }
    const age = (Date.now() - sampledAt) / 1000;
    setText(label, `updated ${OM.fmtAgo(age)}`);
    freshness.classList.toggle('stale', age > STALE_AFTER_S);
  }

  // ------------------------------------------------------------ actions

  async function act(name, spec) {
    if (busy.has(name)) return;
    busy.set(name, spec);
    refreshButtons();
    const source = `${spec.label} ${name}`;
    try {
      const answer = await OM.api('POST', `/api/components/${encodeURIComponent(name)}/${spec.action}`);
      OM.clearError(source);
      OM.toast(answer && answer.output ? answer.output : `${name}: ${spec.action} done`, 'ok');
    } catch (e) {
      OM.showError(source, e.message);
    } finally {
      busy.delete(name);
      refreshButtons();
      mapPoller.now();
    }
  }

  async function placeOrder() {
    const button = $('#place-order');
    button.disabled = true;
    try {
      const placed = await OM.api('POST', '/api/orders', {});
      OM.clearError('Place an order');
      const target = $('#placed-order');
      const href = placed.journey || `/orders/${placed.order_id}`;
      target.replaceChildren('Placed ', h('a', { href, title: 'Open its journey' }, placed.order_id), OM.statusBadge(placed.status));
      target.hidden = false;
      ordersPoller.now();
    } catch (e) {
      OM.showError('Place an order', e.message);
    } finally {
      button.disabled = false;
    }
  }

  // ------------------------------------------------------------ traffic

  let trafficPoller = null;

  function renderTraffic(t) {
    const running = Boolean(t && t.running);
    $('#traffic-start').disabled = running;
    $('#traffic-stop').disabled = !running;
    const status = $('#traffic-status');
    const bar = $('#traffic-progress');
    if (!t || (!running && !t.target)) {
      status.replaceChildren('Idle');
      bar.firstElementChild.style.width = '0';
      return;
    }
    const done = t.placed + t.failed;
    const percent = t.target ? Math.min(100, (100 * done) / t.target) : 0;
    bar.firstElementChild.style.width = `${percent}%`;
    bar.classList.toggle('failed', t.failed > 0);
    const state = running ? 'Running' : done >= t.target ? 'Finished' : 'Stopped';
    status.replaceChildren(
      h('b', {}, state), `: ${t.placed} of ${t.target} placed`,
      t.failed ? h('span', { class: 'err' }, ` · ${t.failed} failed`) : '',
      ` · ${t.per_second}/s for ${t.seconds} s`,
      t.last_error ? h('div', { class: 'err' }, `last error: ${t.last_error}`) : '');
  }

  function watchTraffic() {
    if (trafficPoller) trafficPoller.stop();
    trafficPoller = OM.poll('Traffic', TRAFFIC_INTERVAL_MS, async () => {
      const t = await OM.api('GET', '/api/traffic');
      renderTraffic(t);
      if (!t.running) ordersPoller.now();
      return Boolean(t.running);
    });
  }

  async function startTraffic(event) {
    event.preventDefault();
    const perSecond = Number($('#traffic-rate').value);
    const seconds = Math.round(Number($('#traffic-seconds').value));
    if (!(perSecond > 0) || !(seconds > 0)) {
      OM.showError('Traffic', 'enter a rate above 0 and a whole number of seconds');
      return;
    }
    $('#traffic-start').disabled = true;
    try {
      const t = await OM.api('POST', '/api/traffic', { per_second: perSecond, seconds });
      OM.clearError('Traffic');
      renderTraffic(t);
      watchTraffic();
    } catch (e) {
      OM.showError('Traffic', e.message);
      $('#traffic-start').disabled = false;
    }
  }

  async function stopTraffic() {
    $('#traffic-stop').disabled = true;
    try {
      renderTraffic(await OM.api('DELETE', '/api/traffic'));
      OM.clearError('Traffic');
    } catch (e) {
      OM.showError('Traffic', e.message);
      $('#traffic-stop').disabled = false;
    }
  }

  // ------------------------------------------------------ recent orders

  const KNOWN_SERVICES = ['order', 'stock', 'payment', 'shipping', 'email', 'loyalty'];

  async function pollOrders() {
    const { orders } = await OM.api('GET', '/api/orders?limit=30');
    const body = $('#recent-orders tbody');
    setText($('#orders-count'), orders.length ? `${orders.length} shown` : '');
    if (orders.length === 0) {
      body.replaceChildren(h('tr', { class: 'empty-row' }, h('td', { colspan: 4 }, 'No orders seen yet: place one.')));
      return;
    }
    body.replaceChildren(...orders.map(orderRow));
  }

  function orderRow(order) {
    const seen = new Set(order.services || []);
    const firstSeen = Date.parse(order.first_seen);
    return h('tr', { dataset: { orderId: order.order_id } },
      h('td', {}, h('a', { href: `/orders/${encodeURIComponent(order.order_id)}`, title: order.order_id }, OM.shortId(order.order_id))),
      h('td', { dataset: { field: 'status' } }, OM.statusBadge(order.status)),
      h('td', { title: `${order.services.join(', ')} · ${order.spans} spans` },
        h('span', { class: 'pips' }, KNOWN_SERVICES.map((s) => h('span', { class: `pip${seen.has(s) ? ' on' : ''}` }))),
        String(seen.size)),
      h('td', { class: 'muted', title: order.first_seen }, Number.isNaN(firstSeen) ? order.first_seen : OM.fmtAgo((Date.now() - firstSeen) / 1000)));
  }

  // --------------------------------------------------------------- start

  initStage();
  const mapPoller = OM.poll('System map', MAP_INTERVAL_MS, pollMap);
  const ordersPoller = OM.poll('Recent orders', ORDERS_INTERVAL_MS, pollOrders);
  setInterval(tickFreshness, 200);

  // ------------------------------------------------------------ coupling lesson

  function fmtMs(ms) {
    return ms === null || ms === undefined ? '—' : `${ms.toFixed(1)} ms`;
  }

  function renderCoupling(r) {
    const failedAt = (m) => {
      const named = Object.entries(m.failed_at || {}).map(([s, n]) => `${s} ×${n}`).join(', ');
      return named ? `${m.failed} (${named})` : String(m.failed);
    };
    const rows = [
      ['accepted', String(r.sync.accepted), String(r.async.accepted)],
      ['failed, at', failedAt(r.sync), failedAt(r.async)],
      ['caller blocked p50', fmtMs(r.sync.blocked_p50_ms), fmtMs(r.async.blocked_p50_ms)],
      ['caller blocked p99', fmtMs(r.sync.blocked_p99_ms), fmtMs(r.async.blocked_p99_ms)],
      ...r.sync_answered_p50_ms.map(([service, at]) => [`… until ${service} answered (p50)`, fmtMs(at), '—']),
    ];
    const body = $('#coupling-result tbody');
    body.replaceChildren(...rows.map(([label, sync, mailbox]) =>
      h('tr', { 'data-row': label }, h('td', {}, label), h('td', { 'data-field': 'sync' }, sync),
        h('td', { 'data-field': 'async' }, mailbox))));
    $('#coupling-result').hidden = false;
  }

  async function runCoupling(event) {
    event.preventDefault();
    const button = $('#coupling-run');
    button.disabled = true;
    button.textContent = 'Running…';
    try {
      const orders = Math.round(Number($('#coupling-orders').value));
      renderCoupling(await OM.api('POST', '/api/lesson/coupling', { orders }));
      OM.clearError('Coupling lesson');
      ordersPoller.now();
    } catch (e) {
      OM.showError('Coupling lesson', e.message);
    } finally {
      button.disabled = false;
      button.textContent = 'Run';
    }
  }

  $('#coupling-form').addEventListener('submit', runCoupling);
  $('#place-order').addEventListener('click', placeOrder);
  $('#traffic-form').addEventListener('submit', startTraffic);
  $('#traffic-stop').addEventListener('click', stopTraffic);

  // A traffic run started earlier (or from another tab) shows its progress.
  OM.api('GET', '/api/traffic').then((t) => {
    renderTraffic(t);
    if (t && t.running) watchTraffic();
  }).catch((e) => OM.showError('Traffic', e.message));
})();

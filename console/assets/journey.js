// The journey page: one order's state history, its spans as a waterfall
// grouped by service, and the messages that carried it from service to
// service. Polls /api/orders/{id} until the journey is complete and final.
'use strict';

(() => {
  const { h, svg, $, setText } = OM;

  const POLL_MS = 1500;
  const SERVICE_ORDER = ['order', 'stock', 'payment', 'shipping', 'email', 'loyalty'];

  // Waterfall geometry, in CSS pixels.
  const LABEL_W = 290; // span names
  const RIGHT_PAD = 64; // room for the last bar's duration
  const AXIS_H = 28;
  const LANE_HEAD_H = 26;
  const ROW_H = 21;
  const BAR_H = 11;
  const INDENT = 14;

  const orderId = decodeURIComponent(location.pathname.split('/').filter(Boolean)[1] || '');
  const root = $('#journey');
  const tooltip = $('#tooltip');
  let lastText = null;
  let lastJourney = null;
  let drawnWidth = 0;

  // ------------------------------------------------------------ header

  function renderHeader(j) {
    setText($('#order-id'), j.order_id);
    document.title = `Order ${OM.shortId(j.order_id)} · ordermesh console`;
    root.dataset.complete = String(Boolean(j.complete));
    root.dataset.status = j.status || '';
    OM.updateBadge($('#order-status'), j.status);
    const statusError = $('#status-error');
    statusError.hidden = !j.status_error;
    setText(statusError, j.status_error ? `status unknown: ${j.status_error}` : '');
    // A final order whose trace still lacks a service will not get it:
    // say so instead of waiting with a spinner.
    const note = $('#arriving-note');
    const final = j.status === 'COMPLETED' || j.status === 'CANCELLED';
    note.hidden = Boolean(j.complete);
    note.classList.toggle('settled', final);
    note.lastChild.textContent = final ? 'trace incomplete' : 'spans still arriving';
  }

  // A message moved the order, or a request did: the placement, or (the
  // synchronous twin's transitions, which carry no message) its calls.
  function causeOf(entry) {
    if (entry.message_type) return h('code', {}, entry.message_type);
    const request = entry.from_status ? 'a synchronous call' : 'the request that placed it';
    return h('span', { class: 'faint' }, request);
  }

  function renderMissing(missing) {
    $('#missing').hidden = missing.length === 0;
    const heading = $('#missing h2');
    setText(heading, missing.length === 1 ? 'Missing: 1 service has not reported its part' : `Missing: ${missing.length} services have not reported their part`);
    $('#missing-list').replaceChildren(...missing.map((m) =>
      h('li', { dataset: { service: m.service } }, h('b', {}, m.service), ': ', m.reason)));
  }

  function renderSummary(j) {
    const started = j.started_at_unix_ms ? new Date(j.started_at_unix_ms) : null;
    setText($('#started-at'), started ? `${OM.fmtDate(started)} ${OM.fmtClock(started)}` : '–');
    setText($('#duration'), Number.isFinite(j.duration_ms) && j.services.length ? OM.fmtMs(j.duration_ms) : '–');
    const spans = j.services.reduce((n, s) => n + s.spans.length, 0);
    setText($('#span-count'), `${spans} in ${j.services.length} service${j.services.length === 1 ? '' : 's'}`);
    $('#trace-ids').replaceChildren(...(j.trace_ids.length ? j.trace_ids.map((t) => h('div', {}, t)) : ['–']));
    // One pill per service, the full query in its tooltip: six URLs that
    // differ only in port and path would not fit the card legibly.
    $('#links').replaceChildren(...j.links.map((l) =>
      h('li', {}, h('a', { class: 'query-link', href: l.url, target: '_blank', rel: 'noopener', title: l.url },
        l.service, h('span', { class: 'ext', 'aria-hidden': 'true' }, '↗')))));
  }

  function renderHistory(j) {
    const body = $('#history tbody');
    if (j.history.length === 0) {
      const why = j.status_error ? 'The order service did not answer.' : 'No state history yet.';
      body.replaceChildren(h('tr', { class: 'empty-row' }, h('td', { colspan: 4 }, why)));
      return;
    }
    body.replaceChildren(...j.history.map((entry) => {
      const at = new Date(entry.at);
      const offset = j.started_at_unix_ms && !Number.isNaN(at.getTime()) ? at.getTime() - j.started_at_unix_ms : null;
      return h('tr', { dataset: { toStatus: entry.to_status } },
        h('td', { title: entry.at }, Number.isNaN(at.getTime()) ? entry.at : OM.fmtClock(at),
          offset !== null ? h('span', { class: 'faint' }, ` +${offset.toFixed(1)} ms`) : ''),
        h('td', {}, entry.from_status ? OM.statusBadge(entry.from_status) : h('span', { class: 'faint' }, 'new'),
          h('span', { class: 'arrow' }, '→'), OM.statusBadge(entry.to_status)),
        h('td', {}, causeOf(entry)),
        h('td', { class: 'muted' }, entry.note || ''));
    }));
  }

  // ---------------------------------------------------------- waterfall

  // Spans of one lane in tree order (parents before children, siblings by
  // start), each with its depth. A parent in another service (the producer
  // of a consumed message) makes the span a root of this lane.
  function treeOrder(spans) {
    const ids = new Set(spans.map((s) => s.span_id));
    const children = new Map();
    const roots = [];
    for (const s of spans) {
      if (s.parent_span_id && ids.has(s.parent_span_id) && s.parent_span_id !== s.span_id) {
        if (!children.has(s.parent_span_id)) children.set(s.parent_span_id, []);
        children.get(s.parent_span_id).push(s);
      } else {
        roots.push(s);
      }
    }
    const byStart = (a, b) => a.start_ms - b.start_ms;
    const out = [];
    const seen = new Set();
    const visit = (span, depth) => {
      if (seen.has(span.span_id)) return; // a cycle in bad data must not hang the page
      seen.add(span.span_id);
      out.push({ span, depth });
      for (const child of (children.get(span.span_id) || []).sort(byStart)) visit(child, depth + 1);
    };
    for (const r of roots.sort(byStart)) visit(r, 0);
    return out;
  }

  // Lanes with their rows' y positions. Services that should have spans but
  // have none get an empty, amber lane so the gap shows where it is.
  function layoutLanes(j) {
    const lanes = [];
    let y = 0;
    for (const service of j.services) {
      const rows = treeOrder(service.spans);
      const lane = { name: service.name, placeholder: false, y, rows: [], reason: null };
      y += LANE_HEAD_H;
      for (const row of rows) {
        lane.rows.push({ ...row, y });
        y += ROW_H;
      }
      lane.height = y - lane.y;
      lanes.push(lane);
    }
    const present = new Set(lanes.map((l) => l.name));
    const absent = new Map();
    for (const m of j.missing) if (!present.has(m.service)) absent.set(m.service, m.reason);
    for (const hop of j.hops) {
      for (const s of hop.not_consumed_by) if (!present.has(s) && !absent.has(s)) absent.set(s, `not consumed yet: ${hop.message_type}`);
    }
    for (const [name, reason] of absent) {
      // Header plus one empty row, where the arrows of what it missed land.
      lanes.push({ name, placeholder: true, y, rows: [], reason, height: LANE_HEAD_H + ROW_H });
      y += LANE_HEAD_H + ROW_H;
    }
    // Known services in the system's order, as the server sends them.
    const rank = (n) => (SERVICE_ORDER.includes(n) ? SERVICE_ORDER.indexOf(n) : SERVICE_ORDER.length);
    lanes.sort((a, b) => rank(a.name) - rank(b.name) || (a.placeholder - b.placeholder));
    let top = 0;
    for (const lane of lanes) {
      const shift = top - lane.y;
      lane.y = top;
      for (const row of lane.rows) row.y += shift;
      top += lane.height;
    }
    return { lanes, height: top };
  }

  // The shared time axis: from the earliest wait drawn to the last end.
  function timeDomain(j) {
    let min = 0;
    let max = j.duration_ms || 0;
    for (const s of j.services) for (const span of s.spans) {
      min = Math.min(min, span.start_ms);
      max = Math.max(max, span.start_ms + span.duration_ms);
    }
    for (const hop of j.hops) {
      if (hop.producer && hop.outbox_wait_ms) min = Math.min(min, hop.producer.start_ms - hop.outbox_wait_ms);
      for (const c of hop.consumers) if (c.broker_wait_ms) min = Math.min(min, c.start_ms - c.broker_wait_ms);
    }
    return [min, max > min ? max : min + 1];
  }

  function niceStep(range, target) {
    const raw = range / target;
    const power = 10 ** Math.floor(Math.log10(raw));
    const unit = raw / power;
    return power * (unit < 1.5 ? 1 : unit < 3 ? 2 : unit < 7 ? 5 : 10);
  }

  function ticksFor([t0, t1], width) {
    const step = niceStep(t1 - t0, Math.max(4, Math.floor(width / 110)));
    const out = [];
    for (let t = Math.ceil(t0 / step) * step; t <= t1 + 1e-9; t += step) out.push(Number(t.toFixed(6)));
    return out;
  }

  function fmtTick(t) {
    const digits = Math.abs(t) < 10 && t % 1 !== 0 ? 1 : 0;
    return `${t.toFixed(digits)} ms`;
  }

  function renderWaterfall(j) {
    const wrap = $('#waterfall');
    drawnWidth = wrap.clientWidth;
    const width = Math.max(700, drawnWidth);
    if (j.services.length === 0 && j.missing.length === 0) {
      wrap.replaceChildren(h('div', { class: 'card-body muted' }, 'No spans yet for this order: the services export them every few seconds.'));
      return;
    }
    const { lanes, height } = layoutLanes(j);
    const domain = timeDomain(j);
    const x0 = LABEL_W + 12;
    const x1 = width - RIGHT_PAD;
    const sx = (t) => x0 + ((t - domain[0]) / (domain[1] - domain[0])) * (x1 - x0);
    const ticks = ticksFor(domain, x1 - x0);
    const rowOf = new Map();
    for (const lane of lanes) for (const row of lane.rows) rowOf.set(row.span.span_id, { lane, row });
    const total = height + 6;

    // The axis is its own SVG so it can stick to the top while the lanes scroll.
    const axisChart = svg('svg', { class: 'waterfall waterfall-axis', width, height: AXIS_H }, axis(ticks, sx, width));
    // Drawn in layers: lane backgrounds, then the hop arrows, then the bars,
    // so arrows never hide a bar.
    const chart = svg('svg', { class: 'waterfall waterfall-body', width, height: total },
      defs(),
      svg('g', { class: 'lane-backgrounds' }, lanes.map((lane, i) => laneBackground(lane, i, width))),
      grid(ticks, sx, total),
      hopLayer(j, lanes, rowOf, sx),
      ...lanes.filter((lane) => !lane.placeholder).map((lane) =>
        svg('g', { class: 'lane', dataset: { service: lane.name } }, lane.rows.map((row) => spanRow(row, j, sx, width)))));
    wrap.replaceChildren(axisChart, chart);
    truncateLabels(chart);
  }

  function defs() {
    // Transparent between the stripes: the hop arrow passing under a wait stays visible.
    const hatch = (id, colour) => svg('pattern', { id, width: 5, height: 5, patternUnits: 'userSpaceOnUse', patternTransform: 'rotate(45)' },
      svg('line', { x1: 0, y1: 0, x2: 0, y2: 5, stroke: colour, 'stroke-width': 2 }));
    const arrow = (id, colour) => svg('marker', { id, viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 8, markerHeight: 8, markerUnits: 'userSpaceOnUse', orient: 'auto' },
      svg('path', { d: 'M0,1 L10,5 L0,9 z', fill: colour }));
    return svg('defs', {},
      hatch('hatch-outbox', '#ae3ec9'), hatch('hatch-broker', '#868e96'),
      arrow('hop-rabbitmq', '#7048e8'), arrow('hop-kafka', '#1c7ed6'), arrow('hop-pending', '#f08c00'), arrow('hop-other', '#868e96'));
  }

  function axis(ticks, sx, width) {
    return svg('g', { class: 'axis' },
      svg('rect', { x: 0, y: 0, width, height: AXIS_H, class: 'axis-bg' }),
      svg('line', { class: 'axis-line', x1: 0, x2: width, y1: AXIS_H - 0.5, y2: AXIS_H - 0.5 }),
      svg('line', { class: 'axis-line', x1: LABEL_W + 0.5, x2: LABEL_W + 0.5, y1: 0, y2: AXIS_H }),
      ...ticks.map((t) => svg('g', { class: 'tick' },
        svg('line', { x1: sx(t), x2: sx(t), y1: AXIS_H - 6, y2: AXIS_H }),
        svg('text', { x: sx(t), y: AXIS_H - 10, 'text-anchor': 'middle' }, fmtTick(t)))),
      svg('text', { x: 14, y: AXIS_H - 10, class: 'axis-caption' }, 'service / span'));
  }

  function grid(ticks, sx, total) {
    return svg('g', { class: 'grid' },
      svg('line', { class: 'axis-line', x1: LABEL_W + 0.5, x2: LABEL_W + 0.5, y1: 0, y2: total }),
      ...ticks.map((t) => svg('line', { class: 'grid-line', x1: sx(t), x2: sx(t), y1: 0, y2: total })));
  }

  // A lane's band and heading; a service with no spans gets an amber one.
  function laneBackground(lane, index, width) {
    const y = lane.y;
    const spans = lane.rows.length;
    return svg('g', lane.placeholder
      ? { class: 'lane-band placeholder', dataset: { missingService: lane.name } }
      : { class: `lane-band${index % 2 ? ' alt' : ''}` },
    svg('rect', { class: 'lane-bg', x: 0, y, width, height: lane.height }),
    svg('rect', { class: 'lane-head', x: 0, y, width, height: LANE_HEAD_H }),
    svg('line', { class: 'lane-sep', x1: 0, x2: width, y1: y + 0.5, y2: y + 0.5 }),
    svg('text', { x: 12, y: y + 17 },
      svg('tspan', { class: 'lane-name' }, lane.name),
      svg('tspan', { class: 'lane-count', dx: 10 }, lane.placeholder ? lane.reason : `${spans} span${spans === 1 ? '' : 's'}`)));
  }

  function spanRow({ span, depth, y }, j, sx, width) {
    const rowY = y;
    const kind = ['server', 'client', 'internal', 'producer', 'consumer'].includes(span.kind) ? span.kind : 'internal';
    const x = sx(span.start_ms);
    const w = Math.max(2, sx(span.start_ms + span.duration_ms) - x);
    const barY = rowY + (ROW_H - BAR_H) / 2;
    const labelX = 14 + depth * INDENT;
    const group = svg('g', { class: `span-row${span.error ? ' error' : ''}`, dataset: { row: span.span_id } },
      svg('rect', { class: 'row-hover', x: 0, y: rowY, width, height: ROW_H }),
      svg('rect', { class: `kind-chip kind-${kind}${span.error ? ' error' : ''}`, x: labelX, y: rowY + 6, width: 9, height: 9, rx: 2 }),
      svg('text', { class: 'span-name', x: labelX + 14, y: rowY + 15, dataset: { maxWidth: LABEL_W - labelX - 22 } }, span.name,
        // "process orders" four times in a lane says little: name the message.
        messageOf(span) ? svg('tspan', { class: 'span-msg' }, `  ${messageOf(span)}`) : null));
    // Waits drawn just before the bar they delay (see hopWaits).
    for (const wait of hopWaits(span.span_id, j)) {
      const wx = sx(span.start_ms - wait.ms);
      group.append(svg('rect', { class: wait.cls, x: wx, y: barY - 1, width: Math.max(1, x - wx), height: BAR_H + 2, dataset: { tip: wait.tip } }));
    }
    group.append(svg('rect', {
      class: `bar kind-${kind}${span.error ? ' error' : ''}`, x, y: barY, width: w, height: BAR_H,
      dataset: { spanId: span.span_id },
    }));
    const durText = OM.fmtMs(span.duration_ms);
    const after = x + w + 6;
    const fitsAfter = after + 52 < width;
    group.append(svg('text', { class: 'span-dur', x: fitsAfter ? after : x - 6, y: rowY + 14.5, 'text-anchor': fitsAfter ? 'start' : 'end' }, durText));
    return group;
  }

  function messageOf(span) {
    const type = span.attributes && span.attributes.message_type;
    return typeof type === 'string' ? type.slice(type.lastIndexOf('.') + 1) : null;
  }

  // The outbox wait of a producer span and the broker waits of a consumer
  // span, from the hops that name it.
  function hopWaits(spanId, j) {
    const waits = [];
    for (const hop of j.hops) {
      if (hop.producer && hop.producer.span_id === spanId && hop.outbox_wait_ms > 0) {
        waits.push({ cls: 'hatch-outbox', ms: hop.outbox_wait_ms, tip: `${hop.message_type}: waited ${OM.fmtMs(hop.outbox_wait_ms)} in the outbox before the relay published it` });
      }
      for (const c of hop.consumers) {
        if (c.span_id === spanId && c.broker_wait_ms > 0) {
          waits.push({ cls: 'hatch-broker', ms: c.broker_wait_ms, tip: `${hop.message_type}: waited ${OM.fmtMs(c.broker_wait_ms)} in ${hop.system} (${hop.destination}) before ${c.service} took it` });
        }
      }
    }
    return waits;
  }

  // Arrows from each producer bar's end to each consumer bar's start; a
  // dashed amber one towards the lane of a consumer that has not consumed.
  function hopLayer(j, lanes, rowOf, sx) {
    const layer = svg('g', { class: 'hops' });
    const midY = (row) => row.y + ROW_H / 2;
    for (const hop of j.hops) {
      const from = hop.producer && rowOf.get(hop.producer.span_id);
      if (!from) continue;
      const system = hop.system === 'rabbitmq' || hop.system === 'kafka' ? hop.system : 'other';
      const ax = sx(hop.producer.end_ms);
      const ay = midY(from.row);
      for (const c of hop.consumers) {
        const to = rowOf.get(c.span_id);
        if (!to) continue;
        const bx = sx(c.start_ms);
        const by = midY(to.row);
        layer.append(svg('path', { class: `hop ${system}`, d: curve(ax, ay, bx, by), 'marker-end': `url(#hop-${system})`, dataset: { hop: hop.message_id } }));
      }
      for (const service of hop.not_consumed_by) {
        const lane = lanes.find((l) => l.name === service);
        if (!lane || lane.rows.length > 0) continue;
        const by = lane.y + LANE_HEAD_H + ROW_H / 2;
        layer.append(svg('path', { class: 'hop pending', d: curve(ax, ay, ax + 40, by), 'marker-end': 'url(#hop-pending)', dataset: { hop: hop.message_id } }));
      }
    }
    return layer;
  }

  // Leaves the producer heading right, arrives at the consumer heading right.
  function curve(ax, ay, bx, by) {
    const bend = Math.max(18, Math.abs(bx - ax) / 2);
    return `M${ax},${ay} C${ax + bend},${ay} ${bx - bend},${by} ${bx},${by}`;
  }

  // Span names longer than the label column lose their message type first,
  // then end in an ellipsis; the full name stays in a native tooltip.
  function truncateLabels(chart) {
    for (const text of chart.querySelectorAll('text.span-name')) {
      const max = Number(text.dataset.maxWidth);
      if (text.getComputedTextLength() <= max) continue;
      const full = text.textContent.replace(/\s+/g, ' ');
      const suffix = text.querySelector('tspan.span-msg');
      if (suffix) suffix.remove();
      const name = text.firstChild;
      const base = name.textContent;
      let n = base.length;
      while (n > 1 && text.getComputedTextLength() > max) name.textContent = `${base.slice(0, --n)}…`;
      text.append(svg('title', {}, full));
    }
  }

  // ----------------------------------------------------------- tooltip

  function spanById(j, id) {
    for (const s of j.services) for (const span of s.spans) if (span.span_id === id) return { service: s.name, span };
    return null;
  }

  function showTooltip(event) {
    if (!lastJourney) return;
    const target = event.target;
    const wait = target.closest && target.closest('[data-tip]');
    const row = target.closest && target.closest('[data-row]');
    if (wait) {
      tooltip.replaceChildren(h('div', {}, wait.dataset.tip));
    } else if (row) {
      const found = spanById(lastJourney, row.dataset.row);
      if (!found) return hideTooltip();
      tooltip.replaceChildren(...spanTooltip(found.service, found.span).filter(Boolean));
    } else {
      return hideTooltip();
    }
    tooltip.hidden = false;
    const pad = 14;
    const { innerWidth, innerHeight } = window;
    const rect = tooltip.getBoundingClientRect();
    const x = event.clientX + pad + rect.width > innerWidth ? event.clientX - pad - rect.width : event.clientX + pad;
    const y = event.clientY + pad + rect.height > innerHeight ? Math.max(4, event.clientY - pad - rect.height) : event.clientY + pad;
    tooltip.style.left = `${x}px`;
    tooltip.style.top = `${y}px`;
  }

  function spanTooltip(service, span) {
    const attrs = Object.entries(span.attributes || {}).sort(([a], [b]) => a.localeCompare(b));
    return [
      h('div', { class: 'tt-title' }, span.name),
      h('div', { class: 'tt-sub' }, `${service} · ${span.kind} · ${OM.fmtMs(span.duration_ms)} · starts at ${OM.fmtMs(span.start_ms)}`),
      span.error ? h('div', { class: 'tt-error' }, 'error') : null,
      attrs.length ? h('table', {}, h('tbody', {}, attrs.map(([k, v]) =>
        h('tr', {}, h('td', {}, k), h('td', {}, typeof v === 'string' ? v : JSON.stringify(v)))))) : null,
    ];
  }

  function hideTooltip() {
    tooltip.hidden = true;
  }

  // ---------------------------------------------------------- hop table

  function renderHops(j) {
    const body = $('#hops tbody');
    if (j.hops.length === 0) {
      body.replaceChildren(h('tr', { class: 'empty-row' }, h('td', { colspan: 5 }, 'No messages seen for this order yet.')));
      return;
    }
    const ordered = [...j.hops].sort((a, b) => hopStart(a) - hopStart(b));
    body.replaceChildren(...ordered.map(hopRow));
  }

  const hopStart = (hop) => (hop.producer ? hop.producer.start_ms : Math.min(...hop.consumers.map((c) => c.start_ms), Infinity));

  function hopRow(hop) {
    const producer = hop.producer ? hop.producer.service : '?';
    const targets = hop.expected_consumers.length ? hop.expected_consumers : hop.consumers.map((c) => c.service);
    const lines = hop.consumers.map((c) => h('div', { class: 'consumer-line', dataset: { consumer: c.service } },
      h('span', { class: 'svc' }, c.service),
      h('span', { class: 'wait', dataset: { field: 'broker-wait' } }, c.broker_wait_ms === null || c.broker_wait_ms === undefined ? 'unknown' : OM.fmtMs(c.broker_wait_ms)),
      // Only redeliveries are worth a word: attempt 1 is the normal case.
      c.attempt > 1 ? h('span', { class: 'attempt retry', title: 'redelivered: an earlier attempt failed or was interrupted' }, `attempt ${c.attempt}`) : null));
    for (const service of hop.not_consumed_by) {
      lines.push(h('div', { class: 'consumer-line pending-line', dataset: { consumer: service } },
        h('span', { dataset: { field: 'broker-wait' } }, 'not consumed yet'), ` by ${service}`));
    }
    if (lines.length === 0) {
      lines.push(h('div', { class: 'consumer-line pending-line' }, h('span', { dataset: { field: 'broker-wait' } }, 'not consumed yet')));
    }
    return h('tr', {
      class: hop.not_consumed_by.length ? 'has-pending' : null,
      dataset: { messageId: hop.message_id },
      onmouseenter: () => highlightHop(hop, true),
      onmouseleave: () => highlightHop(hop, false),
    },
    h('td', {}, h('code', {}, hop.message_type)),
    h('td', {}, hop.destination, h('span', { class: `sys-tag ${hop.system}` }, hop.system)),
    h('td', {}, producer, h('span', { class: 'arrow' }, '→'), targets.join(', '),
      hop.producer ? null : h('div', { class: 'faint small' }, 'producer span missing')),
    h('td', { class: 'num wait', dataset: { field: 'outbox-wait' } }, hop.outbox_wait_ms === null || hop.outbox_wait_ms === undefined ? 'unknown' : OM.fmtMs(hop.outbox_wait_ms)),
    h('td', {}, lines));
  }

  // Hovering a row marks its arrows and bars in the waterfall.
  function highlightHop(hop, on) {
    const chart = $('#waterfall svg');
    if (!chart) return;
    for (const path of chart.querySelectorAll('path.hop')) if (path.dataset.hop === hop.message_id) path.classList.toggle('highlight', on);
    const ids = [hop.producer && hop.producer.span_id, ...hop.consumers.map((c) => c.span_id)].filter(Boolean);
    for (const id of ids) {
      const bar = chart.querySelector(`rect.bar[data-span-id="${CSS.escape(id)}"]`);
      if (bar) bar.classList.toggle('highlight', on);
    }
  }

  // --------------------------------------------------------------- poll

  function render(j) {
    lastJourney = j;
    renderHeader(j);
    renderMissing(j.missing);
    renderSummary(j);
    renderHistory(j);
    renderWaterfall(j);
    renderHops(j);
  }

  async function poll() {
    const response = await OM.api('GET', `/api/orders/${encodeURIComponent(orderId)}`);
    const text = JSON.stringify(response);
    // Unchanged answers leave the page alone (no flicker under the mouse).
    if (text !== lastText) {
      lastText = text;
      render(response);
    }
    const done = response.complete && OM.FINAL_STATUSES.has(response.status);
    setText($('#poll-state'), done ? 'final: no longer polling' : `live · every ${POLL_MS / 1000} s`);
    return !done;
  }

  setText($('#order-id'), orderId);
  $('#nav-journey').href = location.pathname;
  if (!orderId) {
    OM.showError('Journey', 'no order id in the address (expected /orders/<id>)');
  } else {
    OM.poll('Journey', POLL_MS, poll);
  }

  const chartArea = $('#waterfall');
  chartArea.addEventListener('mousemove', showTooltip);
  chartArea.addEventListener('mouseleave', hideTooltip);

  // Re-draw when the card changes width (window resize, a scrollbar
  // appearing once the page grows), not on every poll.
  new ResizeObserver(() => {
    const width = chartArea.clientWidth;
    if (lastJourney && Math.abs(width - drawnWidth) > 1) renderWaterfall(lastJourney);
    drawnWidth = width;
  }).observe(chartArea);
})();

/* mesh console: the live page. No framework, no build step: this file is what runs.
 *
 * Live, it paints the frame inlined in the page at once, then follows /api/stream (one
 * frame a second). Paused or scrubbed back, it shows a recorded frame (/api/frame?at=).
 * Opened from an exported file, it reads every frame from the file itself (gzip + base64)
 * and never touches the network. Every view renders from one frame, so a live view, the
 * scrubber and an export show the same picture of the same second.
 */
(function () {
  "use strict";

  // -- small helpers ----------------------------------------------------------------------
  const $ = (sel, root) => (root || document).querySelector(sel);
  const SVG_NS = "http://www.w3.org/2000/svg";

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function s(tag, attrs) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) el.setAttribute(k, String(v));
    }
    return el;
  }

  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  function setClass(el, cls) {
    if (el.getAttribute("class") !== cls) el.setAttribute("class", cls);
  }

  const num = (v, digits) => (v === null || v === undefined ? "-" : Number(v).toFixed(digits));
  const rate = (v) => (v === null || v === undefined ? "-" : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
  const pct = (v) => (v === null || v === undefined ? "-" : (v >= 10 ? v.toFixed(0) : v.toFixed(1)) + "%");
  const ms = (v) => (v === null || v === undefined ? "-" : (v >= 100 ? v.toFixed(0) : v.toFixed(1)) + "ms");
  const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false });
  const ago = (t, now) => {
    const d = Math.max(0, Math.round(now - t));
    return d < 60 ? `${d}s` : d < 3600 ? `${Math.floor(d / 60)}m${String(d % 60).padStart(2, "0")}s` : `${Math.floor(d / 3600)}h`;
  };

  const SERVICE_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"];
  const VERSION_COLOURS = { v1: "#1f5fbf", v2: "#2ca02c", v3: "#c62828", v4: "#9467bd", v5: "#ff7f0e" };
  const colourOf = (() => {
    const known = {};
    return (name) => {
      if (!(name in known)) known[name] = SERVICE_COLOURS[Object.keys(known).length % SERVICE_COLOURS.length];
      return known[name];
    };
  })();

  // -- state --------------------------------------------------------------------------------
  const state = {
    recorded: null, // {frames, traces} when opened from an exported file
    latest: null, // the newest frame received
    shown: null, // the frame on screen
    viewingAt: null, // unix seconds when scrubbed back, null when live
    paused: false,
    windowName: "10s",
    ticks: [],
    session: { authenticated: false, csrf: null },
    selected: null, // {kind, key} of the element whose detail is open
    selectedTrace: null,
    traceFilter: {},
    built: { operate: false, drills: false },
  };

  // -- data sources -----------------------------------------------------------------------
  async function decodeRecorded(text) {
    const bytes = Uint8Array.from(atob(text.trim()), (c) => c.charCodeAt(0));
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return JSON.parse(await new Response(stream).text());
  }

  function frameIndexAt(frames, t) {
    let lo = 0;
    let hi = frames.length - 1;
    if (t === null || t === undefined) return hi;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (frames[mid].t <= t) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  async function frameAt(t) {
    if (state.recorded) return state.recorded.frames[frameIndexAt(state.recorded.frames, t)];
    const r = await fetch(`/api/frame?at=${encodeURIComponent(t)}`, { cache: "no-store" });
    if (!r.ok) throw new Error(`frame: ${r.status}`);
    return r.json();
  }

  function connect() {
    const live = $("#live");
    const source = new EventSource("/api/stream");
    source.onopen = () => { if (!state.paused && state.viewingAt === null) setLive("on", "live"); };
    source.onerror = () => setLive("off", "reconnecting");
    source.onmessage = (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      receive(frame);
    };
    return live;
  }

  function receive(frame) {
    const last = state.ticks.length ? state.ticks[state.ticks.length - 1].t : 0;
    if (frame.tick && frame.tick.t > last) {
      state.ticks.push(frame.tick);
      const oldest = frame.t - 15 * 60;
      while (state.ticks.length && state.ticks[0].t < oldest) state.ticks.shift();
    }
    state.latest = frame;
    updateScrubber();
    if (state.paused || state.viewingAt !== null) return;
    render(frame);
  }

  function setLive(cls, text) {
    const live = $("#live");
    live.className = `pill live ${cls}`;
    setText(live, text);
  }

  // -- the header -----------------------------------------------------------------------------
  function span() {
    if (state.recorded) {
      const f = state.recorded.frames;
      return f.length ? [f[0].t, f[f.length - 1].t] : null;
    }
    if (!state.ticks.length) return state.latest ? [state.latest.t, state.latest.t] : null;
    return [state.ticks[0].t, state.latest ? state.latest.t : state.ticks[state.ticks.length - 1].t];
  }

  function updateScrubber() {
    const range = span();
    const scrub = $("#scrub");
    if (!range) return;
    scrub.min = String(Math.floor(range[0]));
    scrub.max = String(Math.ceil(range[1]));
    if (state.viewingAt === null) scrub.value = scrub.max;
    const shown = state.viewingAt === null ? range[1] : state.viewingAt;
    const text = state.viewingAt === null && !state.recorded
      ? `${clock(shown)}`
      : `${clock(shown)} (-${ago(shown, range[1])})`;
    setText($("#when"), text);
  }

  let scrubTimer = null;
  function onScrub() {
    const t = Number($("#scrub").value);
    const range = span();
    if (!range) return;
    if (!state.recorded && t >= range[1] - 0.5) { goLive(); return; }
    state.viewingAt = t;
    $("#golive").hidden = !!state.recorded;
    if (!state.recorded) setLive("paused", "recorded view");
    clearTimeout(scrubTimer);
    scrubTimer = setTimeout(async () => {
      try { render(await frameAt(t)); } catch (e) { /* a gap: keep what is shown */ }
      updateScrubber();
    }, 60);
  }

  function goLive() {
    state.viewingAt = null;
    $("#golive").hidden = true;
    if (state.recorded) return;
    if (!state.paused) {
      setLive("on", "live");
      if (state.latest) render(state.latest);
    }
    updateScrubber();
  }

  function togglePause() {
    state.paused = !state.paused;
    const button = $("#pause");
    button.setAttribute("aria-pressed", String(state.paused));
    setText(button, state.paused ? "Resume" : "Pause");
    if (state.paused) setLive("paused", "paused");
    else if (state.viewingAt === null) {
      setLive("on", "live");
      if (state.latest) render(state.latest);
    }
  }

  // -- rendering one frame ----------------------------------------------------------------------
  function render(frame) {
    if (!frame) return;
    state.shown = frame;
    setText($("#runtime"), `runtime ${frame.runtime}`);
    try { renderTopology(frame); } catch (e) { console.error("topology", e); }
    try { renderDetail(frame); } catch (e) { console.error("detail", e); }
    try { renderRollout(frame); } catch (e) { console.error("rollout", e); }
    try { renderAutoscaler(frame); } catch (e) { console.error("autoscaler", e); }
    try { renderCharts(frame); } catch (e) { console.error("charts", e); }
    try { renderTraces(frame); } catch (e) { console.error("traces", e); }
    try { renderOperate(frame); } catch (e) { console.error("operate", e); }
    try { renderDrills(frame); } catch (e) { console.error("drills", e); }
    if (window.__meshFirstPaint === undefined) window.__meshFirstPaint = performance.now();
    document.body.dataset.seq = String(frame.seq);
    document.body.dataset.t = String(frame.t);
  }

  // -- topology -------------------------------------------------------------------------------------
  const L = {
    users: { x: 8, y: 262, w: 92, h: 64 },
    gateway: { x: 128, y: 236, w: 132, h: 116 },
    consul: { x: 128, y: 40, w: 132, h: 54 },
    redis: { x: 128, y: 500, w: 132, h: 54 },
    service: { x: 430, w: 270 },
    topic: { x: 760, w: 182 },
    group: { x: 998, w: 214 },
    top: 26,
    bottom: 590,
  };
  const SLOTS = 3; // version boxes per service: room for stable, canary and one more
  const nodes = new Map(); // key -> {g, parts}
  let structureKey = "";

  function layout(frame) {
    const services = frame.services.map((x) => x.name);
    const topics = frame.topics.map((x) => x.name);
    const groups = [];
    for (const t of frame.topics) for (const g of t.groups) if (!groups.includes(g.group)) groups.push(g.group);
    const span = L.bottom - L.top;
    const sGap = 16;
    const sH = Math.min(124, (span - sGap * (services.length - 1)) / Math.max(services.length, 1));
    const tGap = 10;
    const tH = Math.min(52, (span - tGap * (topics.length - 1)) / Math.max(topics.length, 1));
    const rowsOf = (g) => frame.topics.filter((t) => t.groups.some((x) => x.group === g)).length;
    const gRows = groups.map(rowsOf);
    const gHeights = gRows.map((r) => 26 + 15 * r);
    const gTotal = gHeights.reduce((a, b) => a + b, 0);
    const gGap = groups.length > 1 ? Math.min(40, (span - gTotal) / (groups.length - 1)) : 0;
    const pos = { services: {}, topics: {}, groups: {} };
    services.forEach((name, i) => { pos.services[name] = { x: L.service.x, y: L.top + i * (sH + sGap), w: L.service.w, h: sH }; });
    topics.forEach((name, i) => { pos.topics[name] = { x: L.topic.x, y: L.top + i * (tH + tGap), w: L.topic.w, h: tH }; });
    let y = L.top;
    groups.forEach((name, i) => { pos.groups[name] = { x: L.group.x, y, w: L.group.w, h: gHeights[i] }; y += gHeights[i] + gGap; });
    return { services, topics, groups, pos };
  }

  function curve(x1, y1, x2, y2) {
    const dx = Math.max(30, (x2 - x1) / 2);
    return `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
  }

  function node(key, cls, box, label, onOpen) {
    let entry = nodes.get(key);
    if (!entry) {
      const g = s("g", { class: cls, tabindex: 0, role: "button", "data-key": key });
      const rect = s("rect", { class: "box", x: box.x, y: box.y, width: box.w, height: box.h, rx: 8 });
      const title = s("title");
      g.append(title, rect);
      g.addEventListener("click", onOpen);
      g.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); onOpen(); } });
      entry = { g, rect, title, texts: {} };
      nodes.set(key, entry);
    }
    setClass(entry.g, cls);
    entry.g.setAttribute("aria-label", label);
    setText(entry.title, label);
    return entry;
  }

  function text(entry, id, x, y, cls, value, anchor) {
    let el = entry.texts[id];
    if (!el) {
      el = s("text", { x, y, class: cls || "", "text-anchor": anchor || "start" });
      entry.texts[id] = el;
      entry.g.append(el);
    }
    setText(el, value);
    if (cls !== undefined) setClass(el, cls || "");
    return el;
  }

  function edgeStats(stats, win) {
    const st = (stats && stats[win]) || {};
    return st;
  }

  function renderTopology(frame) {
    const svg = $("#topology");
    const win = state.windowName;
    const lay = layout(frame);
    const key = JSON.stringify([lay.services, lay.topics, lay.groups, frame.services.map((x) => x.versions.map((v) => v.version))]);
    if (key !== structureKey) {
      // What exists changed (a version came or went): rebuild; positions stay the same.
      structureKey = key;
      nodes.clear();
      svg.replaceChildren();
      svg.append(s("g", { id: "edges" }), s("g", { id: "labels" }), s("g", { id: "nodes" }));
      const heads = [["clients", L.users.x], ["gateway", L.gateway.x], ["services", L.service.x], ["kafka topics", L.topic.x], ["consumer groups", L.group.x]];
      for (const [label, x] of heads) {
        const t = s("text", { x, y: 14, class: "colhead", "text-anchor": "start" });
        t.textContent = label;
        svg.append(t);
      }
    }
    const edgeLayer = $("#edges", svg);
    const labelLayer = $("#labels", svg);
    const nodeLayer = $("#nodes", svg);
    const edges = [];
    const labels = [];

    // clients and the gateway
    const gw = frame.gateway;
    const users = node("users", "node users", L.users, "clients (Locust, curl): requests through the gateway", () => select("edge", "users>gateway"));
    const usersStats = edgeStats((frame.edges.find((e) => e.id === "users>gateway") || {}).stats, win);
    text(users, "t", L.users.x + 10, L.users.y + 22, "title", "clients");
    text(users, "r", L.users.x + 10, L.users.y + 42, "small", `${rate(usersStats.rps)} req/s`);
    place(nodeLayer, users.g);
    if (gw) {
      const g = node("gateway", `node gateway h-${gw.health}`, L.gateway, `gateway: ${gw.passing}/${gw.instances.length} passing`, () => select("gateway", "gateway"));
      text(g, "t", L.gateway.x + 10, L.gateway.y + 22, "title", "gateway");
      text(g, "i", L.gateway.x + 10, L.gateway.y + 42, "small", `${gw.passing}/${gw.instances.length} passing`);
      const gs = edgeStats(gw.stats, win);
      text(g, "r", L.gateway.x + 10, L.gateway.y + 62, "small", `${rate(gs.rps)} req/s routed`);
      text(g, "e", L.gateway.x + 10, L.gateway.y + 80, gs.err_pct > 0 ? "small bad" : "small", `5xx ${pct(gs.err_pct)}`);
      text(g, "p", L.gateway.x + 10, L.gateway.y + 98, "small", `p99 ${ms(gs.p99_ms)}`);
      place(nodeLayer, g.g);
    }
    edges.push({ id: "users>gateway", d: curve(L.users.x + L.users.w, L.users.y + L.users.h / 2, L.gateway.x, L.gateway.y + L.gateway.h / 2), cls: `edge http h-${(frame.edges.find((e) => e.id === "users>gateway") || { health: {} }).health[win] || "idle"}`, width: widthOf(usersStats.rps), title: `clients -> gateway: ${rate(usersStats.rps)} req/s` });

    // infra nodes
    for (const part of ["consul", "redis"]) {
      const info = (frame.infra || {})[part] || {};
      const box = L[part];
      const health = info.healthy ? "ok" : "down";
      const n = node(`infra:${part}`, `node infra h-${health}`, box, `${part}: ${info.healthy ? "answering" : "not answering"}${info.error ? " (" + info.error + ")" : ""}`, () => select("infra", part));
      text(n, "t", box.x + 10, box.y + 21, "title", part);
      text(n, "s", box.x + 10, box.y + 40, info.healthy ? "small" : "small bad", info.healthy ? `answering, ${num(info.took_ms, 1)}ms` : "not answering");
      place(nodeLayer, n.g);
    }
    const kafka = (frame.infra || {}).kafka || {};
    const kHead = node("infra:kafka", `node infra h-${kafka.healthy ? "ok" : "down"}`, { x: L.topic.x, y: 0, w: 0, h: 0 }, `kafka: ${kafka.healthy ? "answering" : "not answering"}`, () => select("infra", "kafka"));
    text(kHead, "s", L.topic.x + L.topic.w, 14, kafka.healthy ? "small" : "small bad", kafka.healthy ? "broker answering" : "broker not answering", "end");
    place(nodeLayer, kHead.g);

    // services with their version boxes
    for (const svc of frame.services) {
      const p = lay.pos.services[svc.name];
      const st = edgeStats(svc.stats, win);
      const n = node(`svc:${svc.name}`, `node service h-${svc.health}`, p, `${svc.name}: ${svc.healthy}/${svc.replicas} healthy, health ${svc.health}`, () => select("service", svc.name));
      text(n, "t", p.x + 10, p.y + 19, "title", svc.name);
      text(n, "c", p.x + p.w - 10, p.y + 19, "small", `${svc.healthy}/${svc.replicas} healthy${svc.rollout ? " · rollout " + svc.rollout : ""}`, "end");
      place(nodeLayer, n.g);
      const slotW = (p.w - 20 - (SLOTS - 1) * 8) / SLOTS;
      const slotH = p.h - 34;
      for (let i = 0; i < SLOTS; i++) {
        const v = svc.versions[i];
        const box = { x: p.x + 10 + i * (slotW + 8), y: p.y + 27, w: slotW, h: slotH };
        if (!v) {
          const empty = node(`slot:${svc.name}:${i}`, "node version empty", box, `${svc.name}: free version slot`, () => {});
          empty.g.setAttribute("tabindex", "-1");
          empty.g.removeAttribute("role");
          place(nodeLayer, empty.g);
          continue;
        }
        const vs = edgeStats(v.stats, win);
        const share = v.share ? v.share[win] : null;
        const label = `${svc.name} ${v.version}: ${v.passing}/${v.instances.length} passing, weight ${v.weight === null ? "none" : v.weight + "%"}, served ${pct(share)}, 5xx ${pct(vs.err_pct)}, health ${v.health}`;
        const b = node(`ver:${svc.name}@${v.version}`, `node version h-${v.health}`, box, label, () => select("version", `${svc.name}@${v.version}`));
        text(b, "v", box.x + 6, box.y + 15, "title", v.version + (v.stable ? "" : " *"));
        text(b, "i", box.x + box.w - 6, box.y + 15, "small", `${v.passing}/${v.instances.length}`, "end");
        if (slotH > 44) {
          text(b, "w", box.x + 6, box.y + 31, "small", `w ${v.weight === null ? "-" : v.weight + "%"} · ${pct(share)}`);
          text(b, "e", box.x + 6, box.y + 46, vs.err_pct > 0 ? "small bad" : "small", `${rate(vs.rps)}/s ${pct(vs.err_pct)}`);
        }
        if (slotH > 60) text(b, "p", box.x + 6, box.y + 61, "small", `p99 ${ms(vs.p99_ms)}`);
        // one dot per instance: its Consul check
        const dots = b.dots || (b.dots = s("g"));
        dots.replaceChildren(...v.instances.slice(0, 8).map((inst, k) => {
          const c = s("circle", { cx: box.x + box.w - 8 - k * 9, cy: box.y + box.h - 8, r: 3.2, class: `check-${inst.check}` });
          const t = s("title"); t.textContent = `${inst.id}: ${inst.state}, check ${inst.check}${inst.restarts ? ", " + inst.restarts + " restarts" : ""}`;
          c.append(t);
          return c;
        }));
        if (!dots.parentNode) b.g.append(dots);
        place(nodeLayer, b.g);
      }
      // gateway -> service edge and its label
      const e = frame.edges.find((x) => x.id === `gateway>${svc.name}`) || { health: {}, stats: {} };
      const es = edgeStats(e.stats, win);
      const health = e.health[win] || "idle";
      const y2 = p.y + p.h / 2;
      edges.push({ id: e.id, d: curve(L.gateway.x + L.gateway.w, L.gateway.y + L.gateway.h / 2, p.x, y2), cls: `edge http h-${health}`, width: widthOf(es.rps), title: `gateway -> ${svc.name}: ${rate(es.rps)} req/s, 5xx ${pct(es.err_pct)}` });
      labels.push({ id: e.id, x: 282, y: y2 - 17, health, lines: [`${rate(es.rps)} req/s · ${pct(es.err_pct)} 5xx`, `p50 ${ms(es.p50_ms)} · p99 ${ms(es.p99_ms)}`] });
    }

    // topics, producers and consumer groups
    for (const t of frame.topics) {
      const p = lay.pos.topics[t.name];
      const dead = t.groups.reduce((a, g) => a + (g.dead_lettered || 0), 0);
      const n = node(`topic:${t.name}`, "node topic", p, `topic ${t.name}: ${rate(t.produced[win])} produced/s, ${t.messages === null ? "?" : t.messages} messages`, () => select("topic", t.name));
      text(n, "t", p.x + 10, p.y + 17, "title", t.name);
      text(n, "r", p.x + 10, p.y + 33, "small", `${rate(t.produced[win])}/s in · ${t.messages === null ? "-" : t.messages} msgs`);
      text(n, "d", p.x + p.w - 8, p.y + 33, dead ? "small bad" : "small", dead ? `dlq ${dead}` : "", "end");
      place(nodeLayer, n.g);
      for (const prod of t.producers) {
        const sp = lay.pos.services[prod.service];
        if (!sp) continue;
        const r = prod.produced[win];
        edges.push({ id: `${prod.service}>${t.name}`, d: curve(sp.x + sp.w, sp.y + sp.h / 2, p.x, p.y + p.h / 2), cls: `edge event${r > 0 ? " flowing" : ""}`, width: widthOf(r), title: `${prod.service} -> ${t.name}: ${rate(r)} produced/s` });
      }
      for (const g of t.groups) {
        const gp = lay.pos.groups[g.group];
        if (!gp) continue;
        const r = g.consumed[win];
        const lagCls = g.lag === null ? "" : g.lag > 1000 ? " stuck" : g.lag > 100 ? " lagging" : "";
        edges.push({ id: `${t.name}>${g.group}`, d: curve(p.x + p.w, p.y + p.h / 2, gp.x, gp.y + gp.h / 2), cls: `edge event${r > 0 ? " flowing" : ""}${lagCls}`, width: widthOf(r), title: `${t.name} -> group ${g.group}: ${rate(r)} consumed/s, lag ${g.lag === null ? "?" : g.lag}` });
      }
    }
    for (const name of lay.groups) {
      const p = lay.pos.groups[name];
      const rows = frame.topics.filter((t) => t.groups.some((g) => g.group === name)).map((t) => [t, t.groups.find((g) => g.group === name)]);
      const lagTotal = rows.reduce((a, [, g]) => a + (g.lag || 0), 0);
      const n = node(`group:${name}`, `node group${lagTotal > 1000 ? " h-failing" : lagTotal > 100 ? " h-degraded" : ""}`, p, `consumer group ${name}: lag ${lagTotal}`, () => select("group", name));
      text(n, "t", p.x + 10, p.y + 17, "title", `group ${name}`);
      text(n, "l", p.x + p.w - 8, p.y + 17, lagTotal > 100 ? "small bad" : "small", `lag ${lagTotal}`, "end");
      rows.forEach(([t, g], i) => {
        text(n, `r${i}`, p.x + 10, p.y + 33 + i * 15, "small", `${t.name}`);
        text(n, `v${i}`, p.x + p.w - 8, p.y + 33 + i * 15, g.lag > 100 ? "small bad" : "small", `${rate(g.consumed[win])}/s lag ${g.lag === null ? "?" : g.lag}`, "end");
      });
      place(nodeLayer, n.g);
    }

    // edges and labels: keyed, so nothing moves between frames
    for (const e of edges) {
      let path = nodes.get(`edge:${e.id}`);
      if (!path) {
        const el = s("path", { "data-edge": e.id });
        const t = s("title");
        el.append(t);
        path = { el, t };
        nodes.set(`edge:${e.id}`, path);
        edgeLayer.append(el);
      }
      path.el.setAttribute("d", e.d);
      setClass(path.el, e.cls);
      path.el.setAttribute("stroke-width", String(e.width));
      setText(path.t, e.title);
    }
    for (const lb of labels) {
      let entry = nodes.get(`label:${lb.id}`);
      if (!entry) {
        const g = s("g", { class: "edge-label", tabindex: 0, role: "button", "data-edge": lb.id });
        const rect = s("rect", { x: lb.x, y: lb.y, width: 140, height: 34, rx: 5 });
        const t1 = s("text", { x: lb.x + 6, y: lb.y + 14, class: "small" });
        const t2 = s("text", { x: lb.x + 6, y: lb.y + 28, class: "small" });
        g.append(rect, t1, t2);
        const open = () => select("edge", lb.id);
        g.addEventListener("click", open);
        g.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); } });
        entry = { g, t1, t2 };
        nodes.set(`label:${lb.id}`, entry);
        labelLayer.append(g);
      }
      setClass(entry.g, `edge-label h-${lb.health}`);
      entry.g.setAttribute("aria-label", `${lb.id.replace(">", " to ")}: ${lb.lines.join(", ")}`);
      setText(entry.t1, lb.lines[0]);
      setText(entry.t2, lb.lines[1]);
    }
  }

  // Appended once: moving an element (even to where it is) would take the keyboard focus off it.
  function place(layer, el) {
    if (el.parentNode !== layer) layer.append(el);
  }

  function widthOf(r) {
    if (!r) return 1.5;
    return Math.min(7, 1.5 + Math.log10(1 + r) * 2.2);
  }

  // -- detail of a clicked element ------------------------------------------------------------
  function select(kind, key) {
    state.selected = { kind, key };
    renderDetail(state.shown);
    const detail = $("#detail");
    detail.hidden = false;
    // One click on something red also opens a representative failing trace below.
    const failing = $("[data-failing-trace]", detail);
    if (failing && isRed(state.shown, kind, key)) openTrace(failing.dataset.failingTrace, false);
    const close = $("button[data-close]", detail);
    if (close) close.focus({ preventScroll: true });
  }

  function isRed(frame, kind, key) {
    const bad = (h) => h === "failing" || h === "degraded" || h === "down";
    if (kind === "version") {
      const [name, version] = key.split("@");
      const svc = frame.services.find((x) => x.name === name);
      const v = svc && svc.versions.find((x) => x.version === version);
      return !!v && bad(v.health);
    }
    if (kind === "edge" || kind === "service") {
      const id = kind === "service" ? `gateway>${key}` : key;
      const e = frame.edges.find((x) => x.id === id);
      return !!e && bad(e.health[state.windowName]);
    }
    return false;
  }

  function statsTable(stats) {
    const wins = (state.shown && state.shown.windows) || ["10s", "1m", "5m"];
    return h("table", { class: "list" },
      h("thead", {}, h("tr", {}, h("th", { text: "window" }), h("th", { text: "req/s" }), h("th", { text: "5xx" }), h("th", { text: "p50" }), h("th", { text: "p99" }), h("th", { text: "requests" }))),
      h("tbody", {}, wins.map((w) => {
        const st = (stats || {})[w] || {};
        return h("tr", {}, h("td", { text: w }), h("td", { text: rate(st.rps) }), h("td", { text: pct(st.err_pct) }), h("td", { text: ms(st.p50_ms) }), h("td", { text: ms(st.p99_ms) }), h("td", { text: st.requests === undefined ? "-" : st.requests }));
      })));
  }

  function failingButton(frame, keys) {
    const failing = (frame.traces || {}).failing || {};
    const id = keys.map((k) => failing[k]).find(Boolean);
    if (!id) return h("p", { class: "muted", text: "No failing trace among the latest held." });
    return h("button", { type: "button", class: "danger", "data-failing-trace": id, onclick: () => openTrace(id, true) }, "Open a failing trace");
  }

  function instancesTable(instances) {
    return h("table", { class: "list" },
      h("thead", {}, h("tr", {}, ["instance", "state", "check", "restarts", "RSS MB", "CPU %"].map((c) => h("th", { text: c })))),
      h("tbody", {}, instances.map((i) => h("tr", { title: i.check_output || "" },
        h("td", { text: i.id }), h("td", { text: i.state }), h("td", { text: i.check }), h("td", { text: i.restarts }), h("td", { text: num(i.rss_mb, 0) }), h("td", { text: num(i.cpu_pct, 1) })))));
  }

  function renderDetail(frame) {
    const detail = $("#detail");
    if (!state.selected || !frame) { detail.hidden = true; return; }
    const { kind, key } = state.selected;
    const parts = [];
    const close = h("button", { type: "button", "data-close": "", onclick: () => { state.selected = null; detail.hidden = true; } }, "Close");
    if (kind === "version") {
      const [svcName, version] = key.split("@");
      const svc = frame.services.find((x) => x.name === svcName);
      const v = svc && svc.versions.find((x) => x.version === version);
      if (!v) { parts.push(h("p", { class: "muted", text: `${key} is not running in this frame.` })); }
      else {
        parts.push(h("h3", {}, `${svcName} ${version}`, " ", h("span", { class: `badge ${v.health}`, text: v.health })));
        parts.push(h("p", {}, `weight set ${v.weight === null ? "none (spread by instance)" : v.weight + "%"}; share served ${pct(v.share["10s"])} (10 s), ${pct(v.share["1m"])} (1 min); desired ${v.desired}; `,
          v.faults ? `faults of this version: ${v.faults.latency_ms || 0}ms, ${((v.faults.error_rate || 0) * 100).toFixed(0)}% errors` : "no faults of its own"));
        parts.push(statsTable(v.stats), instancesTable(v.instances), failingButton(frame, [key, `upstream:${version}`]));
      }
    } else if (kind === "edge" || kind === "service") {
      const id = kind === "service" ? `gateway>${key}` : key;
      const e = frame.edges.find((x) => x.id === id);
      const svcName = id.split(">")[1];
      parts.push(h("h3", {}, id.replace(">", " -> ")));
      parts.push(e ? statsTable(e.stats) : h("p", { class: "muted", text: "no traffic recorded" }));
      const svc = frame.services.find((x) => x.name === svcName);
      if (svc) parts.push(h("p", {}, `weights ${svc.weights ? JSON.stringify(svc.weights) : "none"}; faults ${svc.faults ? JSON.stringify(svc.faults) : "none"}`));
      parts.push(failingButton(frame, [svcName === "gateway" ? "gateway" : svcName, "gateway"]));
    } else if (kind === "gateway") {
      const gw = frame.gateway;
      parts.push(h("h3", { text: "gateway" }), gw ? statsTable(gw.stats) : "", gw ? instancesTable(gw.instances) : "", failingButton(frame, ["gateway"]));
    } else if (kind === "topic") {
      const t = frame.topics.find((x) => x.name === key);
      if (t) {
        parts.push(h("h3", { text: `topic ${t.name}` }), h("p", { text: `${t.description}; ${t.partitions} partitions; dead letters go to ${t.dlq || "-"}` }));
        parts.push(h("table", { class: "list" }, h("thead", {}, h("tr", {}, ["group", "consumed/s 10s", "1m", "5m", "lag", "lag from", "dead-lettered 5m"].map((c) => h("th", { text: c })))),
          h("tbody", {}, t.groups.map((g) => h("tr", {}, h("td", { text: g.group }), h("td", { text: rate(g.consumed["10s"]) }), h("td", { text: rate(g.consumed["1m"]) }), h("td", { text: rate(g.consumed["5m"]) }), h("td", { text: g.lag === null ? "?" : g.lag }), h("td", { text: g.lag_source }), h("td", { text: g.dead_lettered }))))));
      }
    } else if (kind === "group") {
      const rows = frame.topics.filter((t) => t.groups.some((g) => g.group === key));
      parts.push(h("h3", { text: `consumer group ${key}` }), h("p", { class: "muted", text: "lag = end offset - committed offset, per topic over its partitions (Kafka's own view)" }));
      parts.push(h("ul", {}, rows.map((t) => { const g = t.groups.find((x) => x.group === key); return h("li", { text: `${t.name}: ${rate(g.consumed["10s"])}/s, lag ${g.lag === null ? "?" : g.lag} (${g.lag_source})` }); })));
    } else if (kind === "infra") {
      const info = (frame.infra || {})[key] || {};
      parts.push(h("h3", { text: key }), h("p", { text: `${info.healthy ? "answering" : "not answering"}; address ${info.address || "?"}; ${info.source || ""}` }), info.error ? h("p", { class: "error", text: info.error }) : "");
    }
    detail.replaceChildren(h("div", { class: "row" }, close), ...parts);
    detail.hidden = false;
  }

  // -- rollouts --------------------------------------------------------------------------------
  function focusRollout(frame) {
    const all = Object.values(frame.rollouts || {});
    if (!all.length) return null;
    const active = all.filter((r) => !["completed", "aborted", "failed"].includes(r.phase));
    const pick = (active.length ? active : all).sort((a, b) => b.started_at - a.started_at);
    return pick[0];
  }

  function renderRollout(frame) {
    const box = $("#rollout");
    const r = focusRollout(frame);
    if (!r) { box.replaceChildren(h("p", { class: "muted", text: "No rollout since the platform started. Start one under Operate." })); return; }
    const finished = ["completed", "aborted", "failed"].includes(r.phase);
    const head = h("p", {}, h("strong", { text: `${r.service}: ${r.strategy} ${r.stable} -> ${r.version}` }), " ", h("span", { class: `badge ${r.phase}`, "data-phase": r.phase, text: r.phase }));
    const parts = [head, h("p", { class: "message", "data-rollout-message": "", text: r.message })];
    if (r.strategy === "canary" && r.steps.length) {
      const failedAt = r.phase === "aborted" || r.phase === "failed" ? r.step : -1;
      parts.push(h("ol", { class: "steps", "aria-label": "canary steps" }, r.steps.map((w, i) => {
        const cls = i === failedAt ? "failed" : i < r.step || (r.phase === "completed") ? "done" : i === r.step && !finished ? "current" : "";
        return h("li", { class: cls, "aria-current": cls === "current" ? "step" : null, text: `${w}%` });
      })));
    }
    const measured = r.measured || {};
    const versions = Object.keys(measured);
    if (versions.length) {
      parts.push(h("table", { class: "list", "aria-label": "weights set and traffic served" },
        h("thead", {}, h("tr", {}, ["version", "weight set", "served (10s)", "req/s", "5xx", "p99"].map((c) => h("th", { text: c })))),
        h("tbody", {}, versions.map((v) => {
          const m = measured[v];
          const w = r.weights ? r.weights[v] : null;
          return h("tr", { "data-version": v }, h("td", { text: v }), h("td", { text: w === null || w === undefined ? "-" : `${w}%` }), h("td", { text: pct(m.share["10s"]) }), h("td", { text: rate(m.stats.rps) }), h("td", { text: pct(m.stats.err_pct) }), h("td", { text: ms(m.stats.p99_ms) }));
        }))));
    }
    if (r.analyses && r.analyses.length) {
      const th = r.thresholds || {};
      parts.push(h("table", { class: "list", "aria-label": "analyses" },
        h("thead", {}, h("tr", {}, ["step", "weight", "requests", `error rate (max ${th.max_error_rate === undefined ? "?" : pct(th.max_error_rate * 100)})`, `p99 (max ${th.max_p99 === undefined ? "?" : ms(th.max_p99 * 1000)})`, "verdict"].map((c) => h("th", { text: c })))),
        h("tbody", {}, r.analyses.slice(-6).map((a) => h("tr", { title: a.reason },
          h("td", { text: a.step + 1 }), h("td", { text: `${a.weight}%` }), h("td", { text: a.requests }), h("td", { text: a.error_rate === null ? "-" : pct(a.error_rate * 100) }), h("td", { text: ms(a.p99_ms) }),
          h("td", {}, h("span", { class: `badge ${a.verdict}`, text: a.verdict })))))));
    }
    const live = !state.recorded && state.viewingAt === null;
    const canAct = state.session.authenticated && !finished && live;
    parts.push(h("div", { class: "rollout-actions" },
      h("button", { type: "button", class: "primary", "data-action": "promote", disabled: !canAct || r.strategy === "rolling", onclick: () => act("promote", { service: r.service }) }, "Promote"),
      h("button", { type: "button", class: "danger", "data-action": "abort", disabled: !canAct, onclick: () => act("abort", { service: r.service }) }, "Abort")));
    parts.push(h("ol", { class: "events", reversed: true, "aria-label": "rollout events" }, r.events.slice(-10).reverse().map((e) => h("li", {}, h("span", { class: "muted", text: clock(e.at) + " " }), e.message))));
    box.replaceChildren(...parts);
  }

  // -- autoscaler ----------------------------------------------------------------------------
  function renderAutoscaler(frame) {
    const box = $("#autoscaler");
    const a = frame.autoscaler;
    if (!a) { box.replaceChildren(h("p", { class: "muted", text: "This runtime reports no autoscaler." })); return; }
    const parts = [h("p", {}, h("span", { class: `badge ${a.enabled ? "ok" : ""}`, "data-autoscaler": a.enabled ? "on" : "off", text: a.enabled ? "on" : "off" }), a.enabled ? " HPA algorithm, every sync period" : " (turn it on under Operate)")];
    for (const [name, info] of Object.entries(a.services || {})) {
      const t = info.target;
      const metrics = Object.entries(t.targets).map(([m, target]) => {
        const reading = (info.metrics || []).find((x) => x.name === m);
        const value = reading ? reading.value : null;
        const share = value === null ? 0 : Math.min(1, value / (target * 2));
        return h("div", { class: "row" }, h("span", { text: `${m}` }), h("span", { class: "bar-meter", title: `${value === null ? "-" : value} of target ${target}` }, h("span", { class: value !== null && value > target ? "over" : "", style: `width:${(share * 100).toFixed(0)}%` })), h("span", { class: "muted", text: `${value === null ? "-" : num(value, 1)} / ${target}` }));
      });
      const window = t.window_left ? `scale-down held ${num(t.window_left, 0)}s more` : `window ${num(t.scale_down_window, 0)}s`;
      parts.push(h("div", { class: "scaler", "data-service": name },
        h("h3", {}, h("span", { text: name }), h("span", { class: "muted", text: `${info.replicas ?? "-"} replicas${info.desired !== null && info.desired !== undefined ? `, wants ${info.desired}` : ""} (min ${t.min_replicas}, max ${t.max_replicas})` })),
        ...metrics,
        h("div", { class: "muted", text: `${window}${t.next_decision_in !== null && t.next_decision_in !== undefined ? `; next decision in ${num(t.next_decision_in, 0)}s` : ""}` }),
        h("ul", {}, (info.decisions || []).slice().reverse().map((d) => h("li", { text: `${clock(d.at)} ${d.current}->${d.desired}: ${d.reason}${Object.entries(d.metrics).map(([m, [v, tg]]) => ` · ${m} ${v === null ? "-" : num(v, 1)}/${tg}`).join("")}` })))));
    }
    box.replaceChildren(...parts);
  }

  // -- charts (uPlot) ------------------------------------------------------------------------
  const charts = {};

  function chartData(frame, pickSeries) {
    const upto = frame.t;
    const ticks = (state.recorded ? state.recorded.frames.map((f) => f.tick) : state.ticks).filter((t) => t.t <= upto + 0.001);
    const from = upto - 300;
    const shown = ticks.filter((t) => t.t >= from);
    const names = pickSeries(shown);
    return { names, data: [shown.map((t) => t.t), ...names.map((n) => shown.map((t) => n.value(t)))] };
  }

  const hhmm = (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false, hour: "2-digit", minute: "2-digit", second: "2-digit" });

  function drawChart(id, names, data, unit, upto) {
    const el = $(`#${id}`);
    const key = names.map((n) => n.label).join("|");
    const width = Math.max(200, el.clientWidth || 300);
    let c = charts[id];
    if (!c || c.key !== key) {
      if (c) c.plot.destroy();
      const opts = {
        width,
        height: 130,
        legend: { show: true, live: false },
        cursor: { drag: { x: false, y: false } },
        scales: {
          // The last five minutes up to the moment shown, whatever the points.
          x: { time: true, range: () => [charts[id].upto - 300, charts[id].upto] },
          y: { range: (u, min, max) => [0, Math.max(max || 0, unit === "%" ? 1 : 5) * 1.1] },
        },
        axes: [
          { size: 28, values: (u, vals) => vals.map((v) => hhmm(v).slice(0, 5)) },
          { size: 56, values: (u, vals) => vals.map((v) => (unit === "%" ? v.toFixed(1) + "%" : v.toFixed(0))) },
        ],
        series: [{ value: (u, v) => (v === null ? "-" : hhmm(v)) }, ...names.map((n) => ({ label: n.label, stroke: n.colour, width: 1.8, spanGaps: false, points: { show: false } }))],
      };
      el.replaceChildren();
      charts[id] = { key, upto };
      c = charts[id];
      c.plot = new uPlot(opts, data, el);
    } else {
      c.upto = upto;
      c.plot.setData(data);
      if (Math.abs(c.plot.width - width) > 4) c.plot.setSize({ width, height: 130 });
    }
  }

  function renderCharts(frame) {
    if (typeof uPlot === "undefined") return;
    const r = focusRollout(frame);
    const service = r ? r.service : "orders";
    const versionsSeen = (ticks) => {
      const found = new Set();
      for (const t of ticks) for (const k of Object.keys(t.v || {})) if (k.startsWith(service + "@")) found.add(k);
      return [...found].sort();
    };
    const errs = chartData(frame, (ticks) => versionsSeen(ticks).map((k) => ({ label: k, colour: VERSION_COLOURS[k.split("@")[1]] || "#555", value: (t) => (t.v[k] ? t.v[k][1] : null) })));
    drawChart("chart-errors", errs.names, errs.data, "%", frame.t);
    const p99 = chartData(frame, (ticks) => versionsSeen(ticks).map((k) => ({ label: k, colour: VERSION_COLOURS[k.split("@")[1]] || "#555", value: (t) => (t.v[k] ? t.v[k][2] : null) })));
    drawChart("chart-p99", p99.names, p99.data, "ms", frame.t);
    const reps = chartData(frame, (ticks) => {
      const found = new Set();
      for (const t of ticks) for (const k of Object.keys(t.r || {})) found.add(k);
      return [...found].map((k) => ({ label: k, colour: colourOf(k), value: (t) => (t.r[k] === undefined ? null : t.r[k]) }));
    });
    drawChart("chart-replicas", reps.names, reps.data, "", frame.t);
  }

  // -- traces -------------------------------------------------------------------------------
  let traceFetch = 0;

  function filterQuery() {
    const form = $("#trace-filter");
    const q = {};
    for (const el of form.elements) if (el.name && el.value) q[el.name] = el.value.trim();
    return q;
  }

  async function traceList(frame) {
    const q = filterQuery();
    if (state.recorded) {
      const all = Object.values(state.recorded.traces || {}).map((x) => x.trace).filter((t) => t.start <= frame.t + 1);
      return all.filter((t) => (!q.service || t.services.includes(q.service)) && (!q.outcome || (q.outcome === "error") === t.error) && (!q.min_ms || t.duration_ms >= Number(q.min_ms)) && (!q.order || (t.order_id || "").includes(q.order))).sort((a, b) => b.start - a.start).slice(0, 50);
    }
    if (state.viewingAt !== null) q.before = String(state.viewingAt);
    const r = await fetch(`/api/traces?${new URLSearchParams(q)}`, { cache: "no-store" });
    if (!r.ok) throw new Error(`traces ${r.status}`);
    return (await r.json()).traces;
  }

  function renderTraces(frame) {
    const select = $("#trace-filter select[name=service]");
    const names = ["gateway", ...frame.services.map((x) => x.name)];
    if (select.options.length !== names.length + 1) {
      const current = select.value;
      select.replaceChildren(h("option", { value: "", text: "any" }), ...names.map((n) => h("option", { value: n, text: n })));
      select.value = current;
    }
    const now = Date.now();
    if (now - traceFetch < 1500 && !state.recorded && state.viewingAt === null) return;
    traceFetch = now;
    traceList(frame).then((list) => paintTraceList(list, frame)).catch(() => {});
  }

  function paintTraceList(list, frame) {
    const body = $("#trace-list tbody");
    // The list holds still while it is pointed at or focused: a row must not move under a click.
    const wrap = $(".trace-list-wrap");
    if (wrap.matches(":hover") || wrap.contains(document.activeElement)) return;
    const key = JSON.stringify(list.map((t) => [t.trace_id, t.spans, t.error]));
    if (body.dataset.key === key) return;
    body.dataset.key = key;
    body.replaceChildren(...list.map((t) => h("tr", {
      class: `${t.error ? "err" : ""}${state.selectedTrace === t.trace_id ? " selected" : ""}`,
      tabindex: 0,
      "data-trace": t.trace_id,
      "aria-label": `${t.root} ${t.duration_ms} ms ${t.error ? "with errors" : "ok"}`,
      onclick: () => openTrace(t.trace_id),
      onkeydown: (e) => { if (e.key === "Enter") openTrace(t.trace_id); },
    }, h("td", { text: clock(t.start) }), h("td", { text: t.root || "(root span not in yet)" }), h("td", { text: t.services.join(", ") }), h("td", { text: num(t.duration_ms, 1) }), h("td", { text: t.spans }))));
    if (!list.length) body.replaceChildren(h("tr", {}, h("td", { colspan: 5, class: "muted", text: "no trace matches" })));
  }

  async function fetchTrace(id) {
    if (state.recorded) {
      const found = (state.recorded.traces || {})[id];
      if (!found) throw new Error("this trace was not kept in the export");
      return found;
    }
    const r = await fetch(`/api/traces/${id}`, { cache: "no-store" });
    if (!r.ok) throw new Error((await r.json()).error.message);
    return r.json();
  }

  async function openTrace(id, scroll) {
    state.selectedTrace = id;
    const box = $("#waterfall");
    box.replaceChildren(h("p", { class: "muted", text: `loading ${id}...` }));
    let found;
    try { found = await fetchTrace(id); } catch (e) { box.replaceChildren(h("p", { class: "error", text: String(e.message || e) })); return; }
    const { trace, spans } = found;
    const start = Math.min(...spans.map((x) => x.start_unix_nano));
    const end = Math.max(...spans.map((x) => x.end_unix_nano));
    const total = Math.max(end - start, 1);
    const byId = new Map(spans.map((x) => [x.span_id, x]));
    const depth = (sp) => { let d = 0; let p = sp.parent_span_id; while (p && byId.has(p) && d < 30) { d++; p = byId.get(p).parent_span_id; } return d; };
    const ordered = [];
    const children = new Map();
    for (const sp of spans) {
      const parent = sp.parent_span_id && byId.has(sp.parent_span_id) ? sp.parent_span_id : null;
      if (!children.has(parent)) children.set(parent, []);
      children.get(parent).push(sp);
    }
    const walk = (parent) => { for (const sp of (children.get(parent) || []).sort((a, b) => a.start_unix_nano - b.start_unix_nano)) { ordered.push(sp); walk(sp.span_id); } };
    walk(null);
    const rows = ordered.slice(0, 400).map((sp) => {
      const left = ((sp.start_unix_nano - start) / total) * 100;
      const width = Math.max(((sp.end_unix_nano - sp.start_unix_nano) / total) * 100, 0.3);
      const err = sp.status === "ERROR";
      return h("div", { class: `span-row${err ? " error" : ""}`, "data-span-service": sp.service, "data-error": err ? "1" : "0", title: `${sp.name} [${sp.service} ${sp.version}] ${sp.duration_ms} ms${sp.status_message ? " - " + sp.status_message : ""}` },
        h("div", { class: "span-name", style: `padding-left:${depth(sp) * 10}px` }, h("span", { class: "svc", style: `background:${colourOf(sp.service)}` }), `${sp.name}`, h("span", { class: "kind", text: `${sp.service} ${sp.version} · ${String(sp.kind || "").toLowerCase()} · ${num(sp.duration_ms, 1)}ms` })),
        h("div", { class: "span-track" }, h("div", { class: "span-bar", style: `left:${left.toFixed(2)}%;width:${width.toFixed(2)}%;background:${colourOf(sp.service)}` })));
    });
    box.replaceChildren(
      h("h3", {}, `trace ${trace.trace_id.slice(0, 16)}...`, " ", h("span", { class: `badge ${trace.error ? "error" : "ok"}`, text: trace.error ? "error" : "ok" })),
      h("p", { class: "muted", text: `${num(trace.duration_ms, 1)} ms · ${spans.length} spans · ${trace.services.join(", ")}${trace.order_id ? " · order " + trace.order_id : ""}` }),
      trace.errors.length ? h("ul", { class: "error" }, trace.errors.map((e) => h("li", { text: e }))) : "",
      ...rows);
    box.dataset.trace = trace.trace_id;
    box.dataset.services = trace.services.join(",");
    if (scroll) $("#traces-panel").scrollIntoView({ behavior: "smooth", block: "start" });
    for (const tr of document.querySelectorAll("#trace-list tbody tr")) tr.classList.toggle("selected", tr.dataset.trace === id);
  }

  // -- operate --------------------------------------------------------------------------------
  function field(label, input) { return h("label", {}, label, input); }

  function serviceSelect(frame, name) {
    return h("select", { name, "aria-label": "service" }, frame.services.map((x) => h("option", { value: x.name, text: x.name })));
  }

  function formJSON(form) {
    const out = {};
    for (const el of form.elements) {
      if (!el.name || el.disabled) continue;
      if (el.type === "checkbox") { out[el.name] = el.checked; continue; }
      if (el.value === "") continue;
      out[el.name] = el.type === "number" ? Number(el.value) : el.value;
    }
    return out;
  }

  function renderOperate(frame) {
    const box = $("#operate");
    const authed = state.session.authenticated;
    $("#operate-lock").hidden = authed;
    for (const b of document.querySelectorAll("[data-needs-login]")) b.disabled = !authed;
    if (state.built.operate) {
      for (const el of box.querySelectorAll("button, input, select")) el.disabled = !authed;
      const load = frame.load || {};
      setText($("#load-state"), load.running ? `running: ${load.describe} (since ${clock(load.started_at)})` : load.describe ? `last: ${load.describe}, ended ${load.ended_at ? clock(load.ended_at) : ""}` : "no load from this page");
      const scaler = $("#autoscale-state");
      setText(scaler, frame.autoscaler ? (frame.autoscaler.enabled ? "on" : "off") : "n/a");
      return;
    }
    state.built.operate = true;
    const submit = (action, transform) => (e) => { e.preventDefault(); act(action, transform(formJSON(e.target))); };
    const scale = h("form", { "aria-label": "scale a service", onsubmit: submit("scale", (b) => b) },
      h("fieldset", {}, h("legend", { text: "Scale" }), h("div", { class: "row" }, field("service", serviceSelect(frame, "service")), field("replicas", h("input", { name: "replicas", type: "number", min: 0, max: 20, value: 2, size: 3 })), h("button", { type: "submit", class: "primary" }, "Scale"))));
    const strategy = h("select", { name: "strategy", "aria-label": "strategy" }, ["canary", "bluegreen", "rolling"].map((x) => h("option", { value: x, text: x })));
    const canaryOnly = h("div", { class: "row" },
      field("steps %", h("input", { name: "steps", value: "10,25,50,100", size: 11 })),
      field("interval", h("input", { name: "interval", value: "10s", size: 4 })),
      field("max 5xx", h("input", { name: "max_error_rate", type: "number", min: 0, max: 1, step: 0.001, value: 0.01, size: 5 })),
      field("max p99", h("input", { name: "max_p99", value: "500ms", size: 5 })),
      field("min requests", h("input", { name: "min_requests", type: "number", min: 0, max: 10000, value: 10, size: 4 })));
    strategy.addEventListener("change", () => { canaryOnly.hidden = strategy.value !== "canary"; for (const el of canaryOnly.querySelectorAll("input")) el.disabled = strategy.value !== "canary"; });
    const rollout = h("form", { "aria-label": "start a rollout", onsubmit: submit("rollout", (b) => ({ ...b, steps: b.steps ? String(b.steps).split(",").map((x) => Number(x.trim())) : undefined })) },
      h("fieldset", {}, h("legend", { text: "Roll out" }),
        h("div", { class: "row" }, field("service", serviceSelect(frame, "service")), field("version", h("input", { name: "version", value: "v2", size: 4, required: true })), field("strategy", strategy)),
        canaryOnly, h("button", { type: "submit", class: "primary" }, "Start rollout")));
    const faults = h("form", { "aria-label": "set or clear faults", onsubmit: submit("faults", (b) => b) },
      h("fieldset", {}, h("legend", { text: "Faults" }),
        h("div", { class: "row" }, field("service", serviceSelect(frame, "service")), field("version", h("input", { name: "version", placeholder: "all", size: 4 })),
          field("latency ms", h("input", { name: "latency_ms", type: "number", min: 0, max: 60000, value: 0, size: 5 })), field("error rate", h("input", { name: "error_rate", type: "number", min: 0, max: 1, step: 0.05, value: 0.2, size: 4 }))),
        h("div", { class: "row" }, h("button", { type: "submit", class: "danger" }, "Set faults"), h("button", { type: "button", onclick: (e) => { const b = formJSON(e.target.form); act("clear-faults", { service: b.service, version: b.version }); } }, "Clear faults"))));
    const scaler = h("fieldset", {}, h("legend", { text: "Autoscaler" }), h("div", { class: "row" }, h("span", {}, "now ", h("strong", { id: "autoscale-state", text: "-" })),
      h("button", { type: "button", onclick: () => act("autoscale", { enabled: true }) }, "Turn on"), h("button", { type: "button", onclick: () => act("autoscale", { enabled: false }) }, "Turn off")));
    const load = h("form", { "aria-label": "start or stop a load", onsubmit: submit("load", (b) => ({ ...b, duration: b.duration ? `${b.duration}s` : null })) },
      h("fieldset", {}, h("legend", { text: "Load (Locust)" }),
        h("div", { class: "row" }, field("mode", h("select", { name: "mode" }, h("option", { value: "closed", text: "closed loop" }), h("option", { value: "open", text: "open loop" }))),
          field("users", h("input", { name: "users", type: "number", min: 1, max: 500, value: 10, size: 3 })),
          field("arrivals/user/s", h("input", { name: "arrivals", type: "number", min: 0.1, max: 100, step: 0.1, size: 3 })),
          field("shape", h("select", { name: "shape" }, h("option", { value: "", text: "none" }), ["steady", "step", "spike", "soak"].map((x) => h("option", { value: x, text: x })))),
          field("duration s", h("input", { name: "duration", type: "number", min: 1, max: 86400, value: 120, size: 5 }))),
        h("div", { class: "row" }, h("button", { type: "submit", class: "primary" }, "Start load"), h("button", { type: "button", onclick: () => act("stop-load", null) }, "Stop load"), h("span", { id: "load-state", class: "muted" }))));
    box.replaceChildren(scale, rollout, faults, scaler, load);
    renderOperate(frame);
  }

  async function act(action, body) {
    const out = $("#action-result");
    out.className = "result";
    setText(out, `${action}...`);
    try {
      const r = await fetch(`/api/actions/${action}`, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": state.session.csrf || "" },
        body: JSON.stringify(body || {}),
        credentials: "same-origin",
      });
      const answer = await r.json().catch(() => ({}));
      if (!r.ok) {
        if (r.status === 401) { state.session = { authenticated: false, csrf: null }; renderSession(); }
        out.className = "result bad";
        setText(out, `${action}: ${r.status} ${(answer.error && answer.error.message) || ""}`);
        return;
      }
      out.className = "result good";
      setText(out, `${action}: done`);
    } catch (e) {
      out.className = "result bad";
      setText(out, `${action}: ${e}`);
    }
  }

  // -- drills ----------------------------------------------------------------------------------
  function renderDrills(frame) {
    const drills = frame.drills || {};
    const select = $("#drill-form select[name=name]");
    if (!state.built.drills && (drills.catalog || []).length) {
      state.built.drills = true;
      select.replaceChildren(...drills.catalog.map((d) => h("option", { value: d.name, text: `${d.name}${d.lesson ? " (lesson)" : ""}` })));
    }
    const run = frame.drill || {};
    const progress = $("#drill-progress");
    progress.hidden = !run.name;
    if (run.name) setText(progress, `${run.name}: ${run.running ? "running" : run.verdict}\n${(run.lines || []).join("\n")}`);
    $("#drill-stop").hidden = !run.running;
    const list = $("#drill-list");
    const key = JSON.stringify((drills.reports || []).map((x) => x.folder));
    if (list.dataset.key === key) return;
    list.dataset.key = key;
    list.replaceChildren(...(drills.reports || []).map((rep) => h("li", { "data-report": rep.folder },
      h("span", { class: `badge ${rep.passed ? "pass" : "fail"}`, text: rep.passed ? "PASSED" : "FAILED" }), " ",
      rep.html && !state.recorded ? h("a", { href: `/reports/${rep.folder}/report.html`, target: "_blank", rel: "noopener", text: rep.title || rep.drill }) : h("span", { text: rep.title || rep.drill }),
      rep.console && !state.recorded ? [" · ", h("a", { href: `/reports/${rep.folder}/console.html`, target: "_blank", rel: "noopener", text: "console during the drill" })] : "",
      h("span", { class: "muted", text: ` · ${rep.runtime} · ${rep.started_at ? new Date(rep.started_at * 1000).toLocaleString() : ""}` }),
      h("div", { class: "slos", text: rep.slos.map((x) => `${x.passed ? "✓" : "✗"} ${x.name}: ${x.measured}`).join("; ") }))));
    if (!(drills.reports || []).length) list.replaceChildren(h("li", { class: "muted", text: "No drill report yet." }));
  }

  // -- session ----------------------------------------------------------------------------------
  function renderSession() {
    const button = $("#login");
    setText(button, state.session.authenticated ? "Log out" : "Log in");
    if (state.shown) { renderOperate(state.shown); renderRollout(state.shown); }
  }

  async function loadSession() {
    try {
      const r = await fetch("/api/session", { cache: "no-store", credentials: "same-origin" });
      state.session = await r.json();
    } catch (e) { state.session = { authenticated: false, csrf: null }; }
    renderSession();
  }

  function openLogin() {
    if (state.session.authenticated) {
      fetch("/logout", { method: "POST", credentials: "same-origin" }).finally(() => { state.session = { authenticated: false, csrf: null }; renderSession(); });
      return;
    }
    const dialog = $("#login-dialog");
    setText($("#login-error"), "");
    dialog.showModal();
    $("input[name=token]", dialog).focus();
  }

  async function submitLogin(e) {
    e.preventDefault();
    const dialog = $("#login-dialog");
    const input = $("input[name=token]", dialog);
    const r = await fetch("/login", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token: input.value }), credentials: "same-origin" });
    const answer = await r.json().catch(() => ({}));
    if (!r.ok) { setText($("#login-error"), (answer.error && answer.error.message) || `login failed (${r.status})`); return; }
    input.value = "";
    state.session = answer;
    dialog.close();
    renderSession();
  }

  // -- start --------------------------------------------------------------------------------------
  async function start() {
    $("#pause").addEventListener("click", togglePause);
    $("#window").addEventListener("change", (e) => { state.windowName = e.target.value; render(state.shown); });
    $("#scrub").addEventListener("input", onScrub);
    $("#golive").addEventListener("click", goLive);
    $("#login").addEventListener("click", openLogin);
    for (const b of document.querySelectorAll("[data-login]")) b.addEventListener("click", openLogin);
    $("#login-form").addEventListener("submit", submitLogin);
    $("#login-cancel").addEventListener("click", () => $("#login-dialog").close());
    $("#trace-filter").addEventListener("input", () => { traceFetch = 0; if (state.shown) renderTraces(state.shown); });
    $("#trace-filter").addEventListener("submit", (e) => e.preventDefault());
    $("#drill-form").addEventListener("submit", (e) => { e.preventDefault(); const b = formJSON(e.target); act("drill", { name: b.name, duration: b.duration ? `${b.duration}s` : null }); });
    $("#drill-stop").addEventListener("click", () => act("stop-drill", null));
    window.addEventListener("resize", () => { if (state.shown) renderCharts(state.shown); });

    const recorded = $("#recorded");
    const boot = JSON.parse(($("#boot") || {}).textContent || "null");
    if (recorded) {
      document.body.classList.add("recorded");
      state.recorded = await decodeRecorded(recorded.textContent);
      state.paused = true;
      const frames = state.recorded.frames;
      setLive("", `recorded ${frames.length ? new Date(frames[0].t * 1000).toLocaleString() : ""}`);
      $("#pause").hidden = true;
      $("#export").hidden = true;
      updateScrubber();
      render(frames[frames.length - 1] || boot);
      return;
    }
    if (boot) receive(boot);
    loadSession();
    connect();
    try {
      const r = await fetch("/api/ticks", { cache: "no-store" });
      const known = (await r.json()).ticks;
      const newest = state.ticks.length ? state.ticks[0].t : Infinity;
      state.ticks = [...known.filter((t) => t.t < newest), ...state.ticks];
      updateScrubber();
      if (state.shown) renderCharts(state.shown);
    } catch (e) { /* charts start from now */ }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();

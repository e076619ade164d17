// dashboard.js: the console's live numbers and 60-second charts from the
// hub's `$sys:stats` channel (a JSON snapshot a second: connections, message
// counters, delivery latency percentiles in seconds over the last
// `latency_window` seconds, open connections by transport, and totals of close
// codes, error replies and refused connections). Rates come from consecutive
// snapshots. Latencies are null (shown "–") when nothing was delivered in the
// window. The console's other panels (login, cluster, channels, a user's
// connections, actions) are console.js's.
//
// An ES module on the TypeScript SDK duplex-client (clients/js, served as
// /assets/duplex-client.js). `window.dashboard` is the page's handle, for
// tests and the console: `points`, `snapshots` (snapshots taken), `client`
// (the SDK's Client), `hubState()` (connecting, open, reconnecting, closed).
import { Client } from "/assets/duplex-client.js";

{
  const $ = (selector) => document.querySelector(selector);
  const SVG = "http://www.w3.org/2000/svg";
  const WINDOW = 60000; // ms shown in the charts
  const STATS = "$sys:stats";

  // A protected hub (docs/security.md) wants the admin token, or a JWT
  // granting `$sys:stats`, from `?token=`: it goes in the handshake, where
  // the hub takes either (`connect` would take a JWT only).
  const token = new URLSearchParams(location.search).get("token");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  // Without one, `console=1` lets the hub take the console's login cookie
  // (console.js) as the admin token for this connection.
  const url = `${scheme}//${location.host}/ws` + (token ? `?token=${encodeURIComponent(token)}` : "?console=1");
  const client = new Client(url, { name: "web-dashboard", firstConnectAttempts: 5 });
  let retryAt = null;
  function hubState() {
    return { connected: "open", disconnected: "reconnecting", closed: "closed" }[client.state] || "connecting";
  }

  /** Derived points: {time, connections, inRate, outRate, p50, p90, p99,
   * latencyCount, closesOk, closesOther, errors, totals} (ms for latency;
   * latencyCount: deliveries in the window; closes and errors per second;
   * totals: the snapshot's counts by label, for the table). */
  const points = [];
  let previous = null; // the last raw snapshot
  let lastSeen = 0; // when (browser clock) the last snapshot arrived
  window.dashboard = { points, snapshots: 0, client, hubState };

  const ms = (seconds) => (typeof seconds === "number" && isFinite(seconds) ? seconds * 1000 : null);
  /** The latency of `field` in ms, null when the window had no deliveries. */
  const latency = (snapshot, field) => (snapshot.latency_count === 0 ? null : ms(snapshot[field]));

  function rate(now, before, field) {
    const a = now[field];
    const b = before && before[field];
    const dt = before ? (now.time - before.time) / 1000 : 0;
    if (typeof a !== "number" || typeof b !== "number" || dt <= 0 || a < b) return null;
    return (a - b) / dt;
  }

  /** The snapshot's counts by label: {"close 1000": n, "error forbidden": n,
   * "refused origin": n}, totals since start. */
  function totals(snapshot) {
    const out = {};
    const add = (prefix, object) => {
      if (!object || typeof object !== "object") return;
      for (const [label, n] of Object.entries(object)) if (typeof n === "number") out[`${prefix} ${label}`] = n;
    };
    add("close", snapshot.closes);
    add("error", snapshot.errors);
    add("refused", snapshot.rejected);
    return out;
  }

  /** The sum of `object`'s numbers whose key passes `keep`. */
  function sum(object, keep = () => true) {
    if (!object || typeof object !== "object") return 0;
    let total = 0;
    for (const [key, n] of Object.entries(object)) if (keep(key) && typeof n === "number") total += n;
    return total;
  }

  /** What `count` of the snapshot grew by per second since `before`. */
  function perSecond(now, before, count) {
    if (!before) return null;
    const dt = (now.time - before.time) / 1000;
    const grew = count(now) - count(before);
    return dt > 0 && grew >= 0 ? grew / dt : null;
  }

  function take(snapshot) {
    if (!snapshot || typeof snapshot.time !== "number") return;
    // A snapshot replayed twice (recent history) or out of order is skipped;
    // counters that went down mean the hub restarted: no rate for that step.
    if (previous && snapshot.time <= previous.time) return;
    const before = previous && snapshot.time - previous.time < 10000 ? previous : null;
    points.push({
      time: snapshot.time,
      connections: typeof snapshot.connections === "number" ? snapshot.connections : null,
      inRate: rate(snapshot, before, "messages_in"),
      outRate: rate(snapshot, before, "messages_out"),
      p50: latency(snapshot, "latency_p50"),
      p90: latency(snapshot, "latency_p90"),
      p99: latency(snapshot, "latency_p99"),
      latencyCount: typeof snapshot.latency_count === "number" ? snapshot.latency_count : null,
      closesOk: perSecond(snapshot, before, (t) => sum(t.closes, (code) => code === "1000" || code === "1001")),
      closesOther: perSecond(snapshot, before, (t) => sum(t.closes, (code) => code !== "1000" && code !== "1001")),
      errors: perSecond(snapshot, before, (t) => sum(t.errors) + sum(t.rejected)),
      totals: totals(snapshot),
      transports: snapshot.transports && typeof snapshot.transports === "object" ? snapshot.transports : null,
    });
    if (typeof snapshot.latency_window === "number") {
      for (const el of document.querySelectorAll(".lat-window")) {
        const text = String(snapshot.latency_window);
        if (el.textContent !== text) el.textContent = text;
      }
    }
    previous = snapshot;
    const oldest = snapshot.time - WINDOW - 2000;
    while (points.length && points[0].time < oldest) points.shift();
    window.dashboard.snapshots += 1;
  }

  // ---- numbers -----------------------------------------------------------

  function formatRate(value) {
    if (value === null || value === undefined) return "–";
    return value < 10 ? value.toFixed(1) : Math.round(value).toLocaleString("en-US");
  }

  function formatMs(value) {
    if (value === null || value === undefined) return "–";
    if (value === 0) return "0";
    if (value < 1) return value.toFixed(2);
    if (value < 10) return value.toFixed(1);
    return Math.round(value).toLocaleString("en-US");
  }

  function setNumber(selector, value, text) {
    const el = $(selector);
    el.dataset.value = value === null || value === undefined ? "" : String(value);
    if (el.textContent !== text) el.textContent = text;
  }

  function renderNumbers() {
    const last = points[points.length - 1];
    if (!last) return;
    setNumber("#conn-count", last.connections, last.connections === null ? "–" : last.connections.toLocaleString("en-US"));
    setNumber("#msg-rate", last.inRate, formatRate(last.inRate));
    setNumber("#msg-out-rate", last.outRate, formatRate(last.outRate));
    setNumber("#lat-p50", last.p50, formatMs(last.p50));
    setNumber("#lat-p99", last.p99, formatMs(last.p99));
    if (previous && typeof previous.publishes === "number") {
      setNumber("#publishes", previous.publishes, previous.publishes.toLocaleString("en-US"));
    }
  }

  // ---- charts ----------------------------------------------------------------

  /** `value` with as many decimals as the tick `step` needs (so ticks read
   * "0, 0.5, 1" rather than "0, 1, 1"), and `unit`. */
  function formatTick(value, step, unit) {
    let decimals = 0;
    while (decimals < 4 && Math.abs(Math.round(step * 10 ** decimals) - step * 10 ** decimals) > 1e-9) {
      decimals += 1;
    }
    const text = value === 0 ? "0" : value.toLocaleString("en-US", {
      minimumFractionDigits: decimals,
      maximumFractionDigits: decimals,
    });
    return unit ? `${text} ${unit}` : text;
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (value <= step * power) return step * power;
    }
    return 10 * power;
  }

  function node(name, attrs, text) {
    const el = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, value);
    if (text !== undefined) el.textContent = text;
    return el;
  }

  /** Draws `series` ([{field, cls}]) of the last minute into `svg`, with
   * three ticks labelled in `unit`; `integer` charts tick whole numbers. */
  function drawChart(svg, series, unit, integer) {
    const width = Math.max(200, Math.round(svg.clientWidth || 600));
    const height = Math.max(80, Math.round(svg.clientHeight || 150));
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
    const left = 58;
    const top = 8;
    const bottom = height - 18;
    const right = width - 6;
    const end = points.length ? points[points.length - 1].time : Date.now();
    const start = end - WINDOW;
    let max = 0;
    for (const p of points) {
      for (const s of series) if (p.time >= start && p[s.field] > max) max = p[s.field];
    }
    max = niceMax(max * 1.1);
    if (integer) max = Math.max(2, Math.ceil(max / 2) * 2);
    const x = (t) => left + ((t - start) / WINDOW) * (right - left);
    const y = (v) => bottom - (v / max) * (bottom - top);
    const children = [];
    for (const fraction of [0, 0.5, 1]) {
      const value = max * fraction;
      children.push(node("line", { class: "grid", x1: left, x2: right, y1: y(value), y2: y(value) }));
      children.push(node("text", { class: "axis", x: left - 6, y: y(value) + 3, "text-anchor": "end" }, formatTick(value, max / 2, unit)));
    }
    children.push(node("text", { class: "axis", x: left, y: height - 4 }, "-60 s"));
    children.push(node("text", { class: "axis", x: right, y: height - 4, "text-anchor": "end" }, "now"));
    series.forEach((s, index) => {
      const coords = [];
      for (const p of points) {
        const v = p[s.field];
        if (p.time >= start && v !== null && v !== undefined) coords.push([x(p.time), y(v)]);
      }
      if (coords.length === 0) return;
      const line = coords.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(" ");
      if (index === 0 && coords.length > 1) {
        const area = `${coords[0][0].toFixed(1)},${bottom} ${line} ${coords[coords.length - 1][0].toFixed(1)},${bottom}`;
        children.push(node("polygon", { class: `area ${s.cls}`, points: area }));
      }
      children.push(node("polyline", { class: s.cls, points: line, "data-series": s.field }));
    });
    svg.replaceChildren(...children);
  }

  function renderCharts() {
    drawChart($("#chart-conn"), [{ field: "connections", cls: "s1" }], "", true);
    drawChart($("#chart-rate"), [
      { field: "inRate", cls: "s1" },
      { field: "outRate", cls: "s2" },
    ], "/s", false);
    drawChart($("#chart-latency"), [
      { field: "p50", cls: "s1" },
      { field: "p90", cls: "s2" },
      { field: "p99", cls: "s3" },
    ], "ms", false);
    drawChart($("#chart-closes"), [
      { field: "closesOk", cls: "s2" },
      { field: "closesOther", cls: "s3" },
      { field: "errors", cls: "s4" },
    ], "/s", false);
  }

  // ---- tables ----------------------------------------------------------------

  /** How each transport label reads; `sse` is kept for the transport being
   * added (shown as not on this hub until the hub reports it). */
  const TRANSPORTS = [
    ["websocket_http1", "WebSocket over HTTP/1.1"],
    ["websocket_http2", "WebSocket over HTTP/2"],
    ["sse", "Server-sent events"],
  ];

  function row(cells) {
    const tr = document.createElement("tr");
    cells.forEach(([text, cls], index) => {
      const td = document.createElement(index === 0 ? "th" : "td");
      if (index === 0) td.scope = "row";
      if (cls) td.className = cls;
      td.textContent = text;
      tr.append(td);
    });
    return tr;
  }

  function renderTables() {
    const last = points[points.length - 1];
    if (!last) return;
    const open = last.transports || {};
    const known = new Set(TRANSPORTS.map(([label]) => label));
    const rows = TRANSPORTS.map(([label, name]) => {
      const n = open[label];
      return row([[name], [typeof n === "number" ? n.toLocaleString("en-US") : "not on this hub", "num"]]);
    });
    for (const [label, n] of Object.entries(open)) {
      if (!known.has(label)) rows.push(row([[label], [String(n), "num"]]));
    }
    $("#transports tbody").replaceChildren(...rows);
    // Closes and errors over the window: the last totals less the first's.
    const first = points.find((p) => p.time >= last.time - WINDOW) || last;
    const events = Object.entries(last.totals)
      .map(([label, n]) => [label, n - (first.totals[label] || 0)])
      .filter(([, n]) => n > 0)
      .sort((a, b) => b[1] - a[1]);
    $("#events tbody").replaceChildren(
      ...(events.length ? events.map(([label, n]) => row([[label], [n.toLocaleString("en-US"), "num"]])) : [row([["none"], ["0", "num"]])]),
    );
  }

  function render() {
    renderNumbers();
    renderCharts();
    renderTables();
  }

  // ---- connection ------------------------------------------------------------

  function renderState() {
    const el = $("#state");
    const state = hubState();
    let label = { open: "live", connecting: "connecting…", closed: "offline" }[state];
    if (state === "reconnecting") {
      label = retryAt ? `reconnecting in ${Math.max(1, Math.ceil((retryAt - Date.now()) / 1000))}s` : "reconnecting…";
    }
    el.dataset.state = state;
    const text = $("#state-text");
    if (text.textContent !== label) text.textContent = label;
    if (lastSeen) {
      const age = Math.round((Date.now() - lastSeen) / 1000);
      $("#updated").textContent = age < 2 ? "just now" : `${age} s ago`;
    }
  }

  $("#state").addEventListener("click", () => {
    if (client.state === "disconnected") client.retryNow();
    else if (client.state === "closed") client.connect().catch(() => {});
  });

  client.on("connecting", () => {
    retryAt = null;
    renderState();
  });
  client.on("connected", renderState);
  client.on("disconnected", (close) => {
    retryAt = close.willReconnect ? Date.now() + close.retryIn : null;
    renderState();
  });
  client.on("error", ({ error }) => {
    if (error.code === "unreachable") $("#updated").textContent = error.message;
  });

  // The hub keeps the last two minutes: fill the charts at once.
  const stats = client.subscribe(STATS, { recent: 61 });
  stats.on("message", (msg) => {
    take(msg.data);
    lastSeen = Date.now();
    render();
  });
  stats.on("error", ({ error }) => {
    $("#updated").textContent = `cannot subscribe: ${error.message}` +
      (error.code === "forbidden" ? " (log in with the admin token, or open the console with ?token=)" : "");
  });
  client.connect().catch(() => {});
  setInterval(renderState, 1000);
  window.addEventListener("resize", renderCharts);
  renderState();
  renderCharts();
}

// console.js: the operator console's panels that go through the hub's
// console calls (`POST /console/…`, crates/hub/src/console.rs): the admin
// login, the cluster's nodes, channels with subscribers and publish rates, a
// user's connections, and the actions (publish, disconnect a user).
//
// Reads (nodes, channels) need what the stats need: an open hub, the admin
// login, or `?token=` (sent as `Authorization: Bearer`). Actions and a user's
// connections need the admin login (an HttpOnly session cookie the hub sets;
// this script never sees it). Every request is a POST of JSON: the hub
// refuses anything else. `window.hubConsole` is the page's handle for tests:
// `session`, `refreshes` (cluster and channel refreshes done), `refresh()`.

{
  const $ = (selector) => document.querySelector(selector);
  const REFRESH = 5000; // ms between cluster and channel refreshes
  const SHOWN = 50; // channels shown at most
  const token = new URLSearchParams(location.search).get("token");

  const state = {
    session: { admin: false, login: false, read: false },
    refreshes: 0,
    channels: [], // [{channel, subscribers, rate}]
    offsets: new Map(), // channel → {epoch, offset, time}
    sort: { key: "subscribers", descending: true },
    refresh,
  };
  window.hubConsole = state;

  /** POSTs `params` to `/console/<path>`; the JSON reply, or throws an Error
   * with the hub's message. */
  async function call(path, params = {}) {
    const headers = { "Content-Type": "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(`/console/${path}`, {
      method: "POST",
      headers,
      body: JSON.stringify(params),
      credentials: "same-origin",
    });
    const reply = await response.json().catch(() => null);
    if (!response.ok) {
      const message = reply && reply.error ? reply.error.message : `HTTP ${response.status}`;
      const error = new Error(message);
      error.code = reply && reply.error ? reply.error.code : "http";
      throw error;
    }
    return reply;
  }

  function say(selector, text, bad = false) {
    const el = $(selector);
    el.textContent = text;
    el.classList.toggle("bad", bad);
  }

  function cell(tag, text, cls) {
    const el = document.createElement(tag);
    if (tag === "th") el.scope = "row";
    if (cls) el.className = cls;
    el.textContent = text;
    return el;
  }

  function uptime(seconds) {
    if (typeof seconds !== "number") return "–";
    if (seconds < 120) return `${seconds} s`;
    if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
    if (seconds < 172800) return `${Math.round(seconds / 3600)} h`;
    return `${Math.round(seconds / 86400)} d`;
  }

  // ---- login -------------------------------------------------------------

  function renderSession() {
    const { admin, login } = state.session;
    $("#login-form").hidden = admin || !login;
    $("#logged-in").hidden = !admin;
    $("#no-login").hidden = login;
    $("#actions").hidden = !admin;
    for (const button of document.querySelectorAll(".kick")) button.hidden = !admin;
  }

  $("#login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("#login-token");
    say("#login-status", "logging in…");
    try {
      await call("login", { token: input.value });
      input.value = "";
      // The stats' WebSocket carries the new cookie only from a new
      // handshake: start the page again, logged in.
      location.reload();
    } catch (error) {
      say("#login-status", `Not logged in: ${error.message}`, true);
      input.focus();
      input.select();
    }
  });

  $("#logout").addEventListener("click", async () => {
    try {
      await call("logout");
      location.reload();
    } catch (error) {
      say("#login-status", `Not logged out: ${error.message}`, true);
    }
  });

  // ---- cluster and channels -------------------------------------------------

  function renderNodes(nodes) {
    const rows = nodes.map((node) => {
      const tr = document.createElement("tr");
      tr.append(
        cell("th", node.id || "?"),
        cell("td", node.version || "–"),
        cell("td", typeof node.connections === "number" ? node.connections.toLocaleString("en-US") : "–", "num"),
        cell("td", uptime(node.uptime), "num"),
      );
      return tr;
    });
    $("#nodes tbody").replaceChildren(...rows);
    const total = nodes.reduce((n, node) => n + (node.connections || 0), 0);
    say("#nodes-note", `${nodes.length} node${nodes.length === 1 ? "" : "s"}, ${total.toLocaleString("en-US")} connections`);
  }

  function sortChannels() {
    const { key, descending } = state.sort;
    const value = (c) => (key === "channel" ? c.channel : c[key] ?? -1);
    state.channels.sort((a, b) => {
      const x = value(a);
      const y = value(b);
      const order = x < y ? -1 : x > y ? 1 : 0;
      return descending ? -order : order;
    });
    for (const th of document.querySelectorAll("#channels th[aria-sort]")) {
      const mine = th.querySelector("button").dataset.key === key;
      th.setAttribute("aria-sort", mine ? (descending ? "descending" : "ascending") : "none");
    }
  }

  function renderChannels() {
    sortChannels();
    const rows = state.channels.map((c) => {
      const tr = document.createElement("tr");
      tr.dataset.channel = c.channel;
      tr.append(
        cell("th", c.channel),
        cell("td", c.subscribers.toLocaleString("en-US"), "num"),
        cell("td", c.rate === null || c.rate === undefined ? "–" : c.rate < 10 ? c.rate.toFixed(1) : Math.round(c.rate).toLocaleString("en-US"), "num"),
      );
      return tr;
    });
    $("#channels tbody").replaceChildren(...rows);
  }

  for (const button of document.querySelectorAll("#channels .sort")) {
    button.addEventListener("click", () => {
      const key = button.dataset.key;
      state.sort = { key, descending: state.sort.key === key ? !state.sort.descending : key !== "channel" };
      renderChannels();
    });
  }

  $("#channels-form").addEventListener("submit", (event) => {
    event.preventDefault();
    refresh();
  });

  /** Publish rates from the channels' offsets: (offset now − before) / time,
   * within one epoch. */
  async function rates(names) {
    if (!names.length) return;
    const reply = await call("api/offsets", { channels: names });
    const now = Date.now();
    for (const c of state.channels) {
      const at = reply.offsets[c.channel];
      if (!at) continue;
      const before = state.offsets.get(c.channel);
      if (before && before.epoch === at.epoch && at.offset >= before.offset && now > before.time) {
        c.rate = ((at.offset - before.offset) * 1000) / (now - before.time);
      }
      state.offsets.set(c.channel, { epoch: at.epoch, offset: at.offset, time: now });
    }
  }

  async function refresh() {
    if (!state.session.read) return;
    try {
      const info = await call("api/info");
      renderNodes(info.nodes || []);
    } catch (error) {
      say("#nodes-note", `Cannot read the cluster: ${error.message}`, true);
    }
    try {
      const pattern = $("#channel-filter").value.trim() || "*";
      const reply = await call("api/channels", { pattern });
      const all = reply.channels || [];
      const busiest = all.slice().sort((a, b) => b.subscribers - a.subscribers).slice(0, SHOWN);
      const rate = new Map(state.channels.map((c) => [c.channel, c.rate]));
      state.channels = busiest.map((c) => ({ channel: c.channel, subscribers: c.subscribers, rate: rate.get(c.channel) ?? null }));
      await rates(state.channels.map((c) => c.channel));
      renderChannels();
      say("#channels-note", all.length > SHOWN
        ? `Showing the ${SHOWN} busiest of ${all.length} channels matching ${pattern}.`
        : `${all.length} channel${all.length === 1 ? "" : "s"} matching ${pattern}.`);
    } catch (error) {
      say("#channels-note", `Cannot read the channels: ${error.message}`, true);
    }
    state.refreshes += 1;
  }

  // ---- a user's connections --------------------------------------------------

  async function kick(client, user, button) {
    try {
      await call("api/disconnect", { client, user, code: 4000, reason: "disconnected from the console" });
      say("#search-status", `Disconnected ${client}.`);
      button.closest("tr").remove();
    } catch (error) {
      say("#search-status", `Not disconnected: ${error.message}`, true);
    }
  }

  $("#search-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const user = $("#user-input").value.trim();
    if (!user) return;
    say("#search-status", "searching…");
    try {
      const reply = await call("api/connections", { user });
      const rows = reply.connections.slice(0, 100).map((c) => {
        const tr = document.createElement("tr");
        tr.dataset.client = c.client;
        const action = document.createElement("td");
        const button = document.createElement("button");
        button.type = "button";
        button.className = "kick danger small";
        button.textContent = "Disconnect";
        button.setAttribute("aria-label", `Disconnect ${c.client}`);
        button.hidden = !state.session.admin;
        button.addEventListener("click", () => kick(c.client, user, button));
        action.append(button);
        tr.append(
          cell("th", c.client),
          cell("td", c.node),
          cell("td", new Date(c.since).toLocaleString("en-GB")),
          action,
        );
        return tr;
      });
      $("#user-conns tbody").replaceChildren(...rows);
      const n = reply.connections.length;
      let text = `${user}: ${n} connection${n === 1 ? "" : "s"} on ${reply.nodes} node${reply.nodes === 1 ? "" : "s"}`;
      if (reply.unanswered) text += ` (${reply.unanswered} did not answer)`;
      if (reply.truncated || n > 100) text += " (more than shown)";
      say("#search-status", `${text}.`);
    } catch (error) {
      $("#user-conns tbody").replaceChildren();
      say("#search-status", `Cannot search: ${error.message}`, true);
    }
  });

  // ---- actions -----------------------------------------------------------

  $("#publish-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const channel = $("#publish-channel").value.trim();
    let data;
    try {
      data = JSON.parse($("#publish-data").value);
    } catch (error) {
      say("#publish-status", `The data is not JSON: ${error.message}`, true);
      $("#publish-data").focus();
      return;
    }
    try {
      const reply = await call("api/publish", { channel, data });
      say("#publish-status", `Published to ${channel} at offset ${reply.offset}.`);
    } catch (error) {
      say("#publish-status", `Not published: ${error.message}`, true);
    }
  });

  $("#disconnect-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const user = $("#disconnect-user").value.trim();
    const code = Number($("#disconnect-code").value);
    const reason = $("#disconnect-reason").value;
    try {
      const reply = await call("api/disconnect", { user, code, reason });
      say("#disconnect-status", `Sent to ${reply.nodes} node${reply.nodes === 1 ? "" : "s"}: ${user}'s connections close with ${code}.`);
    } catch (error) {
      say("#disconnect-status", `Not disconnected: ${error.message}`, true);
    }
  });

  // ---- start -------------------------------------------------------------

  (async () => {
    try {
      state.session = await call("session");
    } catch (error) {
      say("#login-status", `Cannot ask the hub: ${error.message}`, true);
    }
    renderSession();
    if (!state.session.read) {
      say("#nodes-note", "Log in with the admin token to see the cluster.");
      say("#channels-note", "Log in with the admin token to see the channels.");
    }
    await refresh();
    setInterval(refresh, REFRESH);
  })();
}

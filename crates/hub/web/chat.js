// chat.js: the web chat, an ES module on the TypeScript SDK duplex-client
// (clients/js, served as /assets/duplex-client.js).
//
// Rooms are channels `chat:<room>`; a message's data is {"name", "text"}.
// Names of the people present travel in signals ({"hello"}, {"here"}) since
// anonymous connections have an empty `user`; "typing…" is a signal too.
// Query parameters: ?name= sets the name, ?room= opens a room, ?token= is
// passed to the hub, ?token_url= is fetched (GET, with credentials) for a
// token before connecting and before each one expires (a JWT as the body).
//
// `window.chat` is the page's handle, for tests and the console: `client`
// (the SDK's Client), `delays` (the last 20 reconnect waits, {attempt,
// delay}), `duplex` (the SDK's exports), `hubState()` (the state shown:
// connecting, open, reconnecting, closed).
//
// Recovery (resubscribe with `since`, dedupe by offset, gaps announced),
// the publish queue and idempotency keys, backoff, token refresh and the
// background mode are the SDK's; this page only shows what it reports.
//
// Invariant: a name the hub verified wins. A message's or signal's
// `from.user` (and this page's own `user` from the `connected` reply) is set
// by the hub from the token; the `name` in the data is the sender's claim,
// shown only for anonymous connections (empty `user`). A token for `alice`
// is shown as "alice" whatever name was typed.
import * as duplex from "/assets/duplex-client.js";

{
  const $ = (selector) => document.querySelector(selector);
  const params = new URLSearchParams(location.search);
  const ROOM_NAME = /^[A-Za-z0-9_.@=/-]{1,64}$/;
  const ROOM_RULE = "Room names are 1 to 64 letters, digits and _ - . @ / =";
  const HISTORY = 50; // messages of history when joining a room
  const KEEP = 500; // messages kept per room
  const TYPING_EVERY = 2500; // ms between "typing" signals while typing
  const TYPING_SHOWN = 5000; // ms a "typing" signal is shown for

  const store = {
    get(key, fallback) {
      try {
        const value = localStorage.getItem(key);
        return value === null ? fallback : JSON.parse(value);
      } catch (_) {
        return fallback;
      }
    },
    set(key, value) {
      try {
        localStorage.setItem(key, JSON.stringify(value));
      } catch (_) {
        /* private mode: nothing kept */
      }
    },
  };

  function cleanName(name) {
    return String(name || "").trim().slice(0, 32);
  }

  let myName = cleanName(params.get("name")) || cleanName(store.get("duplex.name", ""));
  if (!myName) myName = `guest-${Math.floor(1000 + Math.random() * 9000)}`;
  store.set("duplex.name", myName);

  let roomList = store.get("duplex.rooms", ["lobby"]).filter((r) => ROOM_NAME.test(r));
  if (!roomList.includes("lobby")) roomList.unshift("lobby");
  let current = params.get("room") || store.get("duplex.room", "lobby");
  if (!ROOM_NAME.test(current)) current = "lobby";
  if (!roomList.includes(current)) roomList.push(current);

  const token = params.get("token");
  const tokenUrl = params.get("token_url");
  let getToken;
  if (tokenUrl) {
    getToken = async () => {
      const response = await fetch(tokenUrl, { credentials: "include", cache: "no-store" });
      if (!response.ok) throw new Error(`${tokenUrl} answered ${response.status}`);
      return (await response.text()).trim();
    };
  } else if (token) {
    getToken = () => token;
  }
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const client = new duplex.Client(`${scheme}//${location.host}/ws`, {
    name: "web-chat",
    getToken,
    // A page whose origin the hub refuses (403) fails every attempt alike:
    // after 5, stop and say what to set.
    firstConnectAttempts: 5,
  });
  /** The last reconnect waits: [{attempt, delay (ms)}]. */
  const delays = [];
  /** This page's latest connection: {client, user} from `connected`. */
  let me = { client: null, user: "" };
  /** When the next attempt starts (ms since the epoch), while reconnecting. */
  let retryAt = null;
  /** The last close, {code, reason}. */
  let lastClose = null;
  /** The state as the page shows it: connecting, open, reconnecting, closed. */
  function hubState() {
    switch (client.state) {
      case "connected":
        return "open";
      case "disconnected":
        return "reconnecting";
      case "closed":
        return "closed";
      default:
        return "connecting";
    }
  }
  window.chat = { client, delays, duplex, hubState };

  /** client id -> display name, learnt from messages and signals. */
  const names = new Map();
  /** Client ids this page has had (one per connection). */
  const mine = new Set();
  /** room -> Subscription */
  const subs = new Map();
  /** room -> {entries, offsets, unread, present, typing} */
  const rooms = new Map();

  const channelOf = (room) => `chat:${room}`;

  function roomState(room) {
    let state = rooms.get(room);
    if (!state) {
      state = {
        entries: [], // {kind: "msg"|"note"|"pending", ...}
        offsets: new Set(),
        unread: 0,
        present: new Map(), // client -> user
        typing: new Map(), // client -> expiry (ms)
      };
      rooms.set(room, state);
    }
    return state;
  }

  /** The name this page shows for itself: the verified user, if any. */
  function ownName() {
    return me.user || myName;
  }

  /** The name shown for `client`: its verified `user` first, then the name
   * it claimed (anonymous only), then a placeholder. */
  function nameOf(client, user) {
    if (user) return user;
    if (mine.has(client)) return ownName();
    return names.get(client) || `guest·${String(client || "").slice(-4)}`;
  }

  // ---- connection state ----------------------------------------------------

  function renderState() {
    const el = $("#state");
    const text = $("#state-text");
    let label;
    const state = hubState();
    switch (state) {
      case "open":
        label = "live";
        break;
      case "connecting":
        label = "connecting…";
        break;
      case "reconnecting":
        if (retryAt) {
          const seconds = Math.max(1, Math.ceil((retryAt - Date.now()) / 1000));
          label = `reconnecting in ${seconds}s`;
        } else {
          label = "reconnecting…";
        }
        break;
      default:
        label = lastClose && lastClose.code !== 1000 ? `offline (${lastClose.code})` : "offline";
    }
    el.dataset.state = state === "reconnecting" && !navigator.onLine ? "offline" : state;
    el.dataset.hubState = state;
    document.body.dataset.hub = state;
    if (text.textContent !== label) text.textContent = label;
    el.title = state === "reconnecting" ? "Reconnect now" : state === "closed" ? "Connect" : "Connected to the hub";
  }

  $("#state").addEventListener("click", () => {
    if (client.state === "disconnected") client.retryNow();
    else if (client.state === "closed") client.connect().catch(() => {});
  });
  client.on("connecting", () => {
    retryAt = null;
    renderState();
  });
  client.on("disconnected", (close) => {
    lastClose = close;
    retryAt = close.willReconnect ? Date.now() + close.retryIn : null;
    if (close.willReconnect) {
      delays.push({ attempt: close.attempt, delay: close.retryIn });
      if (delays.length > 20) delays.shift();
    }
    renderState();
  });
  setInterval(renderState, 500);
  window.addEventListener("offline", renderState);

  // ---- rooms ---------------------------------------------------------------

  function saveRooms() {
    store.set("duplex.rooms", roomList);
    store.set("duplex.room", current);
  }

  function renderRooms() {
    const list = $("#rooms");
    list.replaceChildren();
    for (const room of roomList) {
      const state = roomState(room);
      const li = document.createElement("li");
      li.dataset.room = room;
      li.className = room === current ? "active" : "";
      const open = document.createElement("button");
      open.type = "button";
      open.className = "room-open";
      open.textContent = `# ${room}`;
      open.addEventListener("click", () => switchRoom(room));
      li.append(open);
      if (state.unread > 0) {
        const badge = document.createElement("span");
        badge.className = "unread";
        badge.textContent = state.unread > 99 ? "99+" : String(state.unread);
        li.append(badge);
      }
      if (roomList.length > 1) {
        const leave = document.createElement("button");
        leave.type = "button";
        leave.className = "room-leave";
        leave.title = `Leave #${room}`;
        leave.setAttribute("aria-label", `Leave #${room}`);
        leave.textContent = "×";
        leave.addEventListener("click", () => leaveRoom(room));
        li.append(leave);
      }
      list.append(li);
    }
    const unread = roomList.reduce((sum, r) => sum + roomState(r).unread, 0);
    document.title = unread > 0 ? `(${unread}) Duplex chat` : "Duplex chat";
  }

  function joinRoom(room) {
    roomState(room);
    const sub = client.subscribe(channelOf(room), { recent: HISTORY });
    subs.set(room, sub);
    sub.on("message", (msg) => onMessage(room, msg));
    sub.on("gap", () => onGap(room));
    sub.on("subscribed", () => onSubscribed(room));
    sub.on("join", (push) => onJoin(room, push));
    sub.on("leave", (push) => onLeave(room, push));
    sub.on("signal", (push) => onSignal(room, push));
    sub.on("error", ({ error }) => {
      addNote(room, `Could not join #${room}: ${error.message}`, "error");
    });
    sub.on("unsubscribed", ({ reason }) => {
      addNote(room, `The hub ended #${room}${reason ? `: ${reason}` : ""}.`, "error");
    });
  }

  function switchRoom(room) {
    if (!roomList.includes(room)) {
      roomList.push(room);
      joinRoom(room);
    }
    current = room;
    roomState(room).unread = 0;
    saveRooms();
    renderRooms();
    renderRoom();
    $("#text").focus();
  }

  function leaveRoom(room) {
    const index = roomList.indexOf(room);
    roomList = roomList.filter((r) => r !== room);
    const sub = subs.get(room);
    subs.delete(room);
    if (sub) sub.unsubscribe();
    rooms.delete(room);
    if (current === room) current = roomList[0];
    saveRooms();
    renderRooms();
    renderRoom();
    // Keyboard focus stays in the room list (the button it was on is gone).
    const next = $("#rooms").children[Math.min(index, roomList.length - 1)];
    if (next) next.querySelector(".room-open").focus();
  }

  const roomInput = $("#room-input");
  // A custom error stays until cleared: clear it as soon as the name is
  // edited, or the form would refuse every later submit.
  roomInput.addEventListener("input", () => roomInput.setCustomValidity(""));

  $("#join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = roomInput;
    const room = input.value.trim().replace(/^#/, "");
    if (!ROOM_NAME.test(room)) {
      input.setCustomValidity(ROOM_RULE);
      input.reportValidity();
      return;
    }
    input.setCustomValidity("");
    input.value = "";
    switchRoom(room);
  });

  // ---- messages ------------------------------------------------------------

  function formatTime(ms) {
    return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function messageElement(entry, previous) {
    const li = document.createElement("li");
    if (entry.kind === "note") {
      li.className = `note ${entry.tone || ""}`.trim();
      li.textContent = entry.text;
      return li;
    }
    li.className = entry.kind === "pending" ? "pending" : "msg";
    if (entry.mine) li.classList.add("mine");
    if (entry.failed) li.classList.add("failed");
    if (entry.kind === "msg") {
      li.dataset.offset = entry.offset;
      li.dataset.client = entry.client;
      // Consecutive messages of one person within 5 minutes form a group.
      if (previous && previous.kind === "msg" && previous.client === entry.client
        && previous.name === entry.name && entry.time - previous.time < 300000) {
        li.classList.add("cont");
      }
    } else {
      li.dataset.key = entry.key;
    }
    const meta = document.createElement("div");
    meta.className = "meta";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = entry.name;
    name.style.setProperty("--hue", hueOf(entry.name));
    const time = document.createElement("time");
    time.className = "time";
    if (entry.kind === "msg") {
      time.dateTime = new Date(entry.time).toISOString();
      time.title = new Date(entry.time).toLocaleString();
      time.textContent = formatTime(entry.time);
    } else {
      time.textContent = entry.failed ? "not sent" : "sending…";
    }
    meta.append(name, time);
    const text = document.createElement("div");
    text.className = "text";
    text.textContent = entry.text;
    li.append(meta, text);
    return li;
  }

  function hueOf(name) {
    let hash = 0;
    for (const ch of String(name)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
    return String(hash % 360);
  }

  function nearBottom(list) {
    return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  }

  function renderRoom() {
    $("#room-title").textContent = `# ${current}`;
    $("#text").placeholder = `Message #${current}`;
    const list = $("#messages");
    list.replaceChildren();
    const state = roomState(current);
    let previous = null;
    for (const entry of state.entries) {
      if (entry.kind === "pending") continue;
      list.append(messageElement(entry, previous));
      previous = entry;
    }
    for (const entry of state.entries) {
      if (entry.kind === "pending") list.append(messageElement(entry, null));
    }
    if (state.entries.length === 0) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = `No messages in #${current} yet. Say hi!`;
      list.append(li);
    }
    list.scrollTop = list.scrollHeight;
    renderPresence();
    renderTyping();
  }

  /** Adds `entry` to `room`, and to the page if the room is open. */
  function addEntry(room, entry) {
    const state = roomState(room);
    const shown = state.entries.filter((e) => e.kind !== "pending");
    const previous = entry.kind === "pending" ? null : shown[shown.length - 1] || null;
    state.entries.push(entry);
    if (state.entries.length > KEEP) state.entries.splice(0, state.entries.length - KEEP);
    if (room !== current) {
      if (entry.kind === "msg" && !entry.mine) {
        state.unread += 1;
        renderRooms();
      }
      return;
    }
    const list = $("#messages");
    const stick = nearBottom(list) || entry.mine;
    const empty = list.querySelector("li.empty");
    if (empty) empty.remove();
    // Pending messages stay at the bottom, under what arrives meanwhile.
    const firstPending = entry.kind === "pending" ? null : list.querySelector("li.pending");
    list.insertBefore(messageElement(entry, previous), firstPending);
    while (list.children.length > KEEP + 20) list.firstElementChild.remove();
    if (stick) list.scrollTop = list.scrollHeight;
  }

  function addNote(room, text, tone) {
    addEntry(room, { kind: "note", text, tone });
  }

  function removePending(room, key) {
    const state = roomState(room);
    state.entries = state.entries.filter((e) => !(e.kind === "pending" && e.key === key));
    if (room === current) {
      const li = $("#messages").querySelector(`li.pending[data-key="${CSS.escape(key)}"]`);
      if (li) li.remove();
    }
  }

  /** Pending messages waiting for their offset to arrive: offset -> [room, key]. */
  const awaiting = new Map();

  function onMessage(room, msg) {
    if (!rooms.has(room)) return;
    const state = roomState(room);
    const data = msg.data && typeof msg.data === "object" && !(msg.data instanceof Uint8Array) ? msg.data : {};
    const client = msg.from ? msg.from.client : "";
    const user = (msg.from && msg.from.user) || "";
    // The hub's `user` wins over the name the sender put in the data.
    const name = user || (mine.has(client) ? "" : cleanName(data.name)) || nameOf(client, "");
    if (client && !user && data.name && !mine.has(client)) names.set(client, cleanName(data.name));
    state.typing.delete(client);
    state.offsets.add(msg.offset);
    const waiting = awaiting.get(msg.channel + " " + msg.offset);
    if (waiting) {
      awaiting.delete(msg.channel + " " + msg.offset);
      removePending(room, waiting);
    }
    addEntry(room, {
      kind: "msg",
      offset: msg.offset,
      time: msg.time,
      client,
      name,
      text: typeof data.text === "string" ? data.text
        : msg.data instanceof Uint8Array ? `[${msg.data.length} bytes]` : JSON.stringify(msg.data),
      mine: mine.has(client),
    });
    if (room === current) {
      renderTyping();
      renderPresence();
    }
  }

  function onGap(room) {
    if (!rooms.has(room)) return;
    addNote(room, "Some messages could not be recovered: the history no longer reaches back to the last one seen here.", "gap");
  }

  function send(text) {
    const room = current;
    const channel = channelOf(room);
    const entry = { kind: "pending", key: `p${Math.random().toString(36).slice(2)}`, name: ownName(), text, mine: true };
    addEntry(room, entry);
    client.publish(channel, { name: ownName(), text }).then(
      ({ offset }) => {
        if (roomState(room).offsets.has(offset)) removePending(room, entry.key);
        else awaiting.set(channel + " " + offset, entry.key);
      },
      (error) => {
        entry.failed = true;
        const li = room === current && $("#messages").querySelector(`li.pending[data-key="${entry.key}"]`);
        if (li) {
          li.classList.add("failed");
          li.querySelector(".time").textContent = `not sent: ${error.message}`;
        }
      },
    );
  }

  $("#composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("#text");
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    send(text);
    stopTyping();
  });

  // ---- presence and names ----------------------------------------------------

  function renderPresence() {
    const state = roomState(current);
    const list = $("#presence");
    // An earlier connection of this page may linger on the hub until its
    // heartbeat times out: it is not listed.
    const people = Array.from(state.present, ([client, user]) => ({
      client,
      name: nameOf(client, user),
      me: client === me.client,
    }))
      .filter((p) => p.me || !mine.has(p.client))
      .sort((a, b) => (b.me - a.me) || a.name.localeCompare(b.name));
    list.replaceChildren(...people.map((p) => {
      const li = document.createElement("li");
      li.dataset.client = p.client;
      li.dataset.name = p.name;
      if (p.me) li.className = "me";
      const dot = document.createElement("span");
      dot.className = "avatar";
      dot.style.setProperty("--hue", hueOf(p.name));
      dot.textContent = p.name.slice(0, 1).toUpperCase();
      dot.setAttribute("aria-hidden", "true");
      const label = document.createElement("span");
      label.className = "who";
      label.textContent = p.me ? `${p.name} (you)` : p.name;
      li.append(dot, label);
      return li;
    }));
    $("#presence-count").textContent = String(people.length);
    $("#people-count").textContent = String(people.length);
  }

  // On narrow screens the presence list is a panel the "People" button
  // opens and closes.
  $("#people-toggle").addEventListener("click", () => {
    const open = !document.body.classList.contains("people-open");
    document.body.classList.toggle("people-open", open);
    $("#people-toggle").setAttribute("aria-expanded", String(open));
  });

  function greet(channel, kind) {
    client.signal(channel, { [kind]: true, name: ownName() });
  }

  client.on("connected", (reply) => {
    me = { client: reply.client, user: reply.user };
    mine.add(reply.client);
    renderName();
    renderState();
  });

  function onSubscribed(room) {
    if (!rooms.has(room)) return;
    const channel = channelOf(room);
    greet(channel, "hello");
    client.presence(channel).then((clients) => {
      const state = roomState(room);
      state.present = new Map(clients.map((c) => [c.client, c.user]));
      if (me.client) state.present.set(me.client, me.user || "");
      if (room === current) renderPresence();
    }, () => {});
  }

  function onJoin(room, push) {
    if (!rooms.has(room)) return;
    roomState(room).present.set(push.client, push.user);
    if (room === current) renderPresence();
  }

  function onLeave(room, push) {
    if (!rooms.has(room)) return;
    const state = roomState(room);
    state.present.delete(push.client);
    state.typing.delete(push.client);
    if (room === current) {
      renderPresence();
      renderTyping();
    }
  }

  function onSignal(room, push) {
    const data = push.data;
    if (!rooms.has(room) || !data || typeof data !== "object") return;
    const client = push.from.client;
    const state = roomState(room);
    if (typeof data.name === "string" && cleanName(data.name)) {
      // A claimed name counts for anonymous connections only.
      if (!push.from.user) names.set(client, cleanName(data.name));
      if (!state.present.has(client)) state.present.set(client, push.from.user);
    }
    if (data.hello) greet(push.channel, "here");
    if (data.typing === true) state.typing.set(client, Date.now() + TYPING_SHOWN);
    if (data.typing === false) state.typing.delete(client);
    if (room === current) {
      renderPresence();
      renderTyping();
    }
  }

  // ---- typing ----------------------------------------------------------------

  let typingSentAt = 0;

  function renderTyping() {
    const state = roomState(current);
    const now = Date.now();
    const who = [];
    for (const [client, until] of state.typing) {
      if (until < now) state.typing.delete(client);
      else who.push(nameOf(client, state.present.get(client)));
    }
    const el = $("#typing");
    let text = "";
    if (who.length === 1) text = `${who[0]} is typing…`;
    else if (who.length === 2) text = `${who[0]} and ${who[1]} are typing…`;
    else if (who.length > 2) text = `${who.length} people are typing…`;
    if (el.textContent !== text) el.textContent = text;
    el.classList.toggle("on", who.length > 0);
  }

  setInterval(renderTyping, 1000);

  function stopTyping() {
    if (typingSentAt) {
      client.signal(channelOf(current), { typing: false, name: ownName() });
      typingSentAt = 0;
    }
  }

  $("#text").addEventListener("input", (event) => {
    if (!event.target.value.trim()) {
      stopTyping();
      return;
    }
    const now = Date.now();
    if (now - typingSentAt > TYPING_EVERY) {
      typingSentAt = now;
      client.signal(channelOf(current), { typing: true, name: ownName() });
    }
  });

  // ---- the name ----------------------------------------------------------------

  const nameInput = $("#name-input");
  nameInput.value = myName;

  /** Shows the verified user (read-only) when signed in, else the typed name. */
  function renderName() {
    const verified = Boolean(me.user);
    nameInput.readOnly = verified;
    nameInput.value = ownName();
    $("#verified").hidden = !verified;
    renderPresence();
  }

  function rename() {
    if (me.user) {
      nameInput.value = me.user;
      return;
    }
    const name = cleanName(nameInput.value);
    if (!name || name === myName) {
      nameInput.value = myName;
      return;
    }
    myName = name;
    store.set("duplex.name", myName);
    for (const room of roomList) client.signal(channelOf(room), { name: ownName() });
    renderPresence();
  }

  $("#name-form").addEventListener("submit", (event) => {
    event.preventDefault();
    rename();
    nameInput.blur();
  });
  nameInput.addEventListener("change", rename);

  // ---- start ---------------------------------------------------------------------

  for (const room of roomList) joinRoom(room);
  saveRooms();
  renderRooms();
  renderRoom();
  renderState();
  client.on("error", ({ error }) => {
    if (error.code === "unreachable") addNote(current, error.message, "error");
  });
  client.connect().catch(() => {});
}

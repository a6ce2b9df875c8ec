// The cashier console: reads GET /pos/v1/events (Server-Sent Events) with fetch(), because EventSource
// cannot send the till's bearer token. Everything that arrives is treated as hostile: it is checked for
// its type and put on the page with textContent only, never as HTML.
"use strict";

(() => {
  const EVENTS = "/pos/v1/events";
  const TOKEN_KEY = "kiosk-edge.till-token";
  const TOKEN_RE = /^kpos_[A-Za-z0-9_-]{8,123}$/;
  const MAX_SCANS = 8;
  const MAX_ASSISTS = 6;
  const MAX_BUFFER = 64 * 1024;
  const STALE_MS = 40000; // the node sends a keep-alive every 15 s: two missed means the link is dead
  const RETRY_MIN_MS = 1000;
  const RETRY_MAX_MS = 30000;
  const EVICTED_RETRY_MS = 30000; // another screen took this stream's slot: do not fight it every second

  const SOURCES = { nfc: "Card tap", barcode: "Member barcode", typed: "Typed by the cashier" };
  const SCAN_KINDS = {
    gtin: "Product",
    reservation: "Reservation",
    receipt: "Receipt",
    unknown: "Unknown code",
    rejected: "Rejected scan",
  };
  const ALARMS = {
    outbox_full: "Storage full: sales may be refused",
    "nfc-reader_absent": "Card reader missing",
    "nfc-reader_error": "Card reader fault",
    scanner_absent: "Scanner missing",
    scanner_error: "Scanner fault",
    gpio_error: "Lights and button fault",
  };

  const $ = (id) => document.getElementById(id);
  let generation = 0;
  let controller = null;
  let retryTimer = 0;
  let staleTimer = 0;
  let countdownTimer = 0;
  let deadline = 0;
  let backoff = RETRY_MIN_MS;
  let memoryToken = null; // when sessionStorage is unavailable

  // -- the token (this tab only) --------------------------------------------------------------------

  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return null;
    }
  }

  function storeToken(token) {
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch {
      // storage disabled: the token lives in memory until the page is reloaded
    }
    memoryToken = token;
  }

  function currentToken() {
    return storedToken() || memoryToken;
  }

  function forgetToken() {
    memoryToken = null;
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // nothing stored
    }
  }

  // -- screens --------------------------------------------------------------------------------------

  function setStatus(state, text) {
    const status = $("status");
    status.dataset.state = state;
    status.textContent = text;
  }

  function stop() {
    generation += 1;
    if (controller) controller.abort();
    controller = null;
    clearTimeout(retryTimer);
    clearTimeout(staleTimer);
  }

  function showLogin(message) {
    stop();
    $("board").hidden = true;
    $("forget").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    const input = $("token");
    input.value = "";
    input.setAttribute("aria-invalid", message ? "true" : "false");
    input.focus();
    setStatus("idle", "Not connected");
  }

  function showBoard() {
    $("login").hidden = true;
    $("board").hidden = false;
    $("forget").hidden = false;
  }

  function clock() {
    return new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function item(className, parts) {
    const li = document.createElement("li");
    li.className = className;
    for (const [tag, cls, text] of parts) {
      const el = document.createElement(tag);
      el.className = cls;
      el.textContent = text;
      li.append(el);
    }
    return li;
  }

  function trim(list, max) {
    while (list.children.length > max) list.lastElementChild.remove();
  }

  function isText(value, max) {
    return typeof value === "string" && value.length > 0 && value.length <= max;
  }

  // -- events ---------------------------------------------------------------------------------------

  function showCustomer(data) {
    clearInterval(countdownTimer);
    const customer = $("customer");
    if (data.present === true && isText(data.masked, 16)) {
      const seconds = Number.isFinite(data.expires_in_s) ? Math.min(Math.max(data.expires_in_s, 0), 3600) : 0;
      customer.textContent = data.masked;
      customer.dataset.present = "true";
      $("customer-source").textContent = SOURCES[data.source] || "Identified";
      deadline = Date.now() + seconds * 1000;
      tick();
      countdownTimer = setInterval(tick, 1000);
    } else {
      nobody();
    }
  }

  function nobody() {
    clearInterval(countdownTimer);
    const customer = $("customer");
    customer.textContent = "Nobody";
    customer.dataset.present = "false";
    $("customer-source").textContent = "";
    $("countdown").textContent = "";
  }

  function tick() {
    const left = Math.round((deadline - Date.now()) / 1000);
    if (left <= 0) {
      nobody();
      return;
    }
    const seconds = String(left % 60).padStart(2, "0");
    $("countdown").textContent = `${Math.floor(left / 60)}:${seconds} left for the next sale`;
  }

  function addScan(data) {
    const kind = Object.hasOwn(SCAN_KINDS, data.kind) ? data.kind : "unknown";
    let detail = "";
    if (isText(data.value, 64)) detail = data.value;
    else if (isText(data.error, 120)) detail = data.error;
    const list = $("scans");
    list.prepend(
      item(`scan scan-${kind}`, [
        ["span", "time", clock()],
        ["strong", "kind", SCAN_KINDS[kind]],
        ["span", "value", detail],
      ]),
    );
    trim(list, MAX_SCANS);
    $("no-scans").hidden = true;
  }

  function addAssist(data) {
    const device = isText(data.device, 120) ? data.device : "button";
    const li = item("assist", [
      ["span", "time", clock()],
      ["strong", "kind", "Assistance requested"],
      ["span", "value", `(${device})`],
    ]);
    const done = document.createElement("button");
    done.type = "button";
    done.className = "done";
    done.textContent = "Done";
    done.addEventListener("click", () => {
      li.remove();
      assistsChanged();
    });
    li.append(done);
    const list = $("assists");
    list.prepend(li);
    trim(list, MAX_ASSISTS);
    assistsChanged();
  }

  function assistsChanged() {
    const active = $("assists").children.length > 0;
    $("assist-panel").dataset.active = String(active);
    $("no-assists").hidden = active;
    document.title = active ? "(!) Till console · kiosk-edge" : "Till console · kiosk-edge";
  }

  function alarmText(name) {
    if (Object.hasOwn(ALARMS, name)) return ALARMS[name];
    const cut = name.lastIndexOf("_");
    return cut > 0 ? `${name.slice(0, cut)}: ${name.slice(cut + 1)}` : name;
  }

  function showAlarms(data) {
    const active = Array.isArray(data.active) ? data.active.filter((a) => isText(a, 64)).slice(0, 20) : [];
    const list = $("alarms");
    list.replaceChildren(...active.map((name) => item("alarm", [["span", "value", alarmText(name)]])));
    $("alarms-panel").dataset.active = String(active.length > 0);
    $("no-alarms").hidden = active.length > 0;
  }

  // One SSE block ("event: x\ndata: {...}"); comments (": keep-alive") give null.
  function parse(block) {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;
      const cut = line.indexOf(":");
      const field = cut < 0 ? line : line.slice(0, cut);
      let value = cut < 0 ? "" : line.slice(cut + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    }
    if (data.length === 0) return null;
    try {
      const parsed = JSON.parse(data.join("\n"));
      return parsed && typeof parsed === "object" && !Array.isArray(parsed) ? { name, data: parsed } : null;
    } catch {
      return null;
    }
  }

  // Returns the end reason of an "end" event.
  function dispatch(event) {
    switch (event.name) {
      case "customer":
        showCustomer(event.data);
        break;
      case "scan":
        addScan(event.data);
        break;
      case "assist":
        addAssist(event.data);
        break;
      case "alarms":
        showAlarms(event.data);
        break;
      case "end":
        return isText(event.data.reason, 32) ? event.data.reason : "ended";
      default:
        break; // a newer node's event this page does not know
    }
    return null;
  }

  // -- the stream -----------------------------------------------------------------------------------

  function retry(delay) {
    const wait = delay || backoff;
    backoff = Math.min(backoff * 2, RETRY_MAX_MS);
    setStatus("retrying", `Connection lost: retrying in ${Math.round(wait / 1000)} s`);
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, wait);
  }

  function armStale(mine) {
    clearTimeout(staleTimer);
    staleTimer = setTimeout(() => {
      if (mine === generation && controller) controller.abort();
    }, STALE_MS);
  }

  async function connect() {
    const token = currentToken();
    if (!token) {
      showLogin("");
      return;
    }
    stop();
    const mine = generation;
    controller = new AbortController();
    setStatus("connecting", "Connecting…");
    let response;
    try {
      response = await fetch(EVENTS, {
        headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" },
        cache: "no-store",
        credentials: "omit",
        redirect: "error",
        signal: controller.signal,
      });
    } catch {
      if (mine === generation) retry();
      return;
    }
    if (mine !== generation) return;
    if (response.status === 401) {
      forgetToken();
      showLogin("The token was refused: it is mistyped, or the till was unpaired. Enter the current one.");
      return;
    }
    if (!response.ok || !response.body) {
      retry();
      return;
    }
    showBoard();
    setStatus("live", "Connected");
    backoff = RETRY_MIN_MS;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let ended = null;
    armStale(mine);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || mine !== generation) break;
        armStale(mine);
        buffer += value;
        let cut = buffer.indexOf("\n\n");
        while (cut >= 0) {
          const event = parse(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
          if (event) ended = dispatch(event) || ended;
          cut = buffer.indexOf("\n\n");
        }
        if (buffer.length > MAX_BUFFER) break; // not an event stream we understand
      }
    } catch {
      // aborted (stale link, disconnect) or the network failed: reconnect below
    }
    clearTimeout(staleTimer);
    if (mine !== generation) return;
    if (ended === "revoked") {
      forgetToken();
      showLogin("This till was unpaired or paired again: enter its new token.");
      return;
    }
    retry(ended === "evicted" ? EVICTED_RETRY_MS : 0);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token").value.trim();
      if (!TOKEN_RE.test(token)) {
        $("login-error").textContent = "That is not a till token: it starts with kpos_.";
        $("token").setAttribute("aria-invalid", "true");
        return;
      }
      storeToken(token);
      $("token").value = "";
      connect();
    });
    $("forget").addEventListener("click", () => {
      forgetToken();
      nobody();
      showLogin("");
    });
    connect();
  });
})();

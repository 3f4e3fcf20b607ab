// The inspector: conversations, each one's timeline, state, data, opt-out and pending timers,
// and the queues' depths. Read-only; polls every second. The management API's bearer token
// (when the gateway needs one) is kept in this page's memory only: never in storage, where
// any script of the origin could read it later; a reload asks for it again.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const el = Web.el;
  const API = "/inspector/api";
  const POLL_MS = 1000;
  const OLD_TOKEN_KEY = "sinchbot.inspector.token"; // where earlier versions kept it
  const STATS = [
    ["conversations", "conversations"],
    ["inbox", "inbox"],
    ["outbox", "outbox"],
    ["forward", "forward"],
    ["timers", "timers"],
    ["deferred", "deferred"],
    ["optouts", "opted out"],
  ];

  let token = "";
  let locked = false;
  let selected = conversationFromHash();
  let lastList = "";
  let lastDetail = "";

  function conversationFromHash() {
    const params = new URLSearchParams(window.location.hash.slice(1));
    return params.get("conv") || "";
  }

  function showError(message) {
    $("error").textContent = message || "";
    $("error").classList.toggle("hidden", !message);
  }

  async function get(path) {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const result = await Web.json(API + path, { headers });
    if (result.status === 401 || result.status === 403) {
      lock(result.status === 403 ? "That token was refused." : "");
      return null;
    }
    return result;
  }

  function lock(reason) {
    locked = true;
    $("auth").classList.remove("hidden");
    $("app").classList.add("hidden");
    showError(reason);
  }

  function unlock() {
    locked = false;
    $("auth").classList.add("hidden");
    $("app").classList.remove("hidden");
    $("forget-token").classList.toggle("hidden", !token);
  }

  // ------------------------------------------------------------------ stats

  async function loadStats() {
    const result = await get("/stats");
    if (result === null) return false;
    if (result.status !== 200) {
      showError((result.body && result.body.error) || `the inspector answered ${result.status}`);
      return true;
    }
    unlock();
    showError("");
    const s = result.body;
    $("simulator-link").classList.toggle("hidden", !s.simulator);
    const nodes = STATS.map(([name, label]) =>
      el("div", { class: "stat", "data-stat": name }, el("div", { class: "n" }, s.totals[name]), el("div", { class: "l" }, label)),
    );
    nodes.push(
      el("div", { class: "stat" + (s.dlq ? " bad" : ""), "data-stat": "dlq" }, el("div", { class: "n" }, s.dlq), el("div", { class: "l" }, "dead letters")),
    );
    const title = s.partitions
      .map((p) => `p${p.partition}: inbox ${p.inbox}, outbox ${p.outbox}, forward ${p.forward}, timers ${p.timers}, deferred ${p.deferred}`)
      .join("\n");
    $("stats").title = title;
    $("stats").replaceChildren(...nodes, el("div", { class: "stat" }, el("div", { class: "n" }, s.partitions.length), el("div", { class: "l" }, s.demo ? "partitions · demo" : "partitions")));
    return true;
  }

  // ------------------------------------------------------------------ conversations

  async function loadList() {
    const q = $("search").value.trim();
    const result = await get("/conversations?limit=200" + (q ? "&q=" + encodeURIComponent(q) : ""));
    if (result === null) return;
    if (result.status !== 200) {
      $("search-note").textContent = (result.body && result.body.error) || `error ${result.status}`;
      return;
    }
    $("search-note").textContent = "";
    const items = result.body.conversations;
    const key = JSON.stringify([items, selected]);
    if (key === lastList) return;
    lastList = key;
    const list = $("conversations");
    list.replaceChildren(
      ...items.map((c) =>
        el(
          "li",
          { class: c.key === selected ? "selected" : "", "data-key": c.key, onclick: () => select(c.key) },
          el("div", { class: "mono" }, c.key),
          el("div", { class: "when" }, Web.ago(c.last_activity)),
        ),
      ),
    );
    if (!items.length) list.append(el("li", { class: "muted" }, q ? "No conversation matches." : "No conversations yet."));
  }

  function select(key) {
    window.location.hash = "conv=" + encodeURIComponent(key);
  }

  // ------------------------------------------------------------------ one conversation

  function pairs(data, skip) {
    if (data === null || typeof data !== "object") return data === undefined ? "" : String(data);
    return Object.entries(data)
      .filter(([k, v]) => !(skip || []).includes(k) && v !== null && v !== undefined && v !== "")
      .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`)
      .join(" · ");
  }

  function describe(entry) {
    const d = entry.data || {};
    switch (entry.kind) {
      case "inbound":
        if (d.kind === "opt_out") return ["opt-out notification from the provider", pairs(d, ["kind", "received_at"])];
        return ["← " + (d.text || ""), pairs(d, ["text", "kind", "received_at"])];
      case "outbound":
        return ["→ " + (d.text || ""), pairs(d, ["text"])];
      case "sent":
        return ["handed to the provider", pairs(d)];
      case "receipt":
        return [
          el("span", {}, el("span", { class: "badge " + receiptClass(d.status), "data-status": d.status }, d.status), ` ${d.status_code ?? ""} ${d.status_meaning || ""}`),
          pairs(d, ["status", "status_code", "status_meaning"]),
        ];
      case "state":
        return [`${d.from ?? "∅"} → ${d.to ?? "∅"}`, ""];
      case "timer":
        return [`${d.name || "timer"} fired (${d.kind || "timer"})`, pairs(d, ["name", "kind"])];
      case "optout":
        return [`opted out via ${d.via || "?"}${d.word ? " (" + d.word + ")" : ""}`, pairs(d, ["via", "word"])];
      case "optin":
        return [`opted in via ${d.via || "?"}${d.word ? " (" + d.word + ")" : ""}`, pairs(d, ["via", "word"])];
      case "deferred":
        return [`deferred until ${d.until || "?"}`, pairs(d, ["until"])];
      default:
        return [pairs(d), ""];
    }
  }

  function receiptClass(status) {
    if (status === "delivered") return "ok";
    if (["failed", "rejected", "expired", "undeliverable", "cancelled"].includes(status)) return "bad";
    return "info";
  }

  function kindClass(kind) {
    return "badge kind-" + String(kind).replace(/[^a-z_]/gi, "");
  }

  function timelineTable(entries) {
    if (!entries.length) return el("p", { class: "muted" }, "The timeline is empty.");
    const rows = entries.map((entry) => {
      const [summary, detail] = describe(entry);
      return el(
        "tr",
        { "data-kind": entry.kind },
        el("td", { class: "at", title: Web.dateTime(entry.at) }, Web.time(entry.at)),
        el("td", { class: "kind" }, el("span", { class: kindClass(entry.kind) }, entry.kind)),
        el("td", {}, el("div", { class: "summary" }, summary), detail ? el("div", { class: "detail" }, detail) : null),
      );
    });
    return el("table", { class: "timeline", id: "timeline" }, el("tbody", {}, rows));
  }

  function messagesTable(messages) {
    const records = Object.values(messages || {});
    if (!records.length) return null;
    return [
      el("h2", {}, "Outbound messages"),
      el(
        "table",
        { class: "timeline", id: "messages" },
        el(
          "tbody",
          {},
          records.map((m) =>
            el(
              "tr",
              { "data-gw-id": m.gw_id },
              el("td", { class: "at" }, Web.time(Number(m.queued_at))),
              el("td", { class: "kind" }, el("span", { class: "badge " + receiptClass(m.status), "data-status": m.status }, m.status)),
              el(
                "td",
                {},
                el("div", {}, m.text || ""),
                el("div", { class: "detail" }, pairs({ code: m.status_code, meaning: m.status_meaning, channel: m.channel, segments: m.segments, encoding: m.encoding, origin: m.origin, gw_id: m.gw_id })),
              ),
            ),
          ),
        ),
      ),
    ];
  }

  function renderDetail(view) {
    const optout = view.optout
      ? el("span", { class: "badge bad", id: "optout" }, `opted out via ${view.optout.via}${view.optout.word ? " (" + view.optout.word + ")" : ""}${view.optout.at ? " at " + view.optout.at : ""}`)
      : el("span", { class: "badge ok", id: "optout" }, "subscribed");
    const timers = view.timers && view.timers.length
      ? el("ul", { id: "timers" }, view.timers.map((t) => el("li", {}, `${(t.ref && t.ref.name) || t.id} due ${Web.dateTime(t.due)}`, t.ref && t.ref.kind ? ` (${t.ref.kind})` : "")))
      : el("span", { class: "muted", id: "timers" }, "none");
    $("detail").replaceChildren();
    Web.append($("detail"), [
      el("h2", { class: "mono", id: "conversation-key" }, view.key),
      el(
        "dl",
        { class: "facts" },
        el("dt", {}, "state"), el("dd", { id: "state" }, view.state === null ? el("span", { class: "muted" }, "none") : view.state),
        el("dt", {}, "version"), el("dd", {}, view.version),
        el("dt", {}, "opt-out"), el("dd", {}, optout),
        el("dt", {}, "last activity"), el("dd", {}, Web.dateTime(view.last_activity)),
        el("dt", {}, "partition"), el("dd", {}, view.partition),
        el("dt", {}, "pending timers"), el("dd", {}, timers),
      ),
      el("h2", {}, "Data"),
      el("pre", { class: "data", id: "data" }, JSON.stringify(view.data, null, 2)),
      el("h2", { class: "spaced" }, "Timeline"),
      timelineTable(view.timeline || []),
      messagesTable(view.messages),
    ]);
  }

  async function loadDetail() {
    if (!selected) {
      if (lastDetail !== "") {
        lastDetail = "";
        $("detail").replaceChildren(el("p", { class: "muted" }, "Choose a conversation."));
      }
      return;
    }
    const result = await get("/conversations/" + encodeURIComponent(selected));
    if (result === null) return;
    if (result.status !== 200) {
      const message = (result.body && result.body.error) || `error ${result.status}`;
      const key = "error:" + message;
      if (key !== lastDetail) {
        lastDetail = key;
        $("detail").replaceChildren(el("h2", { class: "mono" }, selected), el("p", { class: "muted" }, message));
      }
      return;
    }
    const key = JSON.stringify(result.body);
    if (key === lastDetail) return;
    lastDetail = key;
    renderDetail(result.body);
  }

  // ------------------------------------------------------------------ start

  async function tick() {
    if (locked) return;
    if (!(await loadStats()) || locked) return;
    await Promise.all([loadList(), loadDetail()]);
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value.trim();
    $("token").value = "";
    locked = false;
    lastList = lastDetail = "";
    tick();
  });
  $("forget-token").addEventListener("click", () => {
    token = "";
    lock("");
  });
  $("search").addEventListener("input", () => { lastList = ""; loadList(); });
  window.addEventListener("hashchange", () => {
    selected = conversationFromHash();
    lastList = lastDetail = "";
    loadList();
    loadDetail();
  });
  try {
    sessionStorage.removeItem(OLD_TOKEN_KEY);
  } catch (_) {
    /* storage may be off: nothing was kept */
  }
  Web.every(POLL_MS, tick);
})();

// The simulator: one handset of the in-process sandbox. Polls its conversation every 500 ms
// and renders it as a phone would: bubbles, RCS cards/carousels/choices, MMS images, the
// provider's receipts as ticks, segments and encoding under each message.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const el = Web.el;
  const API = "/simulator/api";
  const POLL_MS = 500;
  const FAILED = new Set(["failed", "rejected", "expired", "undeliverable", "cancelled"]);
  const TICKS = { enroute: "✓", submitted: "✓✓", delivered: "✓✓" };

  let number = "";
  let lastRendered = "";
  let info = null;

  function showError(message) {
    const bar = $("error");
    bar.textContent = message || "";
    bar.classList.toggle("hidden", !message);
  }

  function handsetUrl(suffix) {
    return `${API}/handsets/${encodeURIComponent(number)}${suffix || ""}`;
  }

  function ourNumber() {
    return $("to").value || (info && info.default_number) || "";
  }

  // ------------------------------------------------------------------ rendering

  function statusNode(m) {
    const history = (m.history || []).map((h) => h.status + (h.code ? " " + h.code : ""));
    const failed = FAILED.has(m.status);
    const ticks = failed ? "✗" : TICKS[m.status] || "○";
    const label = m.status + (m.status_code ? " " + m.status_code : "");
    return el(
      "span",
      { class: "status", "data-status": m.status, title: history.join(" → ") || m.status },
      el("span", { class: "ticks" }, ticks),
      " ",
      el("span", { class: "history" }, label),
    );
  }

  function metaNode(m) {
    const kind = m.format && m.format !== "SMS" ? m.format + " · " : "";
    return el(
      "div",
      { class: "meta" },
      el("span", { class: "segments" }, `${kind}${Web.plural(m.segments, "segment")} · ${m.encoding}`),
      el("span", { class: "when" }, Web.time(m.time)),
      m.direction === "received" ? statusNode(m) : null,
    );
  }

  function images(urls) {
    const safe = (urls || []).map((url) => Web.safeUrl(url)).filter(Boolean);
    if (!safe.length) return null;
    return el(
      "div",
      { class: "mms-images" },
      safe.map((url) => el("img", { src: url, alt: "MMS image", loading: "lazy" })),
    );
  }

  // An action choice: a link only to http(s) pages and tel: numbers, else a dead button.
  function actionNode(label, href, kind) {
    if (!href) return el("button", { type: "button", disabled: true, "data-action": kind }, label);
    const attrs = { href, class: "action", "data-action": kind, rel: "noopener noreferrer" };
    if (kind === "url") attrs.target = "_blank";
    return el("a", attrs, label);
  }

  function bubble(text, extra) {
    return el("div", { class: "bubble" }, extra || null, text);
  }

  function choiceNodes(choices, m) {
    if (!choices || !choices.length) return null;
    return el(
      "div",
      { class: "choices" },
      choices.map((choice) => {
        if (choice.url_message) {
          const u = choice.url_message;
          return actionNode("Open " + (u.title || u.url), Web.safeUrl(u.url), "url");
        }
        if (choice.call_message) {
          const c = choice.call_message;
          const href = Web.safeUrl("tel:" + String(c.phone_number || ""), ["tel:"]);
          return actionNode("Call " + (c.title || c.phone_number || ""), href, "call");
        }
        if (choice.text_message) {
          const label = choice.text_message.text;
          const postback = choice.postback_data || label;
          return el(
            "button",
            { type: "button", class: "choice", "data-postback": postback, onclick: () => tap(m, label, postback) },
            label,
          );
        }
        const other = choice.location_message || {};
        return el("button", { type: "button", disabled: true }, "Location " + (other.title || other.label || "action"));
      }),
    );
  }

  function cardNode(card, m) {
    const media = card.media_message && Web.safeUrl(card.media_message.url);
    return el(
      "div",
      { class: "card" },
      media ? el("img", { src: media, alt: card.title || "card image", loading: "lazy" }) : null,
      el(
        "div",
        { class: "card-body" },
        card.title ? el("div", { class: "title" }, card.title) : null,
        card.description ? el("div", { class: "description" }, card.description) : null,
      ),
      choiceNodes(card.choices, m),
    );
  }

  function rcsNodes(m) {
    const r = m.rcs || {};
    if (r.text_message) return bubble(r.text_message.text);
    if (r.choice_message) {
      return [bubble(r.choice_message.text_message.text), choiceNodes(r.choice_message.choices, m)];
    }
    if (r.card_message) return cardNode(r.card_message, m);
    if (r.carousel_message) {
      const c = r.carousel_message;
      return [
        el("div", { class: "carousel" }, (c.cards || []).map((card) => cardNode(card, m))),
        choiceNodes(c.choices, m),
      ];
    }
    if (r.media_message) return images([r.media_message.url]);
    return bubble(m.text);
  }

  function messageNode(m) {
    const pending = m.direction === "received" && !m.final;
    const classes = ["msg", m.direction];
    if (pending) classes.push("pending");
    if (m.direction === "received" && FAILED.has(m.status)) classes.push("undelivered");
    let body;
    if (m.direction === "received" && m.rcs) {
      body = rcsNodes(m);
    } else if (m.direction === "received") {
      const subject = m.subject ? el("span", { class: "subject" }, m.subject) : null;
      body = [images(m.media), m.text || subject ? bubble(m.text, subject) : null];
    } else {
      const note = [];
      if (m.choice !== null && m.choice !== undefined) note.push("tapped");
      if (m.attachments) note.push(Web.plural(m.attachments, "attachment"));
      body = bubble(m.text, note.length ? el("span", { class: "subject" }, note.join(" · ")) : null);
    }
    return el(
      "div",
      {
        class: classes.join(" "),
        "data-direction": m.direction,
        "data-id": m.id || "",
        "data-format": m.format,
        "data-status": m.status || "",
      },
      body,
      metaNode(m),
    );
  }

  function render(view) {
    const key = JSON.stringify(view);
    if (key === lastRendered) return;
    lastRendered = key;
    const thread = $("thread");
    const nearBottom = thread.scrollHeight - thread.scrollTop - thread.clientHeight < 80;
    thread.replaceChildren();
    if (!view.messages.length) {
      thread.append(el("div", { class: "empty" }, "No messages yet.", el("br"), "Say hello to the bot below."));
    }
    for (const m of view.messages) thread.append(messageNode(m));
    if (nearBottom || thread.dataset.scrolled !== number) {
      thread.scrollTop = thread.scrollHeight;
      thread.dataset.scrolled = number;
    }
    if (document.activeElement !== $("rcs")) $("rcs").checked = view.rcs;
  }

  function renderHeader() {
    const ours = ourNumber();
    $("peer").textContent = ours || "our number";
    $("me").textContent = "this phone: " + number;
    const link = "/inspector#conv=" + encodeURIComponent(`${ours}:${number}`);
    $("open-inspector").href = link;
  }

  function renderHandsets() {
    const list = $("handsets");
    list.replaceChildren();
    for (const h of (info && info.handsets) || []) {
      list.append(
        el(
          "li",
          {},
          el(
            "button",
            { type: "button", onclick: () => switchTo(h.number) },
            h.number,
            el("span", { class: "muted" }, ` · ${h.sent} sent · ${h.received} received`),
          ),
        ),
      );
    }
  }

  // ------------------------------------------------------------------ actions

  async function refresh() {
    if (!number) return;
    const { status, body } = await Web.json(handsetUrl());
    if (status !== 200) {
      showError((body && body.error) || `the simulator answered ${status}`);
      return;
    }
    showError("");
    render(body);
  }

  async function loadInfo() {
    const { status, body } = await Web.json(`${API}/info`);
    if (status !== 200) {
      showError((body && body.error) || `the simulator answered ${status}`);
      return;
    }
    const first = info === null;
    info = body;
    if (first) {
      const select = $("to");
      select.replaceChildren(...body.numbers.map((n) => el("option", { value: n }, n)));
      select.value = body.default_number;
      renderHeader();
    }
    renderHandsets();
  }

  // Messages leave one at a time, in the order they were sent.
  let sending = Promise.resolve(true);

  function post(payload) {
    sending = sending.then(() => postNow(payload), () => postNow(payload));
    return sending;
  }

  async function postNow(payload) {
    const { status, body } = await Web.json(handsetUrl("/messages"), { method: "POST", body: payload });
    if (status !== 201) {
      showError((body && body.error) || `sending failed (${status})`);
      return false;
    }
    showError("");
    await refresh();
    return true;
  }

  async function tap(m, label, postback) {
    await post({
      content: label,
      to: m.peer || ourNumber(),
      choice: { message_id: m.message_id, postback_data: postback },
    });
  }

  function readFile(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  async function send(event) {
    event.preventDefault();
    const input = $("text");
    const content = input.value;
    const file = $("attach").files[0];
    if (!content.trim() && !file) return;
    const payload = { content, to: ourNumber() };
    if (file) {
      payload.media = [{ content_type: file.type || "image/jpeg", content: await readFile(file), name: file.name }];
    }
    // Clear at once (the next message may be typed while this one is on its way); give the
    // text back if sending failed.
    input.value = "";
    $("attach").value = "";
    updateComposerInfo();
    if (!(await post(payload)) && !input.value) input.value = content;
    input.focus();
  }

  function updateComposerInfo() {
    const file = $("attach").files[0];
    const length = $("text").value.length;
    const parts = [];
    if (length) parts.push(Web.plural(length, "character"));
    if (file) parts.push("MMS with " + file.name);
    $("composer-info").textContent = parts.join(" · ");
  }

  function switchTo(value) {
    number = value.trim();
    $("number").value = number;
    lastRendered = "";
    try {
      localStorage.setItem("sinchbot.simulator.number", number);
    } catch (_) {
      /* storage may be off */
    }
    const url = new URL(window.location.href);
    url.searchParams.set("number", number);
    history.replaceState(null, "", url);
    renderHeader();
    refresh();
  }

  async function setRcs() {
    const { status, body } = await Web.json(handsetUrl(), { method: "PUT", body: { rcs: $("rcs").checked } });
    if (status !== 200) showError((body && body.error) || `could not change RCS (${status})`);
    else lastRendered = "";
  }

  // ------------------------------------------------------------------ start

  const params = new URLSearchParams(window.location.search);
  let stored = null;
  try {
    stored = localStorage.getItem("sinchbot.simulator.number");
  } catch (_) {
    stored = null;
  }
  number = params.get("number") || stored || $("number").value;
  $("number").value = number;
  $("number").addEventListener("change", () => switchTo($("number").value));
  $("to").addEventListener("change", () => { renderHeader(); });
  $("rcs").addEventListener("change", setRcs);
  $("composer").addEventListener("submit", send);
  $("text").addEventListener("input", updateComposerInfo);
  $("attach").addEventListener("change", updateComposerInfo);
  renderHeader();
  loadInfo().then(() => {
    Web.every(POLL_MS, refresh);
    Web.every(2000, loadInfo);
  });
})();

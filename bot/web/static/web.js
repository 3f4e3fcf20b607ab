// Shared helpers of the sinchbot pages: building DOM nodes (text only, never HTML from data),
// JSON requests and formatting.
"use strict";

const Web = {
  /** An element: el("div", {class: "x", onclick: f}, "text", child, [more]). */
  el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    Web.append(node, children);
    return node;
  },

  append(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  },

  /**
   * ``value`` as an absolute URL when its scheme is one of ``schemes`` (default http and
   * https), else null: message data never becomes a javascript:, data: or relative link.
   */
  safeUrl(value, schemes) {
    if (typeof value !== "string") return null;
    let url;
    try {
      url = new URL(value);
    } catch (_) {
      return null;
    }
    return (schemes || ["http:", "https:"]).includes(url.protocol) ? url.href : null;
  },

  /** fetch → {status, body}; body is the parsed JSON (or null). Never throws on HTTP errors. */
  async json(url, options) {
    const opts = Object.assign({ headers: {} }, options || {});
    if (opts.body !== undefined && typeof opts.body !== "string") {
      opts.body = JSON.stringify(opts.body);
      opts.headers["Content-Type"] = "application/json";
    }
    const response = await fetch(url, opts);
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    return { status: response.status, body };
  },

  time(epochSeconds) {
    if (!epochSeconds) return "";
    return new Date(epochSeconds * 1000).toLocaleTimeString([], { hour12: false });
  },

  dateTime(epochSeconds) {
    if (!epochSeconds) return "";
    const d = new Date(epochSeconds * 1000);
    return d.toLocaleDateString() + " " + d.toLocaleTimeString([], { hour12: false });
  },

  ago(epochSeconds) {
    if (!epochSeconds) return "";
    const s = Math.max(0, Date.now() / 1000 - epochSeconds);
    if (s < 60) return Math.round(s) + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  },

  plural(n, word) {
    return n + " " + word + (n === 1 ? "" : "s");
  },

  /** Run fn now and every ms milliseconds, never overlapping itself. */
  every(ms, fn) {
    let stopped = false;
    const loop = async () => {
      if (stopped) return;
      try {
        await fn();
      } catch (err) {
        console.error(err);
      }
      if (!stopped) setTimeout(loop, ms);
    };
    loop();
    return () => { stopped = true; };
  },
};

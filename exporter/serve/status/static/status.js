// Live updates for the status pages: no framework, no build step.
// The server renders every page and every changed row (escaped there); this script only
// places them, keeps "x ago" current, and says when the page is disconnected.
"use strict";

(function () {
  const body = document.body;
  const streamPath = body.dataset.stream;
  let lastId = body.dataset.eventId || "";

  function agoText(since) {
    const seconds = Math.floor((Date.now() - Date.parse(since)) / 1000);
    if (seconds < 0) return "in the future";
    if (seconds < 60) return seconds + " s ago";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min ago";
    if (seconds < 2 * 86400) return Math.floor(seconds / 3600) + " h ago";
    return Math.floor(seconds / 86400) + " days ago";
  }

  function refreshAgo(root) {
    for (const span of root.querySelectorAll(".ago[data-since]")) {
      span.textContent = agoText(span.dataset.since);
    }
  }

  function fromHtml(markup) {
    // A template's content is inert: nothing in it loads or runs while it is parsed.
    const template = document.createElement("template");
    template.innerHTML = markup;
    return template.content;
  }

  function setSnapshot(markup) {
    const line = document.getElementById("snapshot");
    if (line && typeof markup === "string") {
      line.replaceChildren(fromHtml(markup));
    }
  }

  function applyOverview(data) {
    const tbody = document.getElementById("rows");
    if (!tbody) return;
    const byKey = new Map();
    for (const row of tbody.children) byKey.set(row.dataset.key, row);
    for (const [key, markup] of Object.entries(data.rows || {})) {
      const fresh = fromHtml(markup).firstElementChild;
      const old = byKey.get(key);
      if (old) old.replaceWith(fresh);
      else tbody.appendChild(fresh);
      byKey.set(key, fresh);
    }
    if (Array.isArray(data.order)) {
      const wanted = new Set(data.order);
      for (const [key, row] of byKey) {
        if (!wanted.has(key)) {
          row.remove();
          byKey.delete(key);
        }
      }
      // Rows that did not change keep their relative order (the sort key is in the row), so
      // only the changed rows move: each goes just before its successor in the new order,
      // placed from the end. A 2,000-row table then costs one or two moves, not 2,000.
      const changed = new Set(Object.keys(data.rows || {}));
      for (let i = data.order.length - 1; i >= 0; i--) {
        const row = byKey.get(data.order[i]);
        if (!row || !changed.has(data.order[i])) continue;
        const next = i + 1 < data.order.length ? byKey.get(data.order[i + 1]) || null : null;
        if (row.nextElementSibling !== next || row.parentNode !== tbody) {
          tbody.insertBefore(row, next);
        }
      }
    }
    setSnapshot(data.snapshot);
    refreshAgo(document);
  }

  let fetching = null;
  let again = false;
  function reloadMain() {
    // The organization page's record lists live in the database: fetch the page again.
    if (fetching) {
      again = true;
      return;
    }
    fetching = fetch(window.location.pathname, { cache: "no-store", credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (text) {
        const doc = new DOMParser().parseFromString(text, "text/html");
        const main = doc.getElementById("main");
        const mine = document.getElementById("main");
        if (main && mine) mine.replaceChildren(...main.childNodes);
        refreshAgo(document);
      })
      .catch(function () {
        showStale(true);
      })
      .finally(function () {
        fetching = null;
        if (again) {
          again = false;
          reloadMain();
        }
      });
  }

  function showStale(stale) {
    const notice = document.getElementById("stale");
    const live = document.getElementById("live");
    if (notice) notice.hidden = !stale;
    if (live) live.hidden = stale;
    body.dataset.connected = stale ? "false" : "true";
  }

  let source = null;
  function connect() {
    if (!streamPath || typeof EventSource === "undefined") return;
    const url = streamPath + "?since=" + encodeURIComponent(lastId);
    source = new EventSource(url);
    source.onopen = function () {
      showStale(false);
    };
    source.onerror = function () {
      showStale(true);
      // CONNECTING: the browser retries by itself (retry: from the server). CLOSED: the
      // server refused (too many streams, say); try again later, as Retry-After asks.
      if (source.readyState === EventSource.CLOSED) {
        source = null;
        window.setTimeout(connect, 10000);
      }
    };
    source.addEventListener("overview", function (message) {
      lastId = message.lastEventId || lastId;
      applyOverview(JSON.parse(message.data));
    });
    source.addEventListener("organization", function (message) {
      lastId = message.lastEventId || lastId;
      const data = JSON.parse(message.data);
      const cards = document.getElementById("integrations");
      if (cards && typeof data.integrations === "string") {
        cards.replaceChildren(fromHtml(data.integrations));
        refreshAgo(cards);
      }
      if (data.changed) reloadMain();
      else setSnapshot(data.snapshot);
    });
  }

  refreshAgo(document);
  window.setInterval(function () {
    refreshAgo(document);
  }, 10000);
  connect();
})();

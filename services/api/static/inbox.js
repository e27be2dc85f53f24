// The inbox's own script: sign-in, actions, countdowns, keyboard shortcuts and live updates.
// No framework, no build step, nothing inline: a live refresh asks the page's own address with
// `HX-Request: true` and puts the part that changes in place.
(function () {
  "use strict";

  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const announce = (text) => {
    const region = document.getElementById("announce");
    if (region) region.textContent = text;
  };

  async function send(method, url, body) {
    const headers = { "X-CSRF-Token": csrf(), Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let answer = {};
    try {
      answer = await response.json();
    } catch (_) {
      answer = {};
    }
    return { status: response.status, answer };
  }

  // -- sign in and out ------------------------------------------------------------------------

  function signIn(form) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const problem = form.querySelector("[data-problem]");
      problem.textContent = "";
      const { status, answer } = await send("POST", "/api/session", {
        email: form.email.value,
        password: form.password.value,
      });
      if (status === 200) {
        window.location.assign(form.dataset.next || "/inbox");
        return;
      }
      problem.textContent = answer.error || "Signing in failed (" + status + ")";
      form.password.focus();
    });
  }

  function signOut(button) {
    button.addEventListener("click", async () => {
      await send("DELETE", "/api/session");
      window.location.assign("/login");
    });
  }

  function status(select) {
    select.addEventListener("change", async () => {
      const url = "/api/people/" + encodeURIComponent(select.dataset.person) + "/status?wait=5";
      const { answer } = await send("POST", url, { status: select.value });
      const said =
        answer.status === "applied"
          ? "You are " + select.value
          : "Status not changed: " + (answer.reason || answer.error || "no answer yet");
      const outcome = document.querySelector("[data-outcome]");
      if (outcome) {
        outcome.textContent = said;
        outcome.dataset.kind = answer.status === "applied" ? "applied" : "rejected";
      }
      select.dataset.applied = answer.status === "applied" ? select.value : "";
      announce(said);
    });
  }

  // -- countdowns in business time ------------------------------------------------------------
  // The server says how much business time is left and whether the clock runs now; the page
  // ticks a running clock down, and asks the server again when the calendar opens or closes.

  const started = performance.now();

  function tick() {
    const now = performance.now();
    let stale = false;
    document.querySelectorAll("[data-countdown]").forEach((el) => {
      if (!el.dataset.t0) el.dataset.t0 = String(now);
      const clock = el.dataset.clock;
      const base = Number(el.dataset.seconds || 0);
      const passed = (now - Number(el.dataset.t0)) / 1000;
      const changes = el.dataset.changes ? Date.parse(el.dataset.changes) : NaN;
      if (!Number.isNaN(changes) && Date.now() >= changes) stale = true;
      const label = el.querySelector("[data-label]");
      if (clock === "running") {
        const left = base - passed;
        if (left <= 0) {
          el.dataset.clock = "overdue";
          el.dataset.seconds = "0";
          el.dataset.t0 = String(now);
          el.className = "countdown overdue";
          el.insertAdjacentHTML("afterbegin", '<strong class="flag">Overdue</strong> ');
          const row = el.closest("[data-row]");
          if (row) row.classList.add("overdue");
          stale = true;
        } else if (label) {
          label.textContent = duration(left) + " left";
        }
      } else if (clock === "overdue" && label && el.dataset.running !== "no") {
        if (Number.isNaN(changes) || Date.now() < changes) label.textContent = "overdue by " + duration(base + passed);
      }
    });
    if (stale && now - started > 2000) refreshAll();
  }

  function duration(seconds) {
    let total = Math.max(0, Math.floor(seconds));
    const days = Math.floor(total / 86400);
    total -= days * 86400;
    const hours = Math.floor(total / 3600);
    total -= hours * 3600;
    const minutes = Math.floor(total / 60);
    const secs = total - minutes * 60;
    const two = (n) => String(n).padStart(2, "0");
    if (days) return days + "d " + hours + "h";
    if (hours) return hours + "h " + two(minutes) + "m";
    if (minutes) return minutes + "m " + two(secs) + "s";
    return secs + "s";
  }

  // -- refreshing what changed ------------------------------------------------------------------

  const timers = new Map();

  function refresh(container, delay) {
    if (timers.has(container)) return;
    timers.set(
      container,
      setTimeout(async () => {
        timers.delete(container);
        const focused = document.activeElement && document.activeElement.closest("[data-row]");
        const keep = focused ? focused.dataset.id : null;
        try {
          const response = await fetch(container.dataset.liveRefresh, {
            headers: { "HX-Request": "true" },
            credentials: "same-origin",
            redirect: "manual",
          });
          if (response.type === "opaqueredirect") {
            window.location.reload(); // signed out meanwhile: the page itself goes to sign in
            return;
          }
          if (!response.ok) return;
          container.innerHTML = await response.text();
        } catch (_) {
          return; // the api is out of reach: the stream's reconnection will ask again
        }
        if (keep) {
          const again = container.querySelector('[data-row][data-id="' + keep + '"] a.open');
          if (again) again.focus();
        }
        container.dispatchEvent(new CustomEvent("inbox:refreshed", { bubbles: true }));
      }, delay)
    );
  }

  function refreshAll(delay) {
    document.querySelectorAll("[data-live-refresh]").forEach((el) => refresh(el, delay || 150));
  }

  // -- actions ---------------------------------------------------------------------------------

  const DONE = {
    claim: "Claimed",
    "mark-responded": "Marked responded",
    pause: "Paused",
    resume: "Resumed",
    resolve: "Resolved",
    reassign: "Reassigned",
    acknowledge: "Acknowledged",
  };

  async function act(conversationId, verb, body) {
    const outcome = document.querySelector("[data-outcome]");
    const show = (text, kind) => {
      if (outcome) {
        outcome.textContent = text;
        outcome.dataset.kind = kind;
      }
      announce(text);
    };
    show("Sending…", "pending");
    const url = "/api/conversations/" + encodeURIComponent(conversationId) + "/" + verb + "?wait=5";
    let { status, answer } = await send("POST", url, body || {});
    if (status === 202 && answer.outcome_url) {
      for (let i = 0; i < 20 && answer.status === "pending"; i++) {
        await new Promise((resolve) => setTimeout(resolve, 500));
        ({ status, answer } = await send("GET", answer.outcome_url));
      }
    }
    if (answer.status === "applied") {
      show(DONE[verb], "applied");
    } else if (answer.status === "rejected") {
      show("Refused: " + (answer.reason || answer.code || "no reason given"), "rejected");
    } else if (answer.status === "pending") {
      show("Sent; the router has not answered yet.", "pending");
    } else {
      show("Not sent: " + (answer.error || "error " + status), "rejected");
    }
    refreshAll(50);
  }

  function bindActions(root) {
    root.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      if (!button) return;
      event.preventDefault();
      act(button.dataset.conversationId, button.dataset.action);
    });
    root.addEventListener("submit", (event) => {
      const form = event.target.closest("form[data-action]");
      if (!form) return;
      event.preventDefault();
      const body = {};
      new FormData(form).forEach((value, key) => {
        if (value !== "") body[key] = value;
      });
      act(form.dataset.conversationId, form.dataset.action, body);
    });
  }

  // -- keyboard --------------------------------------------------------------------------------

  function typing(target) {
    return target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
  }

  function keys() {
    document.addEventListener("keydown", (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
      const rows = Array.from(document.querySelectorAll("[data-row] a.open"));
      const current = document.activeElement && document.activeElement.closest("[data-row]");
      const index = current ? rows.indexOf(current.querySelector("a.open")) : -1;
      if (event.key === "j" || event.key === "k") {
        if (!rows.length) return;
        const next = event.key === "j" ? Math.min(index + 1, rows.length - 1) : Math.max(index - 1, 0);
        rows[index < 0 ? 0 : next].focus();
        event.preventDefault();
      } else if (event.key === "?") {
        const help = document.querySelector("[data-help]");
        if (help) help.click();
      } else if ((event.key === "c" || event.key === "r") && current) {
        const verb = event.key === "c" ? "claim" : "mark-responded";
        if (verb === "claim" && !("claim" in current.dataset)) return;
        if (verb === "mark-responded" && !("respond" in current.dataset)) return;
        act(current.dataset.id, verb);
        event.preventDefault();
      } else if (document.body.dataset.conversation) {
        const button = document.querySelector('[aria-keyshortcuts="' + event.key + '"]');
        if (!button) return;
        if (button.closest("form")) button.closest("form").querySelector("input:not([type=hidden]), select").focus();
        else button.click();
        event.preventDefault();
      }
    });
    const help = document.querySelector("[data-help]");
    if (help) {
      help.addEventListener("click", () => {
        const list = document.getElementById(help.getAttribute("aria-controls"));
        list.hidden = !list.hidden;
        help.setAttribute("aria-expanded", String(!list.hidden));
      });
    }
  }

  // -- live ------------------------------------------------------------------------------------
  // One EventSource per page: it resumes from its Last-Event-ID by itself after a cut.

  function live() {
    const containers = document.querySelectorAll("[data-live-refresh]");
    const state = document.querySelector("[data-live-state]");
    if (!containers.length || typeof EventSource === "undefined") {
      if (state) state.textContent = "";
      return;
    }
    const mine = document.body.dataset.conversation;
    window.inboxEvents = [];
    const source = new EventSource("/api/stream?max_seconds=300");
    const changed = (event) => {
      let data = {};
      try {
        data = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      document.body.dataset.lastEvent = event.lastEventId;
      // What this page heard, newest last (a few hundred): for a person's browser tools and the tests.
      window.inboxEvents.push({ id: event.lastEventId, type: event.type, seq: data.seq, conversation: data.conversation_id });
      if (window.inboxEvents.length > 500) window.inboxEvents.shift();
      if (mine && data.conversation_id !== mine) return;
      containers.forEach((el) => {
        refresh(el, Number(el.dataset.liveEvery || 150));
        if (mine) setTimeout(() => refresh(el, 0), 1500); // the timeline's row may be written just after
      });
    };
    source.addEventListener("timeline", changed);
    source.addEventListener("outcome", changed);
    let opened = false;
    source.addEventListener("open", () => {
      // What changed between this page's rendering and the stream's start is in no event: look once.
      if (!opened) refreshAll(0);
      opened = true;
      if (state) state.textContent = "live";
      document.body.dataset.live = "open";
    });
    source.addEventListener("error", () => {
      if (state) state.textContent = "reconnecting…";
      document.body.dataset.live = "reconnecting";
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("form[data-sign-in]").forEach(signIn);
    document.querySelectorAll("[data-sign-out]").forEach(signOut);
    document.querySelectorAll("select[data-status]").forEach(status);
    bindActions(document.getElementById("main") || document.body);
    keys();
    live();
    setInterval(tick, 1000);
    tick();
  });
})();

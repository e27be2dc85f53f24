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
          const html = await response.text();
          const draft = keepDraft(container);
          container.innerHTML = html;
          restoreDraft(container, draft);
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

  // -- replies ---------------------------------------------------------------------------------
  // The reply box: a live count against the platform's limit, the draft kept across live
  // refreshes (and reloads: sessionStorage), and one key per draft, so sending it again after a
  // lost answer posts it once.

  function tell(text, kind, link) {
    const outcome = document.querySelector("[data-outcome]");
    if (outcome) {
      outcome.textContent = text;
      outcome.dataset.kind = kind;
      if (link && link.href) {
        const a = document.createElement("a");
        a.href = link.href;
        a.rel = "noopener noreferrer";
        a.target = "_blank";
        a.textContent = link.text;
        outcome.append(" ", a);
      }
    }
    announce(text);
  }

  function newKey() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return "reply-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  const draftKey = (form) => "stayhuman:reply:" + form.dataset.conversationId;

  function saveDraft(form) {
    const box = form.querySelector("textarea[name=text]");
    try {
      if (box.value) sessionStorage.setItem(draftKey(form), JSON.stringify({ text: box.value, key: form.dataset.key || "", keyFor: form.dataset.keyFor || "" }));
      else sessionStorage.removeItem(draftKey(form));
    } catch (_) {
      // storage refused (private mode, full): the draft lives in the page only
    }
  }

  function limit(form) {
    const way = form.querySelector('input[name="method"]:checked') || form.querySelector('input[name="method"][type="hidden"]');
    return Number((way && way.dataset.max) || form.querySelector("textarea[name=text]").dataset.max || 0);
  }

  function count(form) {
    const box = form.querySelector("textarea[name=text]");
    const shown = form.querySelector("[data-reply-count]");
    if (!box || !shown) return;
    const max = limit(form);
    const used = Array.from(box.value).length; // characters as platforms count them, not UTF-16 units
    const over = max > 0 && used > max;
    shown.textContent =
      used.toLocaleString("en") + " of " + max.toLocaleString("en") + " characters" +
      (over ? ": " + (used - max).toLocaleString("en") + " too many" : "");
    shown.dataset.over = over ? "yes" : "no";
    box.setAttribute("aria-invalid", over ? "true" : "false");
    const button = form.querySelector("[data-reply-send]");
    if (button) button.disabled = over || !box.value.trim() || form.dataset.sending === "yes";
  }

  function keepDraft(root) {
    const form = root.querySelector("form[data-reply]");
    if (!form) return null;
    const box = form.querySelector("textarea[name=text]");
    const way = form.querySelector('input[name="method"]:checked');
    const focused = document.activeElement;
    return {
      text: box.value,
      start: box.selectionStart,
      end: box.selectionEnd,
      focus: focused === box ? "text" : focused && focused.name === "method" && form.contains(focused) ? "method" : "",
      method: way ? way.value : null,
      key: form.dataset.key || "",
      keyFor: form.dataset.keyFor || "",
      sending: form.dataset.sending || "",
    };
  }

  function restoreDraft(root, draft) {
    const form = root.querySelector("form[data-reply]");
    if (!form) return;
    const box = form.querySelector("textarea[name=text]");
    if (!draft) {
      try {
        draft = JSON.parse(sessionStorage.getItem(draftKey(form)) || "null");
      } catch (_) {
        draft = null;
      }
    }
    if (draft) {
      box.value = draft.text || "";
      form.dataset.key = draft.key || "";
      form.dataset.keyFor = draft.keyFor || "";
      form.dataset.sending = draft.sending || "";
      const way = draft.method && form.querySelector('input[name="method"][value="' + draft.method + '"]');
      if (way) way.checked = true;
      if (draft.focus === "text") {
        box.focus();
        if (typeof draft.start === "number") box.setSelectionRange(draft.start, draft.end);
      } else if (draft.focus === "method") {
        (form.querySelector('input[name="method"]:checked') || box).focus();
      }
    }
    count(form);
  }

  async function reply(form, body, done) {
    const conversation = form.dataset.conversationId;
    const platform = form.dataset.platform || "the platform";
    form.dataset.sending = "yes";
    if (form.matches("[data-reply]")) count(form);
    tell("Sending your reply…", "pending");
    const url = "/api/conversations/" + encodeURIComponent(conversation) + "/replies?wait=5";
    let status = 0;
    let answer = {};
    try {
      ({ status, answer } = await send("POST", url, body));
      if (status === 202 && answer.outcome_url) {
        for (let i = 0; i < 20 && answer.status === "pending"; i++) {
          await new Promise((resolve) => setTimeout(resolve, 500));
          ({ answer } = await send("GET", answer.outcome_url));
        }
      }
    } catch (_) {
      answer = { error: "the inbox could not be reached; send it again (it goes out once)" };
    }
    // A live refresh may have put a new reply box in place meanwhile: the one on the page now.
    const box = form.matches("[data-reply]")
      ? document.querySelector('form[data-reply][data-conversation-id="' + conversation + '"]') || form
      : form;
    form.dataset.sending = "";
    box.dataset.sending = "";
    form = box;
    if (status === 200 || status === 202) {
      done(form);
      if (answer.status === "applied") tell("Reply sent on " + platform + ".", "applied");
      else if (answer.status === "rejected") tell("Not sent: " + (answer.reason || answer.code || "no reason given"), "rejected");
      else tell("Your reply is on its way: the thread shows when " + platform + " has it.", "pending");
    } else {
      const link = answer.link ? { href: answer.link, text: "Answer on " + platform } : null;
      tell("Not sent: " + (answer.error || "error " + status), "rejected", link);
    }
    if (form.matches("[data-reply]")) count(form);
    refreshAll(50);
  }

  function bindReplies(root) {
    root.addEventListener("input", (event) => {
      const form = event.target.closest("form[data-reply]");
      if (!form) return;
      count(form);
      saveDraft(form);
    });
    root.addEventListener("change", (event) => {
      const form = event.target.closest("form[data-reply]");
      if (form) count(form);
    });
    root.addEventListener("submit", (event) => {
      const form = event.target.closest("form[data-reply], form[data-reply-again]");
      if (!form) return;
      event.preventDefault();
      if (form.dataset.sending === "yes") return;
      const body = {};
      new FormData(form).forEach((value, key) => {
        if (value !== "") body[key] = value;
      });
      if (!body.text || !body.text.trim()) return;
      if (form.matches("[data-reply-again]")) {
        body.command_id = newKey();
        reply(form, body, () => {});
        return;
      }
      if (Array.from(body.text).length > limit(form)) return;
      // The same text sent again keeps its key (posted once); a changed text is a new reply.
      if (!form.dataset.key || form.dataset.keyFor !== body.text) {
        form.dataset.key = newKey();
        form.dataset.keyFor = body.text;
      }
      body.command_id = form.dataset.key;
      saveDraft(form);
      reply(form, body, (sent) => {
        const box = sent.querySelector("textarea[name=text]");
        if (!box || box.value !== body.text) return; // written on meanwhile: a new draft, kept
        box.value = "";
        sent.dataset.key = "";
        sent.dataset.keyFor = "";
        try {
          sessionStorage.removeItem(draftKey(sent));
        } catch (_) {
          // nothing kept
        }
      });
    });
    root.querySelectorAll("form[data-reply]").forEach((form) => restoreDraft(form.parentElement, null));
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
    bindReplies(document.getElementById("main") || document.body);
    keys();
    live();
    setInterval(tick, 1000);
    tick();
  });
})();

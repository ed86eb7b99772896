// The Gantry operator console (docs/console.md). Plain browser JavaScript with no dependencies:
// it signs in with an API key, follows /console/api/events (server-sent events) and renders each
// snapshot. Every value is put on the page with textContent, never as HTML.
"use strict";

(function () {
  const API = "/console/api/";
  const $ = (id) => document.getElementById(id);
  let source = null;
  let filter = "";
  let lastSnapshot = null;

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function ago(ms, now) {
    if (!ms) return "never";
    const s = Math.max(0, Math.round((now - ms) / 1000));
    return s < 60 ? s + " s ago" : Math.round(s / 60) + " min ago";
  }

  function clock(ms) {
    return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }

  async function call(path, body) {
    const opts = body === undefined ? { credentials: "same-origin" } : {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Gantry-Console": "1" },
      body: JSON.stringify(body),
    };
    const r = await fetch(API + path, opts);
    let data = null;
    try { data = r.status === 204 ? null : await r.json(); } catch (e) { data = null; }
    return { status: r.status, data: data };
  }

  function setConn(text, ok) {
    const b = $("conn");
    b.textContent = text;
    b.className = "badge " + (ok ? "on" : "off");
  }

  function showLogin(message) {
    if (source) { source.close(); source = null; }
    $("app-view").hidden = true;
    $("login-view").hidden = false;
    $("logout").hidden = true;
    $("who").textContent = "";
    $("login-error").textContent = message || "";
    setConn("signed out", false);
    $("token").focus();
  }

  function connect() {
    if (source) source.close();
    $("login-view").hidden = true;
    $("app-view").hidden = false;
    $("logout").hidden = false;
    setConn("connecting", false);
    source = new EventSource(API + "events" + filter);
    source.addEventListener("snapshot", (ev) => {
      setConn("live", true);
      render(JSON.parse(ev.data));
    });
    source.addEventListener("signed-out", (ev) => {
      let msg = "signed out";
      try { msg = JSON.parse(ev.data).error; } catch (e) { /* keep the default */ }
      showLogin(msg);
    });
    source.onerror = async () => {
      setConn("reconnecting", false);
      if (source && source.readyState === EventSource.CLOSED) {
        // The server refused the stream: the session is gone, a filter is bad, or views are full.
        const r = await call("session");
        if (r.status === 401) {
          showLogin("your session ended: sign in again");
        } else {
          const probe = await call("snapshot" + filter);
          $("errors").textContent = probe.data && probe.data.error ? probe.data.error : "the live view closed";
          setTimeout(connect, 2000);
        }
      }
    };
  }

  function renderCluster(s) {
    const panel = $("cluster-panel"), drill = $("drill-panel");
    panel.hidden = s.cluster === null;
    drill.hidden = s.cluster === null;
    if (s.cluster === null) return;
    const c = s.cluster;
    const leader = c.members.find((m) => m.leader);
    $("leader-name").textContent = leader ? leader.name + " (id " + leader.id + ")" : "none";
    $("leader-name").dataset.leaderId = leader ? String(leader.id) : "0";
    const h = $("health");
    h.textContent = c.healthy === undefined ? "" : c.healthy ? "healthy" : "degraded";
    h.className = "badge " + (c.healthy ? "on" : "off");
    $("problems").textContent = (c.problems || []).join("; ");
    const tb = $("members").tBodies[0];
    tb.replaceChildren();
    const target = $("drill-target"), chosen = target.value;
    target.replaceChildren(el("option", "any healthy voter"));
    target.options[0].value = "0";
    for (const m of c.members) {
      const tr = el("tr");
      tr.dataset.memberId = String(m.id);
      tr.className = m.reachable ? "" : "down";
      tr.append(el("td", m.id), el("td", m.name), el("td", m.role), el("td", m.leader ? "leader" : "", m.leader ? "leader" : ""),
        el("td", m.reachable ? "yes" : "no", m.reachable ? "up" : "down"), el("td", ago(m.last_contact_ms, s.at_ms)),
        el("td", m.lag_entries === undefined ? "-" : String(m.lag_entries), m.lag_entries > 0 ? "lag lagging" : "lag"),
        el("td", m.api_address));
      tb.append(tr);
      if (m.role === "voter" && !m.leader) {
        const o = el("option", m.name + " (id " + m.id + ")");
        o.value = String(m.id);
        target.append(o);
      }
    }
    if ([...target.options].some((o) => o.value === chosen)) target.value = chosen;
    $("lease-holder").textContent = s.lease ? s.lease.holder : "none";
    $("lease-epoch").textContent = s.lease ? String(s.lease.epoch) : "-";
    renderDrill(s.drill);
  }

  function renderDrill(d) {
    const box = $("drill-state");
    box.replaceChildren();
    $("drill-btn").disabled = d && d.state === "running";
    if (!d || d.state === "idle") return;
    box.dataset.state = d.state;
    box.append(el("p", d.state === "running" ? "Drill running (started by " + d.by + ")..." : d.message,
      d.state === "failed" ? "error" : ""));
    if (d.state !== "running") {
      const dl = el("dl");
      const add = (k, v, id) => { dl.append(el("dt", k)); const dd = el("dd", v); if (id) dd.id = id; dl.append(dd); };
      add("leader", d.from_leader + " \u2192 " + d.to_leader);
      add("unavailability window", d.window_ms + " ms", "drill-window");
      add("transfer call", d.transfer_ms + " ms");
      add("settled after", d.settled_ms + " ms");
      add("probe writes", d.probes + " (" + d.probe_failures + " failed)");
      box.append(dl);
    }
  }

  function renderNamespaces(s) {
    const box = $("namespaces");
    box.replaceChildren();
    const nss = s.namespaces.slice().sort((a, b) => a.name.localeCompare(b.name));
    $("ns-count").textContent = nss.length + (s.sandboxes_truncated ? " (sandbox list cut at 1000)" : "");
    for (const ns of nss) {
      const card = el("div", null, "ns");
      card.dataset.ns = ns.name;
      const title = el("h3", ns.name);
      card.append(title);
      const phases = el("p", null, "phases");
      for (const [p, n] of Object.entries(ns.phases)) {
        if (n > 0) phases.append(el("span", p + " " + n, "phase " + p.toLowerCase()));
      }
      if (!phases.childElementCount) phases.append(el("span", "no sandboxes", "muted"));
      card.append(phases);
      if (ns.quota) {
        const q = ns.quota, line = el("p", null, "quota");
        const part = (what) => {
          const used = q.used[what], lim = q.limit[what];
          const span = el("span", what + " " + used + (lim ? " / " + lim : " (no limit)"));
          span.dataset.quota = what;
          if (lim && used >= lim) span.className = "full";
          return span;
        };
        line.append(el("span", "quota" + (q.mode ? " (" + q.mode + ")" : "") + ": "), part("sandboxes"), el("span", " \u00b7 "), part("gpus"));
        card.append(line);
      }
      if (ns.sandboxes.length) {
        const t = el("table", null, "sandboxes");
        const head = el("tr");
        for (const h of ["sandbox", "phase", "GPUs", "image", "created"]) head.append(el("th", h));
        t.append(el("thead"));
        t.tHead.append(head);
        const tb = el("tbody");
        for (const sb of ns.sandboxes.slice().sort((a, b) => a.name.localeCompare(b.name))) {
          const tr = el("tr", null, "sb");
          tr.dataset.sb = sb.name;
          tr.append(el("td", sb.name), el("td", sb.phase, "phase " + sb.phase.toLowerCase()), el("td", sb.gpus),
            el("td", sb.image), el("td", ago(sb.created_at_ms, s.at_ms)));
          tb.append(tr);
        }
        t.append(tb);
        card.append(t);
      }
      box.append(card);
    }
  }

  function renderAudit(s) {
    const a = s.audit;
    $("audit-denied").hidden = a.permitted;
    const tb = $("audit").tBodies[0];
    tb.replaceChildren();
    for (const e of a.events.slice().reverse()) {
      const tr = el("tr", null, e.status === "Success" ? "" : "failure");
      tr.append(el("td", clock(e.time_ms)), el("td", e.operation.replace("/gantry.v1.", "")), el("td", e.namespace),
        el("td", e.actor_name || e.actor_id), el("td", (e.resource_type ? e.resource_type + " " : "") + e.resource_name),
        el("td", e.status), el("td", e.status_detail));
      tb.append(tr);
    }
  }

  function render(s) {
    lastSnapshot = s;
    $("replica").textContent = "replica " + s.replica.name + " (id " + s.replica.id + ")";
    const roles = s.principal.roles.map((r) => r.role + (r.namespace ? "@" + r.namespace : "")).join(", ");
    $("who").textContent = s.principal.name + (roles ? " \u2014 " + roles : "");
    $("errors").textContent = s.errors.join("\n");
    renderCluster(s);
    renderNamespaces(s);
    renderAudit(s);
  }

  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const token = $("token").value.trim();
    $("login-btn").disabled = true;
    try {
      const r = await call("login", { token: token });
      if (r.status === 200) {
        $("token").value = "";
        $("login-error").textContent = "";
        connect();
      } else {
        $("login-error").textContent = (r.data && r.data.error) || "sign-in failed (" + r.status + ")";
      }
    } finally {
      $("login-btn").disabled = false;
    }
  });

  $("logout").addEventListener("click", async () => {
    await call("logout", {});
    showLogin("signed out");
  });

  $("drill-btn").addEventListener("click", async () => {
    $("drill-btn").disabled = true;
    const r = await call("drill", { target_id: Number($("drill-target").value) });
    if (r.status === 202) {
      renderDrill(r.data.drill);
    } else {
      $("drill-btn").disabled = false;
      $("drill-state").replaceChildren(el("p", (r.data && r.data.error) || "the drill did not start (" + r.status + ")", "error"));
    }
  });

  $("audit-filter").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    const put = (k, v) => { if (v) q.set(k, v); };
    put("audit_ns", $("f-ns").value.trim());
    put("audit_op", $("f-op").value.trim());
    put("audit_status", $("f-status").value);
    put("audit_actor", $("f-actor").value.trim());
    const text = q.toString();
    filter = text ? "?" + text : "";
    connect();
  });

  (async () => {
    const r = await call("session");
    if (r.status === 200) connect(); else showLogin("");
  })();

  window.gantryConsole = { last: () => lastSnapshot };
})();

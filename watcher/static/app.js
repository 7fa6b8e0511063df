// The live worklist: a snapshot, then pushed changes (Server-Sent Events). Rows are kept in
// a Map; filters and sorting run here so a filter change needs no server round trip. Only
// the first `limit` matching rows are in the DOM, so 10,000 rows stay responsive.
"use strict";
(() => {
  const {esc, duration, pct, stateClass} = window.aiw;
  const rows = new Map();
  const COLUMN_NAMES = {state: "State", priority: "Priority", procedure: "Procedure", patient: "Patient",
    accession: "Study (accession)", modality: "Modality", performer: "Performer", progress: "Progress",
    age: "Age", in_state: "In state for"};
  let config = {columns: Object.keys(COLUMN_NAMES), all_columns: Object.keys(COLUMN_NAMES)};
  let columns = null, limit = 200, pending = false, skew = 0;
  const form = document.getElementById("filters");
  const tbody = document.querySelector("#worklist tbody");
  const now = () => Date.now() / 1000 + skew;  // watcher clock: ages agree with the server side

  function readFilters() {
    const f = Object.fromEntries(new FormData(form).entries());
    f.q = (f.q || "").trim().toLowerCase();
    return f;
  }
  function writeHash() {
    const f = new URLSearchParams();
    for (const [k, v] of new FormData(form).entries()) if (v) f.set(k, v);
    history.replaceState(null, "", f.toString() ? "#" + f.toString() : location.pathname);
  }
  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    for (const [k, v] of p.entries()) if (form.elements[k]) {
      const el = form.elements[k];
      if (el.tagName === "SELECT" && ![...el.options].some((o) => o.value === v)) el.add(new Option(v, v));
      el.value = v;
    }
  }
  function matches(r, f) {
    if (f.state && r.state !== f.state) return false;
    if (f.procedure && r.procedure !== f.procedure) return false;
    if (f.priority && r.priority !== f.priority) return false;
    if (f.modality && !(r.modality || "").split("/").includes(f.modality)) return false;
    if (f.from && r.created < new Date(f.from + "T00:00:00").getTime() / 1000) return false;
    if (f.to && r.created >= new Date(f.to + "T00:00:00").getTime() / 1000 + 86400) return false;
    if (f.q) {
      const hay = `${r.uid} ${r.patient} ${r.patient_id} ${r.accession} ${r.procedure} ${r.performer} ${r.state} ${r.reason}`.toLowerCase();
      if (!hay.includes(f.q)) return false;
    }
    return true;
  }
  function cell(col, r, t) {
    switch (col) {
      case "state": return `<td class="state ${stateClass(r.state)}">${esc(r.state)}${r.cancel_requested && r.state === "IN PROGRESS" ? ' <span class="badge">cancel requested</span>' : ""}</td>`;
      case "priority": return `<td class="prio-${esc(r.priority).toLowerCase()}">${esc(r.priority)}</td>`;
      case "procedure": return `<td><a href="/workitems/${encodeURIComponent(r.uid)}">${esc(r.procedure || r.uid)}</a></td>`;
      case "patient": return `<td>${esc(r.patient)}${r.patient_id ? ` <span class="muted">${esc(r.patient_id)}</span>` : ""}</td>`;
      case "accession": return `<td>${esc(r.accession)}</td>`;
      case "modality": return `<td>${esc(r.modality)}</td>`;
      case "performer": return `<td>${esc(r.performer)}</td>`;
      case "progress": return `<td class="progress">${r.progress == null ? esc(r.progress_text) : `<progress max="100" value="${r.progress}"></progress> ${pct(r.progress)}`}${r.progress != null && r.progress_text ? ` <span class="muted">${esc(r.progress_text)}</span>` : ""}${r.state === "CANCELED" && r.reason ? `<span class="reason">${esc(r.reason)}</span>` : ""}</td>`;
      case "age": return `<td class="age">${duration(t - r.created)}</td>`;
      case "in_state": return `<td class="in-state">${duration(t - r.state_since)}</td>`;
    }
    return "<td></td>";
  }
  function renderHead() {
    document.querySelector("#worklist thead tr").innerHTML = columns.map((c) => `<th scope="col">${esc(COLUMN_NAMES[c] || c)}</th>`).join("");
    document.querySelector("#columns div").innerHTML = config.all_columns.map((c) =>
      `<label><input type="checkbox" value="${esc(c)}" ${columns.includes(c) ? "checked" : ""}> ${esc(COLUMN_NAMES[c] || c)}</label>`).join(" ");
  }
  function refreshOptions() {
    for (const [name, key, split] of [["procedure", "procedure", false], ["modality", "modality", true]]) {
      const sel = form.elements[name];
      const have = new Set([...sel.options].map((o) => o.value));
      const values = new Set();
      for (const r of rows.values()) for (const v of (split ? (r[key] || "").split("/") : [r[key]])) if (v) values.add(v);
      for (const v of [...values].sort()) if (!have.has(v)) sel.add(new Option(v, v));
    }
  }
  function render() {
    pending = false;
    const f = readFilters(), t = now();
    const list = [];
    for (const r of rows.values()) if (matches(r, f)) list.push(r);
    list.sort((a, b) => b.order - a.order);
    const shown = list.slice(0, limit);
    tbody.innerHTML = shown.map((r) => `<tr data-uid="${esc(r.uid)}" data-state="${esc(r.state)}">${columns.map((c) => cell(c, r, t)).join("")}</tr>`).join("");
    document.getElementById("shown").textContent = `${list.length} of ${rows.size} workitems match` + (list.length > shown.length ? ` — showing the newest ${shown.length}` : "");
    document.getElementById("more").hidden = list.length <= shown.length;
    window.aiw.rendered = Date.now();
  }
  function schedule() { if (!pending) { pending = true; requestAnimationFrame(render); } }
  function summary(status) {
    if (!status || !status.counts) return;
    document.getElementById("summary").innerHTML = Object.entries(status.counts).map(([s, n]) =>
      `<span class="count ${stateClass(s)}">${esc(s)} <b>${n}</b></span>`).join("") +
      (status.skipped ? ` <span class="muted">${status.skipped} malformed event(s) skipped</span>` : "");
  }
  function attention(a) {
    const item = (r, extra) => `<li><a href="/workitems/${encodeURIComponent(r.uid)}">${esc(r.procedure || r.uid)}</a> · ${esc(r.patient)} ${esc(r.accession)} — ${extra}</li>`;
    const panels = {
      late: a.late.map((r) => item(r, `${duration(r.over)} over its ${duration(r.budget)} budget (${esc(r.state)})`)),
      stuck: a.stuck.map((r) => item(r, `no progress for ${duration(r.idle)} at ${pct(r.progress) || "0%"}`)),
      failed: a.failed.map((r) => item(r, `<span class="reason">${esc(r.reason || "no reason given")}</span> · ${esc(window.aiw.time(r.failed_at))}`)),
    };
    for (const [k, items] of Object.entries(panels)) {
      const el = document.getElementById(k);
      el.querySelector(".n").textContent = `(${a.counts[k]})`;
      el.querySelector("ul").innerHTML = items.join("") || '<li class="muted">none</li>';
      el.classList.toggle("alert", a.counts[k] > 0);
    }
  }
  function upsert(list) { for (const r of list) rows.set(r.uid, r); }

  function connect() {
    const source = new EventSource("/api/stream");
    source.addEventListener("snapshot", (e) => {
      const d = JSON.parse(e.data);
      skew = d.sent - Date.now() / 1000;
      config = d.config;
      if (!columns) {
        const saved = JSON.parse(localStorage.getItem("aiw.columns") || "null");
        columns = (saved || config.columns).filter((c) => config.all_columns.includes(c));
        renderHead();
      }
      rows.clear();
      upsert(d.rows);
      refreshOptions();
      readHash();
      aiw.showStatus(d.status);
      summary(d.status);
      attention(d.attention);
      render();
      window.aiw.loaded = Date.now();
    });
    source.addEventListener("delta", (e) => {
      const d = JSON.parse(e.data);
      upsert(d.rows);
      if (d.rows.length) { refreshOptions(); schedule(); }
      aiw.showStatus(d.status);
      summary(d.status);
    });
    source.addEventListener("attention", (e) => attention(JSON.parse(e.data)));
    source.onerror = () => aiw.showStatus(null, "down");
  }

  form.addEventListener("input", () => { limit = 200; writeHash(); schedule(); });
  document.getElementById("clear").addEventListener("click", () => { form.reset(); writeHash(); schedule(); });
  document.getElementById("more").addEventListener("click", () => { limit += 500; schedule(); });
  document.getElementById("columns").addEventListener("change", () => {
    columns = config.all_columns.filter((c) => document.querySelector(`#columns input[value="${c}"]`).checked);
    localStorage.setItem("aiw.columns", JSON.stringify(columns));
    renderHead();
    schedule();
  });
  setInterval(() => { if (rows.size) schedule(); }, 1000);  // ages tick
  connect();
})();

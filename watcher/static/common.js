// Shared by the pages: escaping, durations, connection banner. No framework, no build.
"use strict";
const aiw = window.aiw = window.aiw || {};
aiw.esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
aiw.duration = (seconds) => {
  if (seconds == null || !isFinite(seconds)) return "—";
  const s = Math.max(0, seconds);
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
};
aiw.time = (epoch) => epoch ? new Date(epoch * 1000).toLocaleString() : "—";
aiw.pct = (p) => p == null ? "" : `${Math.round(p)}%`;
aiw.stateClass = (s) => "st-" + String(s || "unknown").toLowerCase().replace(/\s+/g, "-");
// The banner tells whether what you see is live: the watcher's link to the Task Manager,
// and this page's link to the watcher.
aiw.showStatus = (status, pageLink) => {
  const el = document.getElementById("conn");
  if (!el) return;
  let state = status ? status.state : "connecting", text = status ? status.message : "";
  if (pageLink === "down") { state = "reconnecting"; text = "lost the connection to the watcher; reconnecting…"; }
  el.className = "conn " + state;
  el.textContent = (state === "connected" ? "● live" : state) + (text ? " — " + text : "");
  el.dataset.state = state;
};

"""The watcher's live model, attention views, statistics and consoles — no server needed.

Events are built exactly as the Task Manager sends them (upsrs.events.message), so these
tests exercise the same parsing path as the live channel.
"""

from __future__ import annotations

import re
from pathlib import Path

import orjson
from rich.console import Console as RichConsole

from tests.factory import code, performed, sq, v, workitem
from upsrs import dicomjson as dj
from upsrs import events as ev
from upsrs.eventclient import EventReport
from watcher.attention import attention
from watcher.charts import stats_html
from watcher.config import WatchSettings, load
from watcher.model import Model
from watcher.stats import statistics
from watcher.sync import Status
from watcher.terminal import render
from watcher.web import viewer_url

T0 = 1_800_000_000.0
_mid = iter(range(1, 10**6))


def event(uid: str, etype: int, info: dict) -> EventReport:
    return EventReport.parse(orjson.dumps(ev.message(uid, etype, info, next(_mid))))


def state_event(uid: str, state: str, reason: str = "", code_: tuple[str, str, str] | None = None) -> EventReport:
    info = {"00741000": v("CS", state), "00404041": v("CS", "READY")}
    if reason:
        info["00741238"] = v("LT", reason)
    if code_:
        info["0074100E"] = sq(code(*code_))
    return event(uid, ev.STATE_REPORT, info)


def progress_event(uid: str, pct: str, text: str = "") -> EventReport:
    item = {"00741004": v("DS", pct)}
    if text:
        item["00741006"] = v("ST", text)
    return event(uid, ev.PROGRESS_REPORT, {"00741002": sq(item)})


def stored(uid: str, state: str = "SCHEDULED", modified: str | None = None, **kw: object) -> dict:
    ds = workitem(**kw)  # type: ignore[arg-type]
    ds["00080018"] = v("UI", uid)
    ds["00741000"] = v("CS", state)
    if modified:
        ds["00404010"] = v("DT", modified)
    return ds


def test_every_transition_is_recorded_once_at_its_arrival_time_and_replays_change_nothing() -> None:
    m = Model()
    m.apply(state_event("1.2.1", "SCHEDULED"), now=T0)
    m.apply(state_event("1.2.1", "IN PROGRESS"), now=T0 + 5)
    m.apply(progress_event("1.2.1", "40", "segmenting"), now=T0 + 7)
    m.apply(state_event("1.2.1", "COMPLETED"), now=T0 + 12)
    # the server replays after a reconnect: the same reports again, and an old one late
    for e in (state_event("1.2.1", "IN PROGRESS"), progress_event("1.2.1", "40", "segmenting"),
              state_event("1.2.1", "SCHEDULED"), state_event("1.2.1", "COMPLETED")):
        assert m.apply(e, now=T0 + 60) is None
    row = m.rows["1.2.1"]
    assert [(t.state, t.at) for t in row.history] == [("SCHEDULED", T0), ("IN PROGRESS", T0 + 5), ("COMPLETED", T0 + 12)]
    assert (row.progress, row.progress_text, row.state) == (40.0, "segmenting", "COMPLETED")
    assert m.duplicates >= 2 and len(m.rows) == 1
    texts = [e["text"] for e in row.timeline_json()]
    assert texts == ["State SCHEDULED", "State IN PROGRESS", "Progress 40% — segmenting", "State COMPLETED"]


def test_malformed_events_are_skipped_and_counted_and_later_events_still_apply() -> None:
    m = Model()
    m.apply(state_event("1.2.2", "SCHEDULED"), now=T0)
    assert m.apply(event("1.2.2", ev.STATE_REPORT, {"00404041": v("CS", "READY")}), now=T0 + 1) is None  # no state
    assert m.apply(state_event("1.2.2", "FINISHED"), now=T0 + 2) is None  # not a UPS state
    assert m.apply(progress_event("1.2.2", "lots"), now=T0 + 3) is None  # not a percentage
    assert m.apply(event("1.2.2", 77, {}), now=T0 + 4) is None  # unknown event type
    assert m.skipped == 4
    assert m.apply(state_event("1.2.2", "IN PROGRESS"), now=T0 + 5) is not None
    assert m.rows["1.2.2"].state == "IN PROGRESS"
    assert m.merge({"00741000": v("CS", "SCHEDULED")}, "search") is None  # a dataset without UID
    assert m.skipped == 5


def test_search_and_retrieve_merge_with_events_in_any_order() -> None:
    m = Model()
    # first seen through its initial report (already running), then the search tells more
    m.apply(state_event("1.2.3", "IN PROGRESS"), now=T0 + 100)
    m.merge(stored("1.2.3", "IN PROGRESS", "20270115080010.000000+0000", accession="ACC-9", patient_name="ROE^RICHARD",
                   priority="HIGH"), "search", now=T0 + 101)
    row = m.rows["1.2.3"]
    assert row.history[0].source == "initial"
    assert row.history[0].at == 1_800_000_010.0  # the server's stamp, not the late report's arrival
    assert (row.info["accession"], row.info["patient"], row.info["priority"], row.info["modality"]) == \
        ("ACC-9", "ROE, RICHARD", "HIGH", "MR")
    # a stale search result never moves a row back
    m.merge(stored("1.2.3", "SCHEDULED"), "search", now=T0 + 102)
    assert row.state == "IN PROGRESS"
    m.apply(state_event("1.2.3", "COMPLETED"), now=T0 + 200)
    done = stored("1.2.3", "COMPLETED", "20270115080319.500000+0000")
    out = {"0020000D": v("UI", "1.2.9"), "0020000E": v("UI", "1.2.9.1"),
           "00081199": sq({"00081150": v("UI", "1.2.840.10008.5.1.4.1.1.66.4"), "00081155": v("UI", "1.2.9.1.1")})}
    done.update(performed(outputs=[out]))
    m.merge(done, "retrieve", now=T0 + 200.2)
    assert row.final_recorded and abs(row.event_lag - 0.5) < 1e-6
    assert row.info["outputs"][0]["kinds"] == ["SEG"]
    assert row.info["performer"] == "aiw reference performer"


def test_attention_views_list_late_high_stuck_and_recently_failed() -> None:
    m = Model()
    s = WatchSettings(time_budget_seconds={"Stroke triage": 300}, default_time_budget_seconds=3600, stuck_minutes=10)
    for uid, label, prio in (("1.1", "Stroke triage", "HIGH"), ("1.2", "MS lesion detection", "HIGH"),
                             ("1.3", "Stroke triage", "MEDIUM")):
        m.apply(state_event(uid, "SCHEDULED"), now=T0)
        m.merge({**stored(uid, label=label, priority=prio)}, "retrieve", now=T0)
    m.apply(state_event("1.4", "SCHEDULED"), now=T0)
    m.apply(state_event("1.4", "IN PROGRESS"), now=T0 + 10)
    m.apply(progress_event("1.4", "30"), now=T0 + 20)
    m.apply(state_event("1.5", "SCHEDULED"), now=T0)
    m.apply(state_event("1.5", "CANCELED", "series missing", ("110523", "DCM", "Object Set incomplete")), now=T0 + 30)
    a = attention(m, s, now=T0 + 20 + 11 * 60)
    assert [r["uid"] for r in a["late"]] == ["1.1"]  # HIGH and past 300 s; the other HIGH has an hour
    assert [r["uid"] for r in a["stuck"]] == ["1.4"] and a["stuck"][0]["idle"] == 11 * 60
    assert [(r["uid"], r["reason"]) for r in a["failed"]] == [("1.5", "Object Set incomplete — series missing")]
    assert attention(m, s, now=T0 + 20 + 9 * 60)["counts"]["stuck"] == 0


def test_statistics_turnaround_percentiles_failures_and_charts() -> None:
    m = Model()
    for i in range(20):
        uid = f"2.{i}"
        m.apply(state_event(uid, "SCHEDULED"), now=T0 + i)
        m.merge(stored(uid, label="MS lesion detection"), "retrieve", now=T0 + i)
        final = "CANCELED" if i % 5 == 0 else "COMPLETED"
        m.apply(state_event(uid, final, code_=("110531", "DCM", "Insufficient quality") if final == "CANCELED" else None),
                now=T0 + i + 10 + i)  # turnaround 10 + i seconds
    st = statistics(m, now=T0 + 100)
    (proc,) = st["turnaround"]
    assert proc["n_hour"] == 20 and proc["p50_hour"] == 19 and proc["p95_hour"] == 28
    assert st["failures"]["failed_day"] == 4 and st["failures"]["rate_day"] == 0.2
    assert st["failures"]["by_reason"][0]["reason"] == "Insufficient quality"
    assert st["throughput"]["completed_hour"] == 16
    html = stats_html(st)
    assert html.count("<svg") == 4 and "Insufficient quality" in html and "19.0 s" in html


def test_terminal_shows_rows_newest_first_and_the_connection_state() -> None:
    m = Model()
    for i, acc in enumerate(("ACC-OLD", "ACC-NEW")):
        m.apply(state_event(f"3.{i}", "SCHEDULED"), now=T0 + i)
        m.merge(stored(f"3.{i}", accession=acc), "retrieve", now=T0 + i)
    m.apply(state_event("3.1", "IN PROGRESS"), now=T0 + 5)
    status = Status()
    status.set("reconnecting", "connection to http://tm lost; reconnecting")
    con = RichConsole(width=160, record=True)
    con.print(render(m, status, WatchSettings(), now=T0 + 65))
    out = con.export_text()
    assert "reconnecting" in out and "SCHEDULED 1  IN PROGRESS 1" in out
    assert out.index("ACC-NEW") < out.index("ACC-OLD")
    assert re.search(r"IN PROGRESS .*ACC-NEW.*1m04s.*1m00s", out)


def test_viewer_url_template_and_config_file(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    row = {"uid": "1.9", "study_uid": "1.2.3", "accession": "A 1", "patient_id": "P", "outputs": []}
    assert viewer_url("http://ohif/viewer?StudyInstanceUIDs={study_uid}&acc={accession}", row) == \
        "http://ohif/viewer?StudyInstanceUIDs=1.2.3&acc=A%201"
    assert viewer_url("http://v/{series_uid}", row) == ""  # no output series: no broken link
    assert viewer_url("", row) == ""
    cfg = tmp_path / "watch.toml"
    cfg.write_text('[watch]\nstuck_minutes = 3\ncolumns = ["state", "patient"]\n'
                   '[watch.time_budget_seconds]\n"Stroke triage" = 120\n[watch.cancel_tokens]\ns3cret = "qa-lead"\n')
    monkeypatch.setenv("AIW_WATCH_AE_TITLE", "QA_WATCH")
    s = load(cfg, port=9999, server=None)
    assert (s.stuck_minutes, s.columns, s.budget("Stroke triage"), s.cancel_tokens, s.ae_title, s.port) == \
        (3, ["state", "patient"], 120, {"s3cret": "qa-lead"}, "QA_WATCH", 9999)
    assert dj.first(stored("9.9"), 0x00741000) == "SCHEDULED"

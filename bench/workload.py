"""The workload: realistic AI workitems (tests/factory.py) and the request scenarios the
client processes run. Bodies are built before the clock starts, in the client processes.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import orjson

from bench.loadgen import Ctx, header
from tests.factory import performed, progress, state, workitem
from upsrs.uids import new_uid

# ~10 workitem codes an AI department would run, with the station that serves each.
CODES: list[tuple[str, str, str]] = [
    ("AIW-MSL", "99AIW", "MS lesion segmentation"),
    ("AIW-LNG", "99AIW", "Lung nodule detection"),
    ("AIW-ICH", "99AIW", "Intracranial hemorrhage triage"),
    ("AIW-PE", "99AIW", "Pulmonary embolism triage"),
    ("AIW-FX", "99AIW", "Fracture detection"),
    ("AIW-MAM", "99AIW", "Mammography density"),
    ("AIW-PRO", "99AIW", "Prostate lesion detection"),
    ("AIW-LIV", "99AIW", "Liver segmentation"),
    ("AIW-CAC", "99AIW", "Coronary calcium scoring"),
    ("AIW-BRV", "99AIW", "Brain volumetry"),
]
EPOCH = datetime(2026, 1, 1)
SPREAD_DAYS = 180  # start datetimes spread over six months
PATIENTS = 20_000  # many patients: ~5 workitems each at 100k


def start_dt(rng: random.Random) -> str:
    return (EPOCH + timedelta(seconds=rng.randrange(SPREAD_DAYS * 86400))).strftime("%Y%m%d%H%M%S")


def make_workitem(rng: random.Random, n: int) -> dict[str, Any]:
    """One realistic AI workitem: one of the codes, one of many patients, a start time in
    the six months, 1-3 input series of 3 instances each, a priority mix."""
    c = CODES[n % len(CODES)]
    pid = f"PAT-{rng.randrange(PATIENTS):06d}"
    nseries = rng.choice((1, 1, 2, 3))
    return workitem(patient_id=pid, accession=f"ACC-{n:08d}", label=c[2], workitem_code=c,
                    station=(f"AIW-NODE-{n % 3 + 1}", "99AIW", "aiw performer"),
                    priority=rng.choice(("MEDIUM", "MEDIUM", "MEDIUM", "HIGH", "LOW")),
                    start=start_dt(rng), series_uids=tuple(new_uid() for _ in range(nseries)),
                    patient_name=f"DOE^{pid}")


def body_pool(params: dict[str, Any], worker: int) -> dict[str, Any]:
    """Setup run in each client process: pre-encoded create/update bodies."""
    rng = random.Random(1000 + worker)
    n = params.get("bodies", 300)
    params = dict(params)
    params["create_bodies"] = [orjson.dumps(make_workitem(rng, i)) for i in range(n)]
    params["progress_bodies"] = [orjson.dumps(progress(p, f"stage {p // 25 + 1} of 4")) for p in range(5, 100, 5)]
    params["performed_body"] = orjson.dumps(performed())
    return params


def _st(ctx: Ctx) -> dict[str, Any]:
    st = ctx.params.setdefault(("conn", ctx.index), {"i": ctx.index})
    return st


def _uid_from(head: bytes) -> str:
    loc = header(head, b"location")
    assert loc, head
    return loc.decode().rsplit("/", 1)[1]


# ---------------------------------------------------------------- scenarios
async def bare(ctx: Ctx) -> None:
    raw = ctx.params.get("_bare") or ctx.params.setdefault("_bare", ctx.conn.build("GET", "/bare"))
    await ctx.call("bare", raw)


async def create(ctx: Ctx) -> None:
    st = _st(ctx)
    bodies = ctx.params["create_bodies"]
    st["i"] += 1
    _, head, _ = await ctx.call("create", ctx.conn.build("POST", "/workitems", bodies[st["i"] % len(bodies)]), (201,))
    if ctx.params.get("keep_uids", True):
        ctx.out.append(_uid_from(head))


async def retrieve(ctx: Ctx) -> None:
    uids = ctx.params["uids"]
    uid = uids[random.randrange(len(uids))]
    await ctx.call("retrieve", ctx.conn.build("GET", f"/workitems/{uid}"), (200,))


async def search(ctx: Ctx) -> None:
    queries = ctx.params["queries"]
    st = _st(ctx)
    st["i"] += 1
    q = queries[st["i"] % len(queries)]
    await ctx.call(ctx.params.get("kind", "search"), ctx.conn.build("GET", q), (200, 204))


async def claim(ctx: Ctx) -> None:
    uid = ctx.take()
    tuid = new_uid()
    await ctx.call("change-state", ctx.conn.build("PUT", f"/workitems/{uid}/state",
                                                  orjson.dumps(state("IN PROGRESS", tuid))), (200,))
    ctx.out.append((uid, tuid))


async def update(ctx: Ctx) -> None:
    """Progress updates on workitems this connection holds (its share of ``claimed``)."""
    st = _st(ctx)
    claimed = ctx.params["claimed"]
    st["i"] += ctx.params["connections"]
    uid, tuid = claimed[st["i"] % len(claimed)]
    bodies = ctx.params["progress_bodies"]
    await ctx.call("update", ctx.conn.build("POST", f"/workitems/{uid}?transaction-uid={tuid}",
                                            bodies[st["i"] % len(bodies)]), (200,))


async def lifecycle(ctx: Ctx) -> None:
    """One workitem's whole AIW-I life: create, claim, progress, final Update of the
    Performed Procedure Sequence, complete."""
    st = _st(ctx)
    st["i"] += 1
    p = ctx.params
    c = ctx.conn
    _, head, _ = await ctx.call("create", c.build("POST", "/workitems", p["create_bodies"][st["i"] % len(p["create_bodies"])]), (201,))
    uid = _uid_from(head)
    tuid = new_uid()
    await ctx.call("claim", c.build("PUT", f"/workitems/{uid}/state", orjson.dumps(state("IN PROGRESS", tuid))), (200,))
    await ctx.call("progress", c.build("POST", f"/workitems/{uid}?transaction-uid={tuid}",
                                       p["progress_bodies"][st["i"] % len(p["progress_bodies"])]), (200,))
    await ctx.call("performed", c.build("POST", f"/workitems/{uid}?transaction-uid={tuid}", p["performed_body"]), (200,))
    await ctx.call("complete", c.build("PUT", f"/workitems/{uid}/state", orjson.dumps(state("COMPLETED", tuid))), (200,))


# ---------------------------------------------------------------- data set loading
async def load(ctx: Ctx) -> None:
    """Create one workitem and take it to the final state its plan says, through the API:
    C = COMPLETED (claim, one final Update with progress 100% and the Performed Procedure
    Sequence, complete), X = CANCELED by the performer
    (claim, cancel), R = CANCELED by a cancellation request while SCHEDULED,
    P = IN PROGRESS (claim, progress), S = SCHEDULED (create only)."""
    plan = ctx.take()
    p = ctx.params
    c = ctx.conn
    n = plan[1]
    rng = p.setdefault("_rng", random.Random(n))
    body = orjson.dumps(make_workitem(rng, n))
    _, head, _ = await ctx.call("create", c.build("POST", "/workitems", body), (201,))
    uid = _uid_from(head)
    kind = plan[0]
    final = p.get("_final") or p.setdefault("_final", orjson.dumps({**performed(), **progress(100, "done")}))
    if kind == "S":
        ctx.out.append((kind, uid))
        return
    if kind == "R":
        await ctx.call("cancelrequest", c.build("POST", f"/workitems/{uid}/cancelrequest", b"{}"), (202,))
        ctx.out.append((kind, uid))
        return
    tuid = new_uid()
    await ctx.call("claim", c.build("PUT", f"/workitems/{uid}/state", orjson.dumps(state("IN PROGRESS", tuid))), (200,))
    if kind == "P":
        await ctx.call("progress", c.build("POST", f"/workitems/{uid}?transaction-uid={tuid}",
                                           p["progress_bodies"][n % len(p["progress_bodies"])]), (200,))
    if kind == "C":  # one final N-SET: progress 100% and the Performed Procedure Sequence
        await ctx.call("final-update", c.build("POST", f"/workitems/{uid}?transaction-uid={tuid}",
                                               final), (200,))
        await ctx.call("complete", c.build("PUT", f"/workitems/{uid}/state", orjson.dumps(state("COMPLETED", tuid))), (200,))
    elif kind == "X":
        await ctx.call("cancel", c.build("PUT", f"/workitems/{uid}/state", orjson.dumps(state("CANCELED", tuid))), (200,))
    ctx.out.append((kind, uid))


def q(**params: str) -> str:
    return "/workitems?" + "&".join(f"{k}={quote(str(v), safe='')}" for k, v in params.items())


async def mix(ctx: Ctx) -> None:
    """One request of the memory benchmark's mix (a fixed list of operations, so both store
    sizes get the same requests): ("L",) a whole lifecycle, ("S", path) a search,
    ("R", uid) a retrieve."""
    op = ctx.take()
    if op[0] == "L":
        await lifecycle(ctx)
    elif op[0] == "S":
        await ctx.call("search", ctx.conn.build("GET", op[1]), (200, 204))
    else:
        await ctx.call("retrieve", ctx.conn.build("GET", f"/workitems/{op[1]}"), (200,))

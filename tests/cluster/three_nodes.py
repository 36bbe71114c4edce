#!/usr/bin/env python3
"""Three `leeway serve` nodes on one PostgreSQL database, a mixed concurrent load, one node
killed with SIGKILL mid-run, and then the invariants a cluster must keep.

    python3 tests/cluster/three_nodes.py [PG_ADMIN_URL]

PG_ADMIN_URL (default: $LEEWAY_CI_PG_URL, else postgres://postgres@127.0.0.1:5432) must let
`psql` create and drop a database; the script makes `leeway_cluster_<pid>` and drops it at
the end. The binary is $LEEWAY_BIN (default: target/debug/leeway in the repository).
Standard library only (Python 3.11). Exit 0: every check held; 1: a violation (each one
printed with its evidence) or the run could not be carried out.

What runs: `leeway migrate` once, three `leeway serve` processes (scheduler every second,
webhook worker every 100 ms), a webhook receiver that answers 200 to everything and records
every delivery, one subscription for every event type. Then, concurrently and round-robin
over the three nodes:

  * approvals: exceptions created and submitted, assessed (medium, high, critical: two or
    three approvers by policy, read from GET /v1/policy), then approved by all the required
    approvers AT ONCE through different nodes;
  * approval races: one required level (low), two security officers approving at once
    through two nodes: exactly one may succeed;
  * If-Match races: two PATCHes with the same ETag through two nodes (exactly one 2xx, the
    other 412), then concurrent PATCHes without If-Match (last writer wins, but none lost),
    then submit and withdraw;
  * expiries: legacy exceptions imported `active` (POST /v1/imports?legacy=true) with an
    expiry a few seconds ahead, which the nodes' schedulers must expire while the run goes on.

Node 1 is killed with SIGKILL once a third of the work is done; a request that finds it dead
is re-sent to a live node (GETs always, POSTs with their Idempotency-Key, so a retry of a
request that committed replays; PUT/PATCH whose answer was lost are settled by reading the
exception back). Node 3 is never killed: every final read goes through it.

The checks: no 5xx anywhere; no update lost (every 2xx PATCH is in the trail exactly once,
versions add up to the writes); no event applied twice (each exception's trail holds each
transition as often as the load caused it, its hash chain is valid, GET /v1/audit/verify is
valid); every expiry happened exactly once (one `expired` event, one exception.expired
webhook); every time rule at most once; the change feed, paged through node 3, holds every
integration event of the audit log exactly once, with contiguous positions and per exception
in trail order; every feed event reached the receiver, in order per exception, and none
twice (a repeat is tolerated only for a delivery node 1 had sent when it was killed: the
attempt it could not record is sent again once its lease lapses, which is what at-least-once
means); every delivery ends `succeeded`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import datetime as dt
import http.client
import http.server
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("LEEWAY_BIN") or str(REPO / "target" / "debug" / "leeway")
PG_ADMIN = (
    sys.argv[1] if len(sys.argv) > 1 else os.environ.get("LEEWAY_CI_PG_URL", "postgres://postgres@127.0.0.1:5432")
)
DB_NAME = f"leeway_cluster_{os.getpid()}"
SECRET = "cluster-test-secret-cluster-test-secret-0123456789"
RUN = uuid.uuid4().hex[:8]
KILLED, SURVIVOR = 0, 2  # node 1 dies; node 3 is never killed and serves every final read
LEASE_SECONDS = 60  # crates/api/src/delivery.rs: a dead node's claims lapse after this
BU = "payments"

# the integration event each audit action carries (crates/domain/src/workflow/*.rs)
ACTION_EVENT = {
    "created": "exception.created",
    "submitted": "exception.submitted",
    "returned": "exception.returned",
    "assessed": "exception.assessed",
    "approval_recorded": "exception.approval_recorded",
    "approved": "exception.approved",
    "ratified": "exception.approved",
    "activated": "exception.activated",
    "rejected": "exception.rejected",
    "auto_rejected": "exception.rejected",
    "withdrawn": "exception.withdrawn",
    "revoked": "exception.revoked",
    "closed": "exception.closed",
    "expired": "exception.expired",
    "expiring": "exception.expiring",
    "escalated": "exception.escalated",
    "review_due": "exception.review_due",
    "reviewed": "exception.reviewed",
    "renewal_requested": "exception.renewal_requested",
    "renewed": "exception.renewed",
    "updated": "exception.updated",
    "control_added": "exception.updated",
    "control_changed": "exception.updated",
    "control_checked": "exception.updated",
    "risk_recomputed": None,
    "at_risk": "exception.at_risk",
    "at_risk_cleared": "exception.updated",
    "imported": "exception.imported",
}
# actions the scheduler takes on its own (each at most once per moment it is due)
TIME_ACTIONS = {"expiring", "escalated", "review_due", "expired", "activated"}

T0 = time.monotonic()
LOCK = threading.Lock()
VIOLATIONS: list[str] = []
NOTES: list[str] = []
TOLERATED: set[str] = set()  # webhook ids legitimately delivered twice (see check_webhooks)
STATS: collections.Counter = collections.Counter()


def db_url(name: str) -> str:
    """The admin URL naming database `name` (query parameters such as sslmode kept)."""
    base, sep, query = PG_ADMIN.partition("?")
    return f"{base.rstrip('/')}/{name}{sep}{query}"


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def violation(msg: str) -> None:
    with LOCK:
        VIOLATIONS.append(msg)
    log("VIOLATION: " + msg.splitlines()[0])


def note(msg: str) -> None:
    with LOCK:
        NOTES.append(msg)


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def parse_time(s: str) -> dt.datetime:
    """RFC 3339 with any number of fraction digits, to microseconds."""
    s = s.replace("Z", "+00:00")
    if "." in s:
        head, rest = s.split(".", 1)
        i = 0
        while i < len(rest) and rest[i].isdigit():
            i += 1
        s = head + "." + (rest[:i] + "000000")[:6] + rest[i:]
    return dt.datetime.fromisoformat(s).astimezone(dt.timezone.utc)


def short(value, limit: int = 600) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + "..."


# ---------------------------------------------------------------------------------------------
# processes


CHILDREN: list[subprocess.Popen] = []
WORKDIR = Path(tempfile.mkdtemp(prefix="leeway-cluster-"))


def _die_with_parent() -> None:  # runs in the child before exec: SIGKILL it if we die
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort, other systems simply lack it
        pass


def node_env(port: int | None = None) -> dict:
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("LEEWAY_"):
            del env[k]
    env.update(
        LEEWAY_DATABASE_URL=db_url(DB_NAME),
        LEEWAY_JWT_SECRET=SECRET,
        LEEWAY_JOBS_INTERVAL_SECONDS="1",
        LEEWAY_DELIVERY_INTERVAL_MS="100",
        LEEWAY_WEBHOOK_ALLOW_PRIVATE="true",
        LEEWAY_WEBHOOK_RETRY_SCHEDULE="1,1,1",
        LEEWAY_LOG="warn",
    )
    if port is not None:
        env["LEEWAY_LISTEN"] = f"127.0.0.1:{port}"
    return env


def run_cli(*args: str) -> str:
    r = subprocess.run([BIN, *args], env=node_env(), capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"leeway {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout.strip()


def psql(sql: str) -> None:
    r = subprocess.run(
        ["psql", db_url("postgres"), "-q", "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if r.returncode != 0:
        raise RuntimeError(f"psql {sql!r} failed: {r.stderr.strip()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, index: int):
        self.index = index
        self.name = f"node{index + 1}"
        self.port = free_port()
        self.log_path = WORKDIR / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None
        self.killed = False

    def start(self) -> None:
        out = open(self.log_path, "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [BIN, "serve"], env=node_env(self.port), stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
        CHILDREN.append(self.proc)

    def alive(self) -> bool:
        return not self.killed and self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def stop_children() -> None:
    for p in CHILDREN:
        if p.poll() is None:
            try:
                p.kill()
            except OSError:
                pass
    for p in CHILDREN:
        try:
            p.wait(timeout=10)
        except Exception:  # noqa: BLE001
            pass


# ---------------------------------------------------------------------------------------------
# HTTP


class Refused(Exception):
    """Nothing reached the node: safe to send elsewhere."""


class Lost(Exception):
    """The request may have reached the node, the answer did not come back."""


class Resp:
    def __init__(self, status: int, headers: dict, raw: bytes, node: int, method: str, path: str, req_body):
        self.status, self.headers, self.raw, self.node = status, headers, raw, node
        self.method, self.path, self.req_body = method, path, req_body
        self.ambiguous = False
        try:
            self.json = json.loads(raw) if raw else None
        except ValueError:
            self.json = None

    @classmethod
    def lost(cls, node: int, method: str, path: str, req_body, why: str) -> "Resp":
        r = cls(0, {}, b"", node, method, path, req_body)
        r.ambiguous, r.why = True, why
        return r

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def evidence(self) -> str:
        return (
            f"{self.method} {self.path} via node{self.node + 1}"
            + (f" body={short(self.req_body, 300)}" if self.req_body is not None else "")
            + f" -> {self.status} request-id={self.header('x-request-id')} {short(self.raw.decode(errors='replace'), 800)}"
        )


def send_once(node: Node, method: str, path: str, token: str | None, body, headers: dict | None, timeout: float):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{node.port}{path}", data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        raw = e.read() if e.fp is not None else b""
        return e.code, {k.lower(): v for k, v in (e.headers or {}).items()}, raw
    except urllib.error.URLError as e:
        if isinstance(e.reason, ConnectionRefusedError):
            raise Refused(str(e.reason)) from None
        raise Lost(repr(e.reason)) from None
    except (http.client.HTTPException, OSError) as e:  # reset, disconnected, timeout, short read
        raise Lost(repr(e)) from None


class Cluster:
    def __init__(self, nodes: list[Node]):
        self.nodes = nodes
        self._rr = itertools.count()
        self.kill_time: float | None = None  # monotonic

    def live(self) -> list[int]:
        return [n.index for n in self.nodes if n.alive()]

    def pick(self) -> int:
        return next(self._rr) % len(self.nodes)

    def call(self, method: str, path: str, token: str, body=None, headers: dict | None = None,
             node: int | None = None, timeout: float = 30) -> Resp:
        """Sends to `node` (default: round robin, dead or not: the client does not know). A
        refused connection goes to the next node; a lost answer is re-sent elsewhere when
        that is safe (GET; POST with an Idempotency-Key), and is otherwise returned as an
        ambiguous Resp for the caller to settle."""
        start = self.pick() if node is None else node
        headers = dict(headers or {})
        retriable = method == "GET" or (method == "POST" and "Idempotency-Key" in headers)
        for attempt in range(12):
            i = (start + attempt) % len(self.nodes)
            STATS[f"sent.{self.nodes[i].name}"] += 1
            try:
                status, hdrs, raw = send_once(self.nodes[i], method, path, token, body, headers, timeout)
            except Refused:
                STATS["refused_then_resent"] += 1
                continue
            except Lost as e:
                STATS["answer_lost"] += 1
                if retriable:
                    STATS["answer_lost_then_resent"] += 1
                    continue
                return Resp.lost(i, method, path, body, str(e))
            r = Resp(status, hdrs, raw, i, method, path, body)
            STATS[f"status.{status // 100}xx"] += 1
            if hdrs.get("idempotent-replayed") == "true":
                STATS["idempotent_replays"] += 1
            if status >= 500:
                violation(f"server error: {r.evidence()}")
            return r
        raise RuntimeError(f"{method} {path}: no node answered")


# ---------------------------------------------------------------------------------------------
# the webhook receiver


class Receiver:
    def __init__(self):
        self.got: list[tuple[float, int, str, dict | None, str]] = []  # (mono, order, id, body, raw)
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                with receiver.lock:
                    receiver.got.append(
                        (time.monotonic(), len(receiver.got), self.headers.get("webhook-id") or "", body, raw.decode(errors="replace"))
                    )
                # always 200: a retry after a receiver error would be a legitimate repeat
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        class Quiet(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):  # noqa: ARG002
                # a killed node's connections reset mid-request: expected, not worth a traceback
                if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
                    super().handle_error(request, client_address)

        self.server = Quiet(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def snapshot(self):
        with self.lock:
            return list(self.got)


# ---------------------------------------------------------------------------------------------
# the load


class World:
    def __init__(self, cluster: Cluster, tokens: dict, policy: dict):
        self.c = cluster
        self.t = tokens
        self.policy = {lv["level"]: lv for lv in policy["levels"]}
        self.records: dict[str, dict] = {}  # exception id -> what the load did to it
        self.progress = 0
        self.approver_for = {
            "security_officer": "officer",
            "asset_owner": "asset_owner",
            "ciso": "ciso",
            "compliance": "compliance",
        }

    def record(self, eid: str, kind: str) -> dict:
        rec = {"id": eid, "kind": kind, "expect": collections.Counter(), "patches": [], "notes": []}
        with LOCK:
            self.records[eid] = rec
        return rec

    def done(self):
        with LOCK:
            self.progress += 1

    def key(self) -> dict:
        return {"Idempotency-Key": str(uuid.uuid4())}

    def body(self, i: int, days: int, **extra) -> dict:
        b = {
            "title": f"Cluster run {RUN} exception {i}",
            "category": "mfa_bypass",
            "policy_id": "POL-AC-01",
            "control_ids": ["NIST-800-53:IA-2"],
            "assets": [f"vpn-{RUN}-{i}.example.net"],
            "business_unit": BU,
            "justification": "The vendor appliance cannot do MFA until the Q3 firmware upgrade.",
            "risk_owner": "erin",
            "expires_at": iso(now_utc() + dt.timedelta(days=days)),
            "controls": [{"description": "Source IP allow-list to the vendor range", "kind": "preventive", "effectiveness": "high"}],
        }
        b.update(extra)
        return b

    def get(self, eid: str, node: int | None = None) -> Resp:
        return self.c.call("GET", f"/v1/exceptions/{eid}", self.t["auditor"], node=node)

    def expect_status(self, r: Resp, want: int | tuple, what: str) -> bool:
        wants = want if isinstance(want, tuple) else (want,)
        if r.status in wants:
            return True
        if r.status < 500:  # 5xx were reported already
            violation(f"{what}: expected {'/'.join(map(str, wants))}: {r.evidence()}")
        return False

    def create(self, i: int, kind: str, days: int, submit: bool) -> tuple[dict, Resp] | tuple[None, None]:
        r = self.c.call("POST", "/v1/exceptions", self.t["requester"], self.body(i, days, submit=submit), self.key())
        if not self.expect_status(r, 201, f"create ({kind})"):
            return None, None
        rec = self.record(r.json["id"], kind)
        rec["expect"]["created"] += 1
        if submit:
            rec["expect"]["submitted"] += 1
        return rec, r

    def mutate(self, method: str, path: str, token: str, body, etag: str, eid: str, applied) -> Resp:
        """A PUT/PATCH with If-Match; an answer lost to the kill is settled by reading back:
        applied(view) says whether the change is in, else it is sent again (the tag still
        matches when it did not commit)."""
        for _ in range(3):
            r = self.c.call(method, path, token, body, {"If-Match": etag})
            if not r.ambiguous:
                return r
            STATS["lost_answers_settled_by_reading"] += 1
            g = self.get(eid)
            if g.status == 200 and applied(g.json):
                g.settled = True
                return g
        raise RuntimeError(f"{method} {path}: answer lost three times")

    def approve_all(self, i: int, level_scores: tuple[int, int], days: int):
        """Assess to a level needing several approvers, then all of them approve at once,
        each through a different node."""
        rec, r = self.create(i, "approvals", days, submit=True)
        if rec is None:
            return
        eid = rec["id"]
        lik, imp = level_scores
        rationale = f"Cluster assessment {RUN}-{i}"
        a = self.mutate(
            "PUT", f"/v1/exceptions/{eid}/risk", self.t["analyst"],
            {"method": "matrix", "likelihood": lik, "impact": imp, "rationale": rationale},
            r.header("etag"), eid, lambda v: (v.get("risk") or {}).get("rationale") == rationale,
        )
        if not self.expect_status(a, 200, "assess"):
            return
        rec["expect"]["assessed"] += 1
        level = a.json["risk"]["residual_level"]
        roles = [x["role"] for x in a.json["required_approvals"]]
        if a.json["status"] != "pending_approval":
            violation(f"assess {eid}: status {a.json['status']}, expected pending_approval")
        if roles != self.policy[level]["approvals"]:
            violation(f"{eid}: required approvals {roles} but GET /v1/policy says {level} needs {self.policy[level]['approvals']}")
        rec["level"] = level
        live = self.c.live()
        calls = []
        for k, role in enumerate(roles):
            node = live[(i + k) % len(live)]
            token = self.t[self.approver_for[role]]
            calls.append(lambda node=node, token=token, role=role: self.c.call(
                "POST", f"/v1/exceptions/{eid}/approve", token, {"role": role, "comment": "cluster"}, self.key(), node=node))
        answers = race(calls)
        ok = [x for x in answers if isinstance(x, Resp) and x.status == 200]
        for x in answers:
            if not isinstance(x, Resp):
                violation(f"approve {eid}: {x}")
            else:
                self.expect_status(x, 200, f"concurrent approval of {eid} ({len(roles)} levels, all required)")
        rec["expect"]["approval_recorded"] += len(ok)
        if len(ok) == len(roles):
            rec["expect"]["approved"] += 1
            rec["expect"]["activated"] += 1
            if not any(x.json["status"] == "active" for x in ok):
                violation(f"approve {eid}: all {len(roles)} approvals answered 200 and none of them says active: "
                          + "; ".join(x.evidence() for x in ok))
        rec["final_status"] = "active" if len(ok) == len(roles) else "pending_approval"
        rec["approvals"] = len(ok)
        # the reminders the scheduler owes (the 30-day one when the lifetime is shorter)
        if rec["final_status"] == "active":
            rec["due_reminders"] = [f"{d}d" for d in self.reminder_days if d >= days]
        # read your write through another node: covered now
        cov = self.c.call("GET", f"/v1/coverage?asset=vpn-{RUN}-{i}.example.net&control_id=NIST-800-53:IA-2", self.t["auditor"])
        if cov.status == 200 and rec["final_status"] == "active" and not cov.json.get("covered"):
            violation(f"coverage after the last approval of {eid} says not covered: {cov.evidence()}")

    def approve_race(self, i: int):
        """One required level, two security officers at once through two nodes: one wins."""
        rec, r = self.create(i, "approval race", 60, submit=True)
        if rec is None:
            return
        eid = rec["id"]
        rationale = f"Cluster low assessment {RUN}-{i}"
        a = self.mutate(
            "PUT", f"/v1/exceptions/{eid}/risk", self.t["analyst"],
            {"method": "matrix", "likelihood": 2, "impact": 2, "rationale": rationale},
            r.header("etag"), eid, lambda v: (v.get("risk") or {}).get("rationale") == rationale,
        )
        if not self.expect_status(a, 200, "assess"):
            return
        rec["expect"]["assessed"] += 1
        roles = [x["role"] for x in a.json["required_approvals"]]
        level = a.json["risk"]["residual_level"]
        if roles != self.policy[level]["approvals"] or len(roles) != 1:
            violation(f"{eid}: level {level} requires {roles}; policy: {self.policy[level]['approvals']}; expected one level")
            return
        role = roles[0]
        people = [self.t[self.approver_for[role]], self.t[self.approver_for[role] + "2"]]
        live = self.c.live()
        nodes = [live[i % len(live)], live[(i + 1) % len(live)]]
        answers = race([
            lambda k=k: self.c.call("POST", f"/v1/exceptions/{eid}/approve", people[k], None, self.key(), node=nodes[k])
            for k in range(2)
        ])
        resps = [x for x in answers if isinstance(x, Resp)]
        wins = [x for x in resps if x.status == 200]
        losers = [x for x in resps if x.status != 200]
        if len(wins) != 1:
            violation(f"two officers approving {eid} at once (one level): {len(wins)} succeeded, expected exactly 1: "
                      + " | ".join(x.evidence() for x in resps))
        for x in losers:
            code = (x.json or {}).get("code")
            if x.status not in (403, 409) or code not in ("invalid_transition", "forbidden"):
                violation(f"the losing approval of {eid}: expected 409 invalid_transition (or 403): {x.evidence()}")
        rec["expect"]["approval_recorded"] += len(wins)
        if wins:
            rec["expect"]["approved"] += 1
            rec["expect"]["activated"] += 1
        rec["final_status"] = "active" if wins else "pending_approval"
        rec["approvals"] = min(len(wins), 1)

    def patches(self, i: int):
        """Optimistic concurrency and last-writer-wins on one draft, across nodes."""
        rec, r = self.create(i, "patches", 60, submit=False)
        if rec is None:
            return
        eid = rec["id"]
        etag = r.header("etag")
        live = self.c.live()
        nodes = [live[i % len(live)], live[(i + 1) % len(live)]]
        tags = [f"race-{RUN}-{i}-a", f"race-{RUN}-{i}-b"]
        answers = race([
            lambda k=k: self.c.call("PATCH", f"/v1/exceptions/{eid}", self.t["requester"], {"tags": [tags[k]]},
                                    {"If-Match": etag}, node=nodes[k])
            for k in range(2)
        ])
        resps = [x for x in answers if isinstance(x, Resp)]
        if any(x.ambiguous for x in resps):
            note(f"If-Match race on {eid}: an answer was lost to the kill; judged from the trail only")
        else:
            codes = sorted(x.status for x in resps)
            if codes != [200, 412]:
                violation(f"two PATCHes with If-Match {etag} on {eid} through node{nodes[0] + 1} and node{nodes[1] + 1}: "
                          f"statuses {codes}, expected exactly one 200 and one 412: " + " | ".join(x.evidence() for x in resps))
            for x in resps:
                if x.status == 412 and (x.json or {}).get("code") != "precondition_failed":
                    violation(f"412 without code precondition_failed: {x.evidence()}")
        for k, x in enumerate(resps):
            rec["patches"].append({"tag": tags[k], "status": x.status, "ambiguous": x.ambiguous,
                                   "version": (x.json or {}).get("version") if x.status == 200 else None,
                                   "if_match": True})
        # last writer wins: four at once, none may be lost
        plain = [f"lww-{RUN}-{i}-{k}" for k in range(4)]
        answers = race([
            lambda t=t: self.c.call("PATCH", f"/v1/exceptions/{eid}", self.t["requester"], {"tags": [t]})
            for t in plain
        ])
        for t, x in zip(plain, answers):
            if not isinstance(x, Resp):
                violation(f"PATCH {eid}: {x}")
                continue
            if not x.ambiguous:
                self.expect_status(x, 200, "PATCH without If-Match")
            rec["patches"].append({"tag": t, "status": x.status, "ambiguous": x.ambiguous,
                                   "version": (x.json or {}).get("version") if x.status == 200 else None,
                                   "if_match": False})
        g = self.get(eid)
        if not self.expect_status(g, 200, "read back"):
            return
        s = self.c.call("POST", f"/v1/exceptions/{eid}/submit", self.t["requester"], None,
                        {"If-Match": g.header("etag"), **self.key()})
        if not self.expect_status(s, 200, "submit after the patches"):
            return
        rec["expect"]["submitted"] += 1
        w = self.c.call("POST", f"/v1/exceptions/{eid}/withdraw", self.t["requester"], {"comment": "done"}, self.key())
        if self.expect_status(w, 200, "withdraw"):
            rec["expect"]["withdrawn"] += 1
        rec["final_status"] = "withdrawn"

    def import_expiring(self, n: int, seconds: tuple[float, float], label: str) -> list[tuple[str, dt.datetime]]:
        """Legacy exceptions, active, expiring `seconds` from now (spread over n rows)."""
        now = now_utc()
        rows, expiries = [], []
        for k in range(n):
            ahead = seconds[0] + (seconds[1] - seconds[0]) * k / max(1, n - 1)
            expires = (now + dt.timedelta(seconds=ahead)).replace(microsecond=0)
            expiries.append(expires)
            rows.append(self.body(
                f"{label}{k}", 60,
                status="active",
                created_at=iso(now - dt.timedelta(days=20)),
                expires_at=iso(expires),
                risk={"method": "matrix", "likelihood": 2, "impact": 2, "rationale": "Old register: low"},
                approvals=[{"role": "security_officer", "approver": "carol", "approved_at": iso(now - dt.timedelta(days=19))}],
            ))
        r = self.c.call("POST", "/v1/imports?legacy=true", self.t["admin"], rows, self.key())
        if not self.expect_status(r, 200, "legacy import"):
            return []
        out = []
        for res, expires in zip(r.json["results"], expiries):
            if res["status"] != "created":
                violation(f"legacy import row {res['row']}: {short(res)}")
                continue
            rec = self.record(res["id"], "expiry")
            rec["expect"]["imported"] += 1
            rec["expect"]["expired"] += 1
            rec["expires_at"] = expires
            rec["final_status"] = "expired"
            out.append((res["id"], expires))
        return out

    def reads(self, i: int):
        r = self.c.call("GET", f"/v1/exceptions?business_unit={BU}&limit=20&sort=-updated_at", self.t["auditor"])
        self.expect_status(r, 200, "list")
        r = self.c.call("GET", "/v1/events?limit=20", self.t["auditor"])
        self.expect_status(r, 200, "feed")


def race(calls):
    """Runs the calls at the same moment, one thread each; answers (or the exception raised)."""
    barrier = threading.Barrier(len(calls))
    out = [None] * len(calls)

    def run(k):
        try:
            barrier.wait(timeout=30)
            out[k] = calls[k]()
        except Exception as e:  # noqa: BLE001
            out[k] = e

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


# ---------------------------------------------------------------------------------------------
# reading back (always through node 3)


def paged(c: Cluster, token: str, path: str, items_key="items", after_key="next_after", limit=100) -> list:
    out, after = [], 0
    for _ in range(100000):
        sep = "&" if "?" in path else "?"
        r = c.call("GET", f"{path}{sep}after={after}&limit={limit}", token, node=SURVIVOR)
        if r.status != 200:
            raise RuntimeError(f"paging {path}: {r.evidence()}")
        items = r.json[items_key]
        out.extend(items)
        nxt = r.json.get(after_key)
        if not items or nxt is None or nxt == after:
            return out
        after = nxt
    raise RuntimeError(f"paging {path} did not end")


def read_feed(c: Cluster, token: str) -> list:
    return paged(c, token, "/v1/events", limit=50)


def read_audit_log(c: Cluster, token: str) -> list:
    return paged(c, token, "/v1/audit/events", limit=500)


# ---------------------------------------------------------------------------------------------


def main() -> int:
    for tool in (BIN,):
        if not os.access(tool, os.X_OK):
            print(f"no executable leeway at {tool} (set LEEWAY_BIN, or build it)", file=sys.stderr)
            return 1
    log(f"binary {BIN}; database {DB_NAME} on {PG_ADMIN}")
    psql(f"CREATE DATABASE {DB_NAME}")
    try:
        return run()
    finally:
        stop_children()
        try:
            psql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        except Exception as e:  # noqa: BLE001
            print(f"warning: could not drop {DB_NAME}: {e}", file=sys.stderr)


def run() -> int:
    run_cli("migrate")
    nodes = [Node(i) for i in range(3)]
    for n in nodes:
        n.start()
    c = Cluster(nodes)
    deadline = time.monotonic() + 60
    for n in nodes:
        while True:
            if n.proc.poll() is not None:
                raise RuntimeError(f"{n.name} exited with {n.proc.returncode}:\n{n.tail()}")
            try:
                if send_once(n, "GET", "/readyz", None, None, None, 2)[0] == 200:
                    break
            except (Refused, Lost):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{n.name} not ready in 60 s:\n{n.tail()}")
            time.sleep(0.1)
    log("three nodes ready on ports " + ", ".join(str(n.port) for n in nodes))

    people = {
        "requester": ("alice", "requester", BU),
        "analyst": ("bob", "analyst", None),
        "officer": ("carol", "security_officer", None),
        "officer2": ("carla", "security_officer", None),
        "asset_owner": ("frank", "asset_owner", None),
        "asset_owner2": ("fiona", "asset_owner", None),
        "ciso": ("dave", "ciso", None),
        "ciso2": ("dana", "ciso", None),
        "compliance": ("gina", "compliance", None),
        "compliance2": ("gus", "compliance", None),
        "auditor": ("audrey", "auditor", None),
        "admin": ("root", "admin", None),
    }
    tokens = {}
    for k, (sub, roles, unit) in people.items():
        args = ["token", "--sub", sub, "--roles", roles, "--ttl", "1h"]
        if unit:
            args += ["--business-unit", unit]
        tokens[k] = run_cli(*args)

    receiver = Receiver()
    r = c.call("POST", "/v1/webhooks", tokens["admin"], {"url": receiver.url, "description": "cluster test"}, node=SURVIVOR)
    if r.status != 201:
        raise RuntimeError(f"webhook subscription refused: {r.evidence()}")
    webhook_id = r.json["id"]
    policy = c.call("GET", "/v1/policy", tokens["analyst"], node=1)
    if policy.status != 200:
        raise RuntimeError(f"policy: {policy.evidence()}")
    w = World(c, tokens, policy.json)
    w.reminder_days = list(policy.json["reminder_days_before"])
    levels = {lv["level"]: lv for lv in policy.json["levels"]}
    log("policy: " + ", ".join(f"{k} -> {'+'.join(v['approvals'])}" for k, v in levels.items()))

    # the work: (function, args); critical lives 25 days (max 30) so its 30-day reminder is due
    plan = []
    expiring: list[tuple[str, dt.datetime]] = []
    scores = [((3, 3), 60), ((4, 4), 60), ((5, 4), min(25, levels["critical"]["max_duration_days"]))]
    for i in range(24):
        plan.append((w.approve_all, (i, *scores[i % 3])))
    for i in range(100, 120):
        plan.append((w.approve_race, (i,)))
    for i in range(200, 220):
        plan.append((w.patches, (i,)))
    for i in range(300, 312):
        plan.append((w.reads, (i,)))
    # interleave the kinds so every phase of the run has each
    plan = [plan[k] for k in sorted(range(len(plan)), key=lambda k: (k * 7919) % len(plan))]

    expiring += w.import_expiring(4, (3, 4.5), "early")  # expire while the load runs
    log(f"imported {len(expiring)} legacy exceptions expiring in 3..4.5 s")

    started = time.monotonic()
    total = len(plan) + 1
    late_import: list = []

    def late():
        late_import.extend(w.import_expiring(4, (8, 12), "late"))  # expire after the kill

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(f, *a) for f, a in plan]
        for f in futures:
            f.add_done_callback(lambda _f: w.done())
        # SIGKILL node 1 once a third of the work is done, while the rest is in flight
        while w.progress < total // 3 and time.monotonic() - started < 30:
            time.sleep(0.02)
        nodes[KILLED].proc.send_signal(signal.SIGKILL)
        c.kill_time = time.monotonic()
        nodes[KILLED].killed = True
        nodes[KILLED].proc.wait()
        log(f"SIGKILLed {nodes[KILLED].name} with {w.progress}/{total} tasks done")
        # more exceptions, imported after the kill, expire on the surviving nodes' schedulers
        futures.append(pool.submit(late))
        futures[-1].add_done_callback(lambda _f: w.done())
        for f in futures:
            try:
                f.result()
            except Exception as e:  # noqa: BLE001
                violation(f"a task failed: {e!r}\n{''.join(traceback.format_exception(e))}")
    expiring += late_import
    log(f"load done in {time.monotonic() - started:.1f}s: {len(w.records)} exceptions")

    for n in nodes:
        if n.index != KILLED and not n.alive():
            violation(f"{n.name} died (exit {n.proc.returncode}):\n{n.tail()}")

    auditor = tokens["auditor"]

    # ---- wait: every expiry and every reminder the scheduler owes, then the feed, then webhooks
    histories: dict = {}

    def history(eid: str) -> dict:
        r = c.call("GET", f"/v1/exceptions/{eid}/history", auditor, node=SURVIVOR)
        if r.status != 200:
            raise RuntimeError(f"history of {eid}: {r.evidence()}")
        histories[eid] = r.json
        return r.json

    def owed_done(rec) -> bool:
        h = history(rec["id"])
        actions = collections.Counter(e["action"] for e in h["items"])
        thresholds = {e["changes"].get("threshold") for e in h["items"] if e["action"] == "expiring"}
        return actions["expired"] >= rec["expect"]["expired"] and all(t in thresholds for t in rec.get("due_reminders", []))

    owed = [rec for rec in w.records.values() if rec["expect"]["expired"] or rec.get("due_reminders")]
    last_expiry = max((e for _, e in expiring), default=now_utc())
    wait_until = time.monotonic() + max(0.0, (last_expiry - now_utc()).total_seconds()) + 20
    pending = list(owed)
    while pending and time.monotonic() < wait_until:
        pending = [rec for rec in pending if not owed_done(rec)]
        if pending:
            time.sleep(0.5)
    for rec in pending:
        violation(f"{rec['id']} ({rec['kind']}): the scheduler never did what was due "
                  f"(expiry at {rec.get('expires_at')}, reminders {rec.get('due_reminders')}): {short(history(rec['id']), 2000)}")
    log(f"schedulers expired {len(expiring) - sum(1 for r in pending if r['kind'] == 'expiry')}/{len(expiring)} exceptions")

    # feed: every integration event of the audit log numbered (stable twice in a row)
    feed_deadline = time.monotonic() + 30
    prev = None
    while True:
        audit = read_audit_log(c, auditor)
        feed = read_feed(c, auditor)
        with_event = [e for e in audit if ACTION_EVENT.get(e["action"]) is not None]
        state = (len(with_event), len(feed), audit[-1]["seq"] if audit else 0)
        if len(feed) >= len(with_event) and state == prev:
            break
        if time.monotonic() > feed_deadline:
            break
        prev = state
        time.sleep(0.5)

    # webhooks: every feed event received, every delivery ended (a dead node's claims lapse
    # after the lease: allow it)
    feed_ids = {f["id"] for f in feed}
    hook_deadline = max(time.monotonic() + 20, (c.kill_time or 0) + LEASE_SECONDS + 25)
    deliveries: list = []
    while True:
        got_ids = {g[2] for g in receiver.snapshot()}
        deliveries = paged(c, tokens["admin"], f"/v1/webhooks/{webhook_id}/deliveries", limit=100)
        unfinished = [d for d in deliveries if d["status"] != "succeeded"]
        if feed_ids <= got_ids and not unfinished and len(deliveries) >= len(feed_ids):
            break
        if time.monotonic() > hook_deadline:
            break
        time.sleep(0.5)
    time.sleep(1.0)  # a last moment for any stray repeat to arrive
    receipts = receiver.snapshot()
    deliveries = paged(c, tokens["admin"], f"/v1/webhooks/{webhook_id}/deliveries", limit=100)
    log(f"feed {len(feed)} events; {len(receipts)} webhook receipts; {len(deliveries)} deliveries")

    # ---- checks
    check_trails(c, w, auditor, history, audit)
    check_feed(w, audit, feed)
    check_webhooks(c, w, feed, receipts, deliveries)

    v = c.call("GET", "/v1/audit/verify", auditor, node=SURVIVOR)
    if v.status != 200 or v.json.get("valid") is not True:
        violation(f"GET /v1/audit/verify is not valid: {v.evidence()}")

    for n in nodes:
        if n.index == KILLED:
            continue
        text = n.log_path.read_text(errors="replace")
        for line in text.splitlines():
            if "panicked" in line or " ERROR " in line or '"level":"ERROR"' in line:
                violation(f"{n.name} logged: {line[:500]}")

    # everything read, for a look after the run
    records = {k: {**v, "expect": dict(v["expect"]), "expires_at": str(v.get("expires_at"))} for k, v in w.records.items()}
    (WORKDIR / "state.json").write_text(json.dumps({
        "records": records, "histories": histories, "audit_log": audit, "feed": feed, "deliveries": deliveries,
        "receipts": [{"t": r[0] - T0, "webhook_id": r[2], "body": r[3]} for r in receipts],
        "kill_time": (c.kill_time or T0) - T0,
    }, indent=1, default=str))

    # ---- summary
    kinds = collections.Counter(rec["kind"] for rec in w.records.values())
    print()
    print(f"three_nodes: {time.monotonic() - T0:.1f}s; {len(w.records)} exceptions ("
          + ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())) + ")")
    print("  requests: " + ", ".join(f"{k}={v}" for k, v in sorted(STATS.items())))
    print(f"  {nodes[KILLED].name} SIGKILLed at {c.kill_time - T0:.1f}s; feed {len(feed)} events; "
          f"{len(receipts)} webhook receipts ({len({g[2] for g in receipts})} distinct); audit verify valid={v.json.get('valid') if v.json else None}")
    stalled = [r for r in receipts if c.kill_time and r[0] >= c.kill_time + LEASE_SECONDS - 5]
    if stalled:
        print(f"  {len(stalled)} webhook(s) waited for {nodes[KILLED].name}'s {LEASE_SECONDS} s delivery lease to lapse")
    for n_ in NOTES:
        print("  note: " + n_)
    if VIOLATIONS:
        print(f"\nFAILED: {len(VIOLATIONS)} violation(s):")
        for k, msg in enumerate(VIOLATIONS, 1):
            print(f"  {k}. {msg}")
        for n in nodes:
            print(f"\n--- {n.name} log (last lines) ---\n{n.tail(20)}")
        print(f"\nnode logs and everything read (state.json) are in {WORKDIR}")
        return 1
    print("OK: every check held")
    if not os.environ.get("LEEWAY_CLUSTER_KEEP"):
        shutil.rmtree(WORKDIR, ignore_errors=True)
    else:
        print(f"node logs and everything read (state.json) are in {WORKDIR}")
    return 0


def check_trails(c: Cluster, w: World, auditor: str, history, audit: list) -> None:
    known = set(w.records)
    by_exc = collections.defaultdict(list)
    for e in audit:
        by_exc[e["exception_id"]].append(e)
    stray = set(by_exc) - known
    if stray:
        violation(f"the audit log has events of exceptions the load never made: {sorted(stray)[:5]}")
    for action in {e["action"] for e in audit} - set(ACTION_EVENT):
        violation(f"unknown audit action {action!r}: teach tests/cluster/three_nodes.py its event")

    for eid, rec in w.records.items():
        h = history(eid)
        items = h["items"]
        if h["chain"].get("valid") is not True:
            violation(f"{eid}: history chain not valid: {short(h['chain'])}")
        if [e["seq"] for e in items] != [e["seq"] for e in by_exc.get(eid, [])]:
            violation(f"{eid}: history {[e['seq'] for e in items]} differs from the audit log {[e['seq'] for e in by_exc.get(eid, [])]}")
        actions = collections.Counter(e["action"] for e in items)
        # transitions and recorded approvals: exactly what the load caused
        for action in set(actions) | set(rec["expect"]):
            if action == "expiring" or (action == "updated" and rec["patches"]):
                continue  # judged below, by threshold and by PATCH
            if actions[action] != rec["expect"][action]:
                violation(f"{eid} ({rec['kind']}): {actions[action]} '{action}' event(s), expected {rec['expect'][action]}: "
                          + ", ".join(f"{e['seq']}:{e['action']}" for e in items))
        # reminders: each threshold at most once; those owed exactly once
        thresholds = collections.Counter(e["changes"].get("threshold") for e in items if e["action"] == "expiring")
        for t, n in thresholds.items():
            if n > 1:
                violation(f"{eid}: expiry reminder {t} sent {n} times: {short([e for e in items if e['action'] == 'expiring'])}")
        for t in rec.get("due_reminders", []):
            if thresholds[t] != 1:
                violation(f"{eid}: expiry reminder {t} was due and was sent {thresholds[t]} times")
        if rec["kind"] != "expiry":  # imported ones may or may not owe reminders; others owe exactly these
            extra = set(thresholds) - set(rec.get("due_reminders", []))
            if extra:
                violation(f"{eid}: expiry reminders {sorted(extra)} sent, none was due: "
                          + short([e for e in items if e["action"] == "expiring"]))
        # status continuity: each event starts where the one before ended
        for a, b in zip(items, items[1:]):
            if b.get("from_status") is not None and b["from_status"] != a["to_status"]:
                violation(f"{eid}: event {b['seq']} ({b['action']}) from {b['from_status']} after {a['seq']} ({a['action']}) to {a['to_status']}")
        for e in items:
            if e["action"] == "expired" and rec.get("expires_at"):
                # written when a scheduler (or a write) noticed; effective at the expiry itself
                effective = (e.get("changes") or {}).get("effective_at")
                if effective is None or parse_time(effective) != rec["expires_at"] or parse_time(e["at"]) < rec["expires_at"]:
                    violation(f"{eid}: expired event {short(e)} does not match its expiry {iso(rec['expires_at'])}")
        # the exception now
        g = c.call("GET", f"/v1/exceptions/{eid}", auditor, node=SURVIVOR)
        if g.status != 200:
            violation(f"read {eid}: {g.evidence()}")
            continue
        view = g.json
        if rec.get("final_status") and view["status"] != rec["final_status"]:
            violation(f"{eid} ({rec['kind']}): status {view['status']}, expected {rec['final_status']}")
        if "approvals" in rec:
            counting = [a for a in view["approvals"] if a["counts"]]
            if len(counting) != rec["approvals"]:
                violation(f"{eid}: {len(counting)} approvals count, expected {rec['approvals']}: {short(view['approvals'])}")
        # versions add up: one per write that changed something (each request's events share
        # its request id; the scheduler's writes carry none, one write per tick)
        if rec["kind"] != "expiry":
            writes = len({e.get("request_id") or f"tick-{e['seq']}" for e in items})
            if view["version"] != writes:
                violation(f"{eid}: version {view['version']}, but its trail holds {writes} writes: "
                          + ", ".join(f"{e['seq']}:{e['action']}:{e.get('request_id')}" for e in items))
        if rec["patches"]:
            check_patches(eid, rec, items, view)


def check_patches(eid: str, rec: dict, items: list, view: dict) -> None:
    """No update lost, none applied twice: each `updated` event names the tags it set
    (`changes.tags.to`); every 2xx PATCH is there exactly once, no 412 one is, and nothing
    else is."""
    updates = [e for e in items if e["action"] == "updated"]
    set_by = collections.Counter()
    for e in updates:
        tags = (e.get("changes") or {}).get("tags")
        to = tags.get("to") if isinstance(tags, dict) else None
        if not isinstance(to, list) or len(to) != 1:
            violation(f"{eid}: updated event {e['seq']} does not say which tags it set: {short(e)}")
            continue
        set_by[to[0]] += 1
    sent = {p["tag"]: p for p in rec["patches"]}
    for tag, n in set_by.items():
        if tag not in sent:
            violation(f"{eid}: an updated event set tags [{tag}], which no PATCH sent")
    for p in rec["patches"]:
        n = set_by[p["tag"]]
        if p["status"] == 200 and n != 1:
            violation(f"{eid}: PATCH tags=[{p['tag']}] answered 200 (version {p['version']}) and the trail shows it "
                      f"{n} times ({'lost update' if n == 0 else 'applied twice'}): "
                      + " | ".join(json.dumps(e["changes"]) for e in updates))
        if p["status"] == 412 and n != 0:
            violation(f"{eid}: PATCH tags=[{p['tag']}] answered 412 but the trail shows it applied")
        if p["ambiguous"]:
            if n > 1:
                violation(f"{eid}: PATCH tags=[{p['tag']}] (answer lost to the kill) applied {n} times")
            note(f"{eid}: PATCH tags=[{p['tag']}] lost its answer to the kill; the trail shows it {n} time(s)")
    versions = [p["version"] for p in rec["patches"] if p["status"] == 200]
    if len(versions) != len(set(versions)):
        violation(f"{eid}: two successful PATCHes answered the same version: {rec['patches']}")
    # the trail's order is the version order of the answers
    by_version = [p["tag"] for p in sorted((p for p in rec["patches"] if p["status"] == 200), key=lambda p: p["version"])]
    in_trail = [t for t in ((e["changes"].get("tags") or {}).get("to", [None])[0] for e in updates) if t in
                {p["tag"] for p in rec["patches"] if p["status"] == 200}]
    if by_version != in_trail:
        violation(f"{eid}: PATCHes answered in version order {by_version}, the trail applied them as {in_trail}")
    # what the last writer wrote is what is there (the draft was then only submitted, withdrawn)
    if updates:
        last = updates[-1]["changes"]["tags"]["to"]
        if view["tags"] != last:
            violation(f"{eid}: tags {view['tags']}, but the last update set {last}")


def check_feed(w: World, audit: list, feed: list) -> None:
    seqs = [f["seq"] for f in feed]
    if seqs != list(range(1, len(feed) + 1)):
        gaps = sorted(set(range(1, (max(seqs) if seqs else 0) + 1)) - set(seqs))
        dups = [s for s, n in collections.Counter(seqs).items() if n > 1]
        violation(f"feed positions are not 1..{len(feed)} in order: gaps {gaps[:20]}, repeated {dups[:20]}")
    ids = collections.Counter(f["id"] for f in feed)
    for i, n in ids.items():
        if n > 1:
            violation(f"feed holds event {i} {n} times: {short([f for f in feed if f['id'] == i])}")
    want = collections.defaultdict(list)
    for e in audit:
        t = ACTION_EVENT.get(e["action"])
        if t:
            want[e["exception_id"]].append((t, parse_time(e["at"])))
    have = collections.defaultdict(list)
    for f in feed:
        have[f["exception_id"]].append((f["type"], parse_time(f["at"])))
        d = f.get("data") or {}
        if d.get("event_seq") != f["seq"] or d.get("id") != f["exception_id"]:
            violation(f"feed item {f['seq']}: data.event_seq {d.get('event_seq')} / data.id {d.get('id')} do not match")
    for eid in set(want) | set(have):
        if want[eid] != have[eid]:
            missing = list((collections.Counter(want[eid]) - collections.Counter(have[eid])).elements())
            extra = list((collections.Counter(have[eid]) - collections.Counter(want[eid])).elements())
            violation(f"feed for {eid} differs from its audit trail: missing {missing}, extra {extra}, "
                      f"order trail {[t for t, _ in want[eid]]} feed {[t for t, _ in have[eid]]}")


def check_webhooks(c: Cluster, w: World, feed: list, receipts: list, deliveries: list) -> None:
    by_id = {f["id"]: f for f in feed}
    got = collections.defaultdict(list)
    for r in receipts:
        got[r[2]].append(r)
    for wid, rs in got.items():
        f = by_id.get(wid)
        if f is None:
            violation(f"received webhook-id {wid!r} that the feed does not hold: {short(rs[0][4])}")
            continue
        for r in rs:
            body = r[3] or {}
            if body.get("type") != f["type"] or (body.get("data") or {}).get("event_seq") != f["seq"]:
                violation(f"webhook {wid}: type {body.get('type')} event_seq {(body.get('data') or {}).get('event_seq')}, "
                          f"the feed says {f['type']} at {f['seq']}")
        if len(rs) > 1:
            # the one legitimate repeat: node 1 sent it, was killed before recording the
            # attempt, and another node sent it again once node 1's lease had lapsed
            if (c.kill_time is not None and len(rs) == 2 and rs[0][0] <= c.kill_time + 1.0
                    and rs[1][0] >= rs[0][0] + LEASE_SECONDS - 5):
                TOLERATED.add(wid)
                note(f"webhook {wid} ({f['type']} of {f['exception_id']}) arrived twice: first {rs[0][0] - T0:.1f}s, "
                     f"before the kill at {c.kill_time - T0:.1f}s, again {rs[1][0] - T0:.1f}s once the dead node's lease lapsed "
                     "(at-least-once; tolerated)")
            else:
                violation(f"webhook {wid} ({f['type']} of {f['exception_id']}) delivered {len(rs)} times, at "
                          + ", ".join(f"{r[0] - T0:.1f}s" for r in rs)
                          + f" (kill at {(c.kill_time or 0) - T0:.1f}s); bodies identical: {len({r[4] for r in rs}) == 1}")
    missing = [f for f in feed if f["id"] not in got]
    if missing:
        violation(f"{len(missing)} feed event(s) never reached the receiver, e.g. "
                  + "; ".join(f"{f['seq']} {f['type']} {f['exception_id']}" for f in missing[:5]))
    # in order per exception (first arrivals)
    order = collections.defaultdict(list)
    for r in sorted(receipts, key=lambda r: r[1]):
        f = by_id.get(r[2])
        if f and r[2] not in {x for x, _ in order[f["exception_id"]]}:
            order[f["exception_id"]].append((r[2], f["seq"]))
    for eid, seq in order.items():
        s = [x for _, x in seq]
        if s != sorted(s):
            violation(f"webhooks for {eid} arrived out of order: feed positions {s}")
    # expiries: one exception.expired webhook per expiring exception
    for eid, rec in w.records.items():
        if rec["kind"] == "expiry":
            n = sum(1 for f in feed if f["exception_id"] == eid and f["type"] == "exception.expired" and f["id"] in got)
            if n != 1:
                violation(f"{eid}: {n} exception.expired webhook(s), expected exactly 1")
    # the delivery log: one delivery per event, all succeeded, attempts match what arrived
    per_event = collections.Counter(d["event_id"] for d in deliveries)
    for eid, n in per_event.items():
        if n > 1:
            violation(f"event {eid} has {n} deliveries for one subscription")
    if set(per_event) != set(by_id):
        violation(f"deliveries and feed differ: {len(set(by_id) - set(per_event))} events without a delivery, "
                  f"{len(set(per_event) - set(by_id))} deliveries without a feed event")
    for d in deliveries:
        if d["status"] != "succeeded":
            violation(f"delivery {d['id']} ({d['event_type']} seq {d['event_seq']}) is {d['status']}: {short(d['attempts'])}")
            continue
        n_got = len(got.get(d["event_id"], []))
        n_att = len(d["attempts"])
        if n_got != n_att and not (n_got == n_att + 1 and d["event_id"] in TOLERATED):
            violation(f"delivery {d['id']} ({d['event_type']}): {n_att} recorded attempt(s), {n_got} arrival(s): {short(d['attempts'])}")


if __name__ == "__main__":
    def _on_signal(signum, _frame):
        stop_children()
        sys.exit(1)

    signal.signal(signal.SIGTERM, _on_signal)
    try:
        code = main()
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        print(f"\nFAILED: the run could not be carried out: {e}", file=sys.stderr)
        code = 1
    finally:
        stop_children()
    sys.exit(code)

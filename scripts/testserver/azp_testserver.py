#!/usr/bin/env python3
"""An independent Azure Pipelines agent-facing server, for tests only.

What it is written from: Microsoft's documentation of the agent protocol (summarised in the
project's design notes, protocol.md) and the real agent's own source
(microsoft/azure-pipelines-agent: Agent.Listener/{Agent,MessageListener,JobDispatcher}.cs,
Agent.Listener/Configuration/*.cs, Agent.Worker/JobRunner.cs, and the job-message template in
src/Test/L1/Worker/L1TestBase.cs). It is deliberately NOT written from fleetsim's own emulator
(sim/core/src/server, sim/live/src/server): a bug the two share would otherwise go unseen.

It is laid out the way Azure DevOps Services is, which is where it differs from the emulator:

* three listeners, all on 127.0.0.0/8:
  - the collection, served under a path (``/org``) and nothing outside it;
  - a separate token authority (``/vssps/org/_apis/oauth2/token`` on its own port), named in
    the registration answer's ``authorization.authorizationUrl``; the collection has no token
    endpoint;
  - the plan hub, named by each job's ``SystemVssConnection.url`` (127.0.0.2 when that address
    can be bound, else another port on 127.0.0.1); plan-hub routes exist only there and take
    only that job's access token;
* ``expires_in`` in the token answer is a JSON string (``"3599"``);
* jobs are queued by the server itself, never through an admin API, and dispatched as
  ``PipelineAgentJobRequest`` messages shaped like the real agent's test template (plan version
  9, Checkout + CmdLine + Bash task steps with their own record ids, secret variables, regex
  mask hints, the SystemVssConnection endpoint with an OAuth AccessToken);
* it also sends ``JobMetadataUpdate``, ``AgentRefresh`` and an unknown message type, which a
  listener must acknowledge and skip.

It records what happened (per job: delivered, acked, lock renewed, timeline records updated with
the message's own record ids, feed, logs, attachments, secret leaks, completion; sessions; tokens)
and serves that tally, with pass/fail checks, at ``GET /org/_testserver/stats`` (no auth), and
writes it to ``--stats-file`` on exit.

It never: accepts connections off loopback, reads a body without a size limit or a read
deadline, stores anything on disk except the stats file, or implements what the agent does not
call (no task execution, no build API).

Start-up prints one JSON line on stdout with the URLs, then serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import ipaddress
import json
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
import urllib.parse
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# ---------------------------------------------------------------------------------------------
# Limits: every one says what happens when it is reached.
# ---------------------------------------------------------------------------------------------

#: Largest request body read; bigger ones get 413 without being read. The agent pages logs at
#: 8 MB, so 16 MiB leaves room for framing.
BODY_BYTES_MAX = 16 * 1024 * 1024
#: Socket read deadline per request (headers and body), from its request line on; a slower
#: client is disconnected.
READ_DEADLINE_S = 30.0
#: How long a kept-alive connection may sit idle before the next request line. Longer than HTTP
#: clients' pool idle timeouts (hyper/reqwest: 90 s), so the server never closes a connection
#: the client is about to reuse (that race would show up as spurious client errors).
KEEPALIVE_IDLE_S = 300.0
#: Lines kept in the stats' bounded sample lists (leaks, unexpected requests).
SAMPLES_MAX = 20
#: Distinct (method, route) keys counted for unexpected requests; more go to one "other" key.
UNEXPECTED_KEYS_MAX = 64
#: A JWT client assertion may live at most this long (the agent mints 5 minutes).
ASSERTION_LIFETIME_MAX_S = 15 * 60

# Well-known identifiers (from the REST specs and the agent source).
AREA_DISTRIBUTEDTASK = "a85b8835-c1a1-4aac-ae97-1c3d0ba72dbd"
SERVICE_OWNER_TFS = "00025394-6065-48ca-87d9-7f5672854ef7"
TASK_CHECKOUT = ("6d15af64-176c-496d-b583-fd2ae21d4df4", "Checkout", "1.0.0")
TASK_CMDLINE = ("d0c4ac01-adbe-42b5-845a-b063e9213a8c", "CmdLine", "2.279.1")
TASK_BASH = ("6c731c3c-3c68-459a-a5c9-bde6e6595b5b", "Bash", "3.250.1")
HUB_PREFIX = "{scopeIdentifier}/_apis/distributedtask/hubs/{hubName}/plans/{planId}"

#: (id, area, resourceName, routeTemplate): what OPTIONS and connectionData advertise.
LOCATIONS = [
    ("a8c47e17-4d56-4a56-92bb-de7ea7dc65be", "distributedtask", "pools",
     "_apis/distributedtask/pools/{poolId}"),
    ("e298ef32-5878-4cab-993c-043836571f42", "distributedtask", "agents",
     "_apis/distributedtask/pools/{poolId}/agents/{agentId}"),
    ("134e239e-2df3-4794-a6f6-24f1f19ec8dc", "distributedtask", "sessions",
     "_apis/distributedtask/pools/{poolId}/sessions/{sessionId}"),
    ("c3a054f6-7a8a-49c0-944e-3a8e5d7adfd7", "distributedtask", "messages",
     "_apis/distributedtask/pools/{poolId}/messages/{messageId}"),
    ("fc825784-c92a-4299-9221-998a02d1b54f", "distributedtask", "jobrequests",
     "_apis/distributedtask/pools/{poolId}/jobrequests/{requestId}"),
    ("83597576-cc2c-453c-bea6-2882ae6a1653", "distributedtask", "timelines",
     HUB_PREFIX + "/timelines/{timelineId}"),
    ("8893bc5b-35b2-4be7-83cb-99e683551db4", "distributedtask", "records",
     HUB_PREFIX + "/timelines/{timelineId}/records/{recordId}"),
    ("858983e4-19bd-4c5e-864c-507b59b58b12", "distributedtask", "feed",
     HUB_PREFIX + "/timelines/{timelineId}/records/{recordId}/feed"),
    ("46f5667d-263a-4684-91b1-dff7fdcf64e2", "distributedtask", "logs",
     HUB_PREFIX + "/logs/{logId}"),
    ("7898f959-9cdf-4096-b29e-7f293031629e", "distributedtask", "attachments",
     HUB_PREFIX + "/timelines/{timelineId}/records/{recordId}/attachments/{type}/{name}"),
    ("557624af-b29e-4c20-8ab0-0399d2204f3f", "distributedtask", "events", HUB_PREFIX + "/events"),
    ("60aac929-f0cd-4bc8-9ce4-6b30e8f1b1bd", "distributedtask", "tasks",
     "_apis/distributedtask/tasks/{taskId}/{versionString}"),
]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def dotnet_time(t: datetime) -> str:
    """A timestamp as the .NET service writes it: seven fractional digits and a Z."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}0Z"


def origin(url: str) -> str:
    """`scheme://host:port` of a URL."""
    u = urllib.parse.urlsplit(url)
    return f"{u.scheme}://{u.netloc}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def wrapped_exception(type_key: str, message: str) -> dict:
    """The error body the VSS client rebuilds typed exceptions from (WrappedException)."""
    return {
        "$id": "1",
        "innerException": None,
        "message": message,
        "typeName": f"Microsoft.TeamFoundation.DistributedTask.WebApi.{type_key}, "
                    "Microsoft.TeamFoundation.DistributedTask.WebApi",
        "typeKey": type_key,
        "errorCode": 0,
        "eventId": 3000,
    }


class HttpError(Exception):
    """An answer other than success, raised from deep inside a route handler."""

    def __init__(self, status: int, body: dict | None = None, challenge: bool = False):
        super().__init__(status)
        self.status = status
        self.body = body
        self.challenge = challenge


def not_found(type_key: str, message: str) -> HttpError:
    return HttpError(404, wrapped_exception(type_key, message))


# ---------------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------------


@dataclass
class Agent:
    id: int
    name: str
    public_key: object  # cryptography RSAPublicKey
    public_key_json: dict
    client_id: str
    version: str
    os_description: str
    created_on: datetime


@dataclass
class Message:
    id: int
    type: str
    body: dict
    #: The job request id when this message carries a job.
    request_id: int | None = None
    #: Whether a poll has returned it at least once.
    delivered: bool = False


@dataclass
class Session:
    id: str
    agent_id: int
    aes_key: bytes
    queue: list[Message] = field(default_factory=list)
    last_poll: float = 0.0
    deleted: bool = False


@dataclass
class Job:
    """One job request: the server's own record of it, and what the agent did with it."""

    request_id: int
    job_id: str
    plan_id: str
    timeline_id: str
    scope_id: str
    token: str
    step_ids: list[str]
    secrets: list[str]
    mask_regexes: list[str]
    queue_time: datetime
    assign_time: datetime | None = None
    receive_time: datetime | None = None
    finish_time: datetime | None = None
    locked_until: datetime | None = None
    agent_id: int | None = None
    message_id: int | None = None
    acked: bool = False
    renewals: int = 0
    records_updated: set = field(default_factory=set)
    foreign_records: set = field(default_factory=set)
    stray_records: int = 0
    feed_posts: int = 0
    feed_lines: int = 0
    #: Feed posts to a record id neither in the message nor added by the agent (reported only:
    #: an agent may post to a record before its first PATCH names it).
    feed_unknown_records: int = 0
    logs_created: int = 0
    log_uploads: int = 0
    log_bytes: int = 0
    attachments: int = 0
    leaks: int = 0
    completion_events: int = 0
    result: str | None = None

    def summary(self) -> dict:
        return {
            "request_id": self.request_id,
            "job_id": self.job_id,
            "agent_id": self.agent_id,
            "delivered": self.receive_time is not None,
            "acked": self.acked,
            "renewals": self.renewals,
            "steps_recorded": sum(1 for s in self.step_ids if s in self.records_updated),
            "steps_total": len(self.step_ids),
            "job_record_updated": self.job_id in self.records_updated,
            "extra_records": len(self.foreign_records),
            "stray_records": self.stray_records,
            "feed_posts": self.feed_posts,
            "feed_lines": self.feed_lines,
            "feed_unknown_records": self.feed_unknown_records,
            "logs_created": self.logs_created,
            "log_uploads": self.log_uploads,
            "log_bytes": self.log_bytes,
            "attachments": self.attachments,
            "leaks": self.leaks,
            "completion_events": self.completion_events,
            "result": self.result,
            "pickup_s": (self.receive_time - self.queue_time).total_seconds()
            if self.receive_time else None,
        }


class State:
    """Everything the three listeners share, behind one lock (a test server: simplicity wins)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.stopping = False
        self.started = time.monotonic()
        self.pool_id = 1
        self.pool_name = args.pool
        self.collection_id = str(uuid.uuid4())
        self.project_id = str(uuid.uuid4())
        self.agents: dict[int, Agent] = {}
        self.client_ids: dict[str, int] = {}
        self.listener_tokens: dict[str, tuple[int, float]] = {}
        self.seen_jti: dict[str, float] = {}
        self.sessions: dict[str, Session] = {}
        self.jobs: dict[int, Job] = {}
        self.jobs_by_plan: dict[str, Job] = {}
        self.pending: list[int] = []
        self.next_agent_id = 1
        self.next_message_id = 1
        self.next_request_id = 1000
        self.next_log_id = 1
        self.logs: dict[tuple[str, int], str] = {}
        self.extra_sent: dict[str, int] = {}
        self.extra_delivered: dict[str, int] = {}
        self.extra_acked: dict[str, int] = {}
        self.agents_sent_refresh: set[int] = set()
        self.counts: dict[str, int] = {
            "tokens_issued": 0, "tokens_refused": 0, "sessions_created": 0,
            "sessions_deleted": 0, "session_conflicts": 0, "challenges_401": 0,
            "registrations": 0, "replacements": 0, "polls": 0, "polls_empty": 0,
            "jobrequest_list_calls": 0, "finish_patches": 0, "server_exceptions": 0,
        }
        self.token_refusals: dict[str, int] = {}
        self.unexpected: dict[str, int] = {}
        self.leak_samples: list[str] = []
        self.exception_samples: list[str] = []
        self.jobs_to_queue = args.jobs
        self.queueing_started = False
        # URLs are filled in once the listeners are bound.
        self.collection_url = ""
        self.token_url = ""
        self.plan_url = ""

    # -- bookkeeping helpers (call with the lock held) --

    def note_unexpected(self, key: str) -> None:
        if key not in self.unexpected and len(self.unexpected) >= UNEXPECTED_KEYS_MAX:
            key = "other"
        self.unexpected[key] = self.unexpected.get(key, 0) + 1

    def refuse_token(self, reason: str) -> HttpError:
        self.counts["tokens_refused"] += 1
        self.token_refusals[reason] = self.token_refusals.get(reason, 0) + 1
        return HttpError(400, {"error": "invalid_client", "error_description": reason})

    def new_message(self, type_: str, body: dict, request_id: int | None = None) -> Message:
        msg = Message(self.next_message_id, type_, body, request_id)
        self.next_message_id += 1
        return msg

    def live_session_of(self, agent_id: int) -> Session | None:
        for s in self.sessions.values():
            if s.agent_id == agent_id and not s.deleted:
                return s
        return None


# ---------------------------------------------------------------------------------------------
# The job message, shaped after the real agent's template (L1TestBase.JobMessageTemplate)
# ---------------------------------------------------------------------------------------------


def task_step(task: tuple[str, str, str], inputs: dict, display: str) -> dict:
    task_id, name, version = task
    return {
        "inputs": inputs,
        "type": "task",
        "reference": {"id": task_id, "name": name, "version": version},
        "condition": "succeeded()",
        "id": str(uuid.uuid4()),
        "name": name,
        "displayName": display,
        "enabled": True,
        "continueOnError": False,
        "timeoutInMinutes": 0,
    }


def make_job(state: State, now: datetime) -> tuple[Job, dict]:
    """A new job request and the body of its PipelineAgentJobRequest message (minus the lock)."""
    request_id = state.next_request_id
    state.next_request_id += 1
    plan_id = str(uuid.uuid4())
    job_id = str(uuid.uuid4())
    token = "eyJ0eXAiOiJKV1QifQ." + secrets.token_urlsafe(48)
    password = "pw-" + secrets.token_hex(12)
    signing_key = "azpkey_" + secrets.token_hex(16)
    build_id = request_id - 999
    steps = [
        task_step(TASK_CHECKOUT, {"repository": "self"}, "Checkout MyProject@main to s"),
        task_step(TASK_CMDLINE, {
            "script": "echo Building $(Build.BuildNumber)\n"
                      "echo using $(deploy.password) for the deployment\n"
                      "echo signing with $(build.signingKey)",
        }, "Build"),
        task_step(TASK_BASH, {
            "targetType": "inline",
            "script": "echo tests\necho token=$(System.AccessToken)",
        }, "Test"),
    ]
    collection = state.collection_url + "/"
    sv = lambda value: {"value": value, "isReadOnly": True}  # noqa: E731 (a table of values)
    variables = {
        "system": sv("build"),
        "system.hosttype": sv("build"),
        "system.servertype": sv("Hosted"),
        "system.culture": sv("en-US"),
        "system.collectionId": sv(state.collection_id),
        "system.debug": sv("false"),
        "system.collectionUri": sv(collection),
        "system.teamFoundationCollectionUri": sv(collection),
        "system.taskDefinitionsUri": sv(state.plan_url),
        "system.teamProject": sv("MyProject"),
        "system.teamProjectId": sv(state.project_id),
        "system.definitionId": sv("7"),
        "system.planId": sv(plan_id),
        "system.timelineId": sv(plan_id),
        "system.jobId": sv(job_id),
        "system.jobName": sv("__default"),
        "system.jobDisplayName": sv("Job"),
        "system.jobAttempt": sv("1"),
        "system.enableAccessToken": sv("SecretVariable"),
        "build.buildId": sv(str(build_id)),
        "build.buildNumber": sv(f"20261205.{build_id}"),
        "build.sourceBranch": sv("refs/heads/main"),
        "build.repository.name": sv("MyProject"),
        "build.reason": sv("IndividualCI"),
        "system.accessToken": {"value": token, "isSecret": True},
        "deploy.password": {"value": password, "isSecret": True},
        # Not marked secret: it is covered only by the regex mask hint below, as a service does
        # for values that follow a known credential pattern.
        "build.signingKey": {"value": signing_key, "isReadOnly": False},
    }
    job = Job(
        request_id=request_id, job_id=job_id, plan_id=plan_id, timeline_id=plan_id,
        scope_id=state.project_id, token=token, step_ids=[s["id"] for s in steps],
        secrets=[token, password, signing_key], mask_regexes=[r"azpkey_[0-9a-f]{32}"],
        queue_time=now,
    )
    body = {
        "mask": [
            {"type": "regex", "value": re.escape(token)},
            {"type": "regex", "value": job.mask_regexes[0]},
        ],
        "steps": steps,
        "variables": variables,
        "messageType": "PipelineAgentJobRequest",
        "plan": {
            "scopeIdentifier": state.project_id,
            "planType": "Build",
            "version": 9,
            "planId": plan_id,
            "planGroup": f"Build:{state.project_id}:{build_id}",
            "artifactUri": f"vstfs:///Build/Build/{build_id}",
            "artifactLocation": None,
            "definition": {"id": 7, "name": "MyProject CI"},
            "owner": {"id": build_id, "name": f"20261205.{build_id}"},
        },
        "timeline": {"id": plan_id, "changeId": 1, "location": None},
        "jobId": job_id,
        "jobDisplayName": "Job",
        "jobName": "__default",
        "jobContainer": None,
        "requestId": request_id,
        "lockedUntil": "0001-01-01T00:00:00",
        "resources": {
            "endpoints": [{
                "data": {"ServerId": state.collection_id, "ServerName": "org"},
                "name": "SystemVssConnection",
                "url": state.plan_url,
                "authorization": {"parameters": {"AccessToken": token}, "scheme": "OAuth"},
                "isShared": False,
                "isReady": True,
            }],
            "repositories": [{
                "properties": {
                    "id": str(uuid.uuid4()), "type": "Git",
                    "version": hashlib.sha1(plan_id.encode()).hexdigest(),
                    "name": "MyProject", "project": state.project_id,
                    "defaultBranch": "refs/heads/main", "ref": "refs/heads/main",
                    "url": collection + "MyProject/_git/MyProject",
                    "checkoutOptions": {},
                },
                "alias": "self",
                "endpoint": {"name": "SystemVssConnection"},
            }],
            "containers": [],
            "secureFiles": [],
        },
        "workspace": {},
    }
    return job, body


def queue_jobs(state: State, count: int) -> None:
    """Queue `count` new jobs (lock held), then try to hand them out."""
    now = utc_now()
    for _ in range(count):
        if state.jobs_to_queue <= 0:
            return
        job, body = make_job(state, now)
        state.jobs_to_queue -= 1
        job_body_cache[job.request_id] = body
        state.jobs[job.request_id] = job
        state.jobs_by_plan[job.plan_id] = job
        state.pending.append(job.request_id)
    dispatch(state)


#: Message bodies of queued jobs, by request id (kept out of Job so stats stay small).
job_body_cache: dict[int, dict] = {}


def agent_busy(state: State, agent_id: int) -> bool:
    return any(j.agent_id == agent_id and j.result is None for j in state.jobs.values())


def dispatch(state: State) -> None:
    """Assign pending jobs to idle agents with a live session (lock held), oldest first."""
    while state.pending:
        idle = [s for s in state.sessions.values()
                if not s.deleted and not agent_busy(state, s.agent_id)]
        if not idle:
            return
        # The session polled least recently waits longest: a fair, deterministic enough choice.
        session = min(idle, key=lambda s: s.last_poll)
        job = state.jobs[state.pending.pop(0)]
        now = utc_now()
        job.agent_id = session.agent_id
        job.assign_time = now
        job.locked_until = now + timedelta(minutes=state.args.lock_minutes)
        body = dict(job_body_cache[job.request_id])
        body["lockedUntil"] = dotnet_time(job.locked_until)
        msg = state.new_message("PipelineAgentJobRequest", body, job.request_id)
        job.message_id = msg.id
        session.queue.append(msg)
        state.changed.notify_all()


def queue_extra(state: State, session: Session, type_: str, body: dict) -> None:
    session.queue.append(state.new_message(type_, body))
    state.extra_sent[type_] = state.extra_sent.get(type_, 0) + 1
    state.changed.notify_all()


# ---------------------------------------------------------------------------------------------
# Crypto: JWT verification, session key wrapping, message encryption
# ---------------------------------------------------------------------------------------------


def public_key_from_json(pk: dict):
    exponent = int.from_bytes(base64.b64decode(pk["exponent"]), "big")
    modulus = int.from_bytes(base64.b64decode(pk["modulus"]), "big")
    return RSAPublicNumbers(exponent, modulus).public_key()


def verify_assertion(state: State, assertion: str) -> int:
    """The agent id a JWT client assertion proves, or HttpError 400 (lock held)."""
    parts = assertion.split(".")
    if len(parts) != 3:
        raise state.refuse_token("assertion is not a compact JWS")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except ValueError:
        raise state.refuse_token("assertion is not base64url JSON") from None
    if header.get("alg") != "RS256":
        raise state.refuse_token(f"alg {header.get('alg')!r} is not RS256")
    client_id = claims.get("iss")
    if not isinstance(client_id, str) or claims.get("sub") != client_id:
        raise state.refuse_token("iss and sub must both be the client id")
    agent_id = state.client_ids.get(client_id)
    if agent_id is None:
        raise state.refuse_token("unknown client id")
    if claims.get("aud") != state.token_url:
        raise state.refuse_token("aud is not the authorizationUrl")
    agent = state.agents[agent_id]
    try:
        agent.public_key.verify(signature, f"{parts[0]}.{parts[1]}".encode("ascii"),
                                asym_padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise state.refuse_token("signature does not verify with the registered key") from None
    nbf, exp, now, skew = claims.get("nbf"), claims.get("exp"), time.time(), state.args.skew_s
    if not isinstance(nbf, (int, float)) or not isinstance(exp, (int, float)):
        raise state.refuse_token("nbf and exp must be numbers")
    if nbf > now + skew or exp < now - skew:
        raise state.refuse_token(
            f"assertion is not valid now. Current server time is {dotnet_time(utc_now())}")
    if exp - nbf > ASSERTION_LIFETIME_MAX_S:
        raise state.refuse_token("assertion lifetime too long")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise state.refuse_token("jti missing")
    # Forget jtis whose assertion can no longer be valid, then refuse a replay.
    for old, until in list(state.seen_jti.items()):
        if until < now:
            del state.seen_jti[old]
    if jti in state.seen_jti:
        raise state.refuse_token("jti replayed")
    state.seen_jti[jti] = exp + skew
    return agent_id


def encrypt_message(key: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
    """AES-256-CBC with PKCS7 padding and a fresh IV, as the listener decrypts it."""
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    data = padder.update(plaintext) + padder.finalize()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return iv, enc.update(data) + enc.finalize()


# ---------------------------------------------------------------------------------------------
# Secret scanning
# ---------------------------------------------------------------------------------------------


def scan(state: State, job: Job, text: str, where: str) -> None:
    """Count every secret value, its base64 form and every regex mask hint found (lock held)."""
    found = 0
    for value in job.secrets:
        for form in (value, b64(value.encode())):
            found += text.count(form)
    for rx in job.mask_regexes:
        found += len(re.findall(rx, text))
    if found:
        job.leaks += found
        if len(state.leak_samples) < SAMPLES_MAX:
            state.leak_samples.append(f"request {job.request_id}: {found} in {where}")


# ---------------------------------------------------------------------------------------------
# HTTP plumbing shared by the three listeners
# ---------------------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    """Reads one request with a deadline and a size limit, routes it, writes JSON back."""

    protocol_version = "HTTP/1.1"
    server_version = "azp-testserver"
    timeout = READ_DEADLINE_S  # socket timeout: every read has a deadline

    # Set per listener subclass.
    listener = ""

    def handle_one_request(self) -> None:
        self.connection.settimeout(KEEPALIVE_IDLE_S)
        super().handle_one_request()

    def parse_request(self) -> bool:
        # The request line has arrived: headers and body now read under the deadline.
        self.connection.settimeout(READ_DEADLINE_S)
        return super().parse_request()

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every answer with a body.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def state(self) -> State:
        return self.server.state  # type: ignore[attr-defined]

    def log_message(self, fmt: str, *args) -> None:
        if self.state.args.verbose:
            sys.stderr.write(f"[{self.listener}] {fmt % args}\n")

    def do_GET(self) -> None:
        self.handle_any("GET")

    def do_POST(self) -> None:
        self.handle_any("POST")

    def do_PUT(self) -> None:
        self.handle_any("PUT")

    def do_PATCH(self) -> None:
        self.handle_any("PATCH")

    def do_DELETE(self) -> None:
        self.handle_any("DELETE")

    def do_OPTIONS(self) -> None:
        self.handle_any("OPTIONS")

    def read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self.read_chunked()
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True  # the body's end is unknown: the connection is done
            raise HttpError(400, {"message": "bad Content-Length"}) from None
        if n < 0 or n > BODY_BYTES_MAX:
            self.close_connection = True
            raise HttpError(413, {"message": f"body over {BODY_BYTES_MAX} bytes"})
        return self.rfile.read(n)

    def read_chunked(self) -> bytes:
        out = bytearray()
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip() or b"0", 16)
            except ValueError:
                self.close_connection = True
                raise HttpError(400, {"message": "bad chunk size"}) from None
            if size == 0:
                self.rfile.readline(1024)
                return bytes(out)
            if len(out) + size > BODY_BYTES_MAX:
                self.close_connection = True
                raise HttpError(413, {"message": f"body over {BODY_BYTES_MAX} bytes"})
            out += self.rfile.read(size)
            self.rfile.readline(1024)

    def json_body(self, raw: bytes) -> dict:
        try:
            value = json.loads(raw or b"null")
        except ValueError:
            raise HttpError(400, {"message": "body is not JSON"}) from None
        if not isinstance(value, dict):
            raise HttpError(400, {"message": "body must be a JSON object"})
        return value

    def handle_any(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        try:
            raw = self.read_body()
            status, body, headers = self.route(method, url.path, query, raw)
        except HttpError as e:
            status, body, headers = e.status, e.body, {}
            if e.challenge:
                with self.state.lock:
                    self.state.counts["challenges_401"] += 1
                headers = {"WWW-Authenticate": [
                    f"Bearer authorization_uri={self.state.token_url}",
                    f'Basic realm="{self.state.collection_url}"',
                    "TFS-Federated",
                ]}
        except (socket.timeout, ConnectionError):
            self.close_connection = True
            return
        except Exception as e:  # noqa: BLE001 (a bug here must show in the tally, not vanish)
            with self.state.lock:
                self.state.counts["server_exceptions"] += 1
                if len(self.state.exception_samples) < SAMPLES_MAX:
                    self.state.exception_samples.append(f"{method} {url.path}: {e!r}")
            self.close_connection = True
            status, body, headers = 500, {"message": "test server bug"}, {}
        self.send(status, body, headers)

    def send(self, status: int, body, headers: dict) -> None:
        if body is None:
            payload = b""
        elif isinstance(body, bytes):
            payload = body
        else:
            payload = json.dumps(body).encode()
        self.send_response(status)
        for name, values in headers.items():
            for v in values if isinstance(values, list) else [values]:
                self.send_header(name, v)
        if payload and "Content-Type" not in headers:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    def unexpected(self, method: str, path: str) -> HttpError:
        # Record the route shape, not the ids, so the key set stays small.
        shape = "/".join("{id}" if re.fullmatch(r"[0-9a-fA-F-]{8,}|\d+", seg) else seg
                         for seg in path.split("/"))
        with self.state.lock:
            self.state.note_unexpected(f"{self.listener} {method} {shape}")
        return HttpError(404, {"message": f"no route {method} {path} on the {self.listener}"})

    # -- credentials --

    def credential(self) -> tuple[str, str] | None:
        """("basic", password) or ("bearer", token) from the Authorization header."""
        auth = self.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value:
            return "bearer", value.strip()
        if scheme.lower() == "basic" and value:
            try:
                _, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            return "basic", password
        return None

    def route(self, method, path, query, raw):  # overridden per listener
        raise NotImplementedError


def location_list(area: str | None) -> dict:
    rows = [{
        "id": lid, "area": ar, "resourceName": res, "routeTemplate": tpl,
        "resourceVersion": 1, "minVersion": "1.0", "maxVersion": "7.2", "releasedVersion": "7.1",
    } for lid, ar, res, tpl in LOCATIONS if area is None or ar.lower() == area.lower()]
    return {"count": len(rows), "value": rows}


def connection_data(state: State, base: str, query: dict, user: str) -> dict:
    """`GET _apis/connectionData` as Services answers it ("hosted")."""
    identity = {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, user)), "providerDisplayName": user,
                "isActive": True, "properties": {}}
    data = {
        "authenticatedUser": identity,
        "authorizedUser": identity,
        "instanceId": state.collection_id,
        "deploymentId": state.collection_id,
        "deploymentType": "hosted",
        "locationServiceData": {
            "serviceOwner": SERVICE_OWNER_TFS,
            "defaultAccessMappingMoniker": "PublicAccessMapping",
            "lastChangeId": 1, "lastChangeId64": 1,
            "accessMappings": [{"displayName": "Public Access Mapping",
                                "moniker": "PublicAccessMapping", "accessPoint": base,
                                "serviceOwner": SERVICE_OWNER_TFS, "virtualDirectory": ""}],
        },
    }
    if query.get("connectOptions") == "1":
        data["locationServiceData"]["serviceDefinitions"] = [{
            "serviceType": ar, "identifier": lid, "displayName": res,
            "relativeToSetting": "context", "relativePath": tpl, "serviceOwner": SERVICE_OWNER_TFS,
            "toolId": "Framework", "resourceVersion": 1, "minVersion": "1.0",
            "maxVersion": "7.2", "releasedVersion": "7.1", "status": "active",
        } for lid, ar, res, tpl in LOCATIONS]
    return data


# ---------------------------------------------------------------------------------------------
# Listener 1: the collection (/org)
# ---------------------------------------------------------------------------------------------


def split_path(path: str, prefix: str) -> list[str] | None:
    """The segments after `prefix`, or None when the path is outside it or malformed."""
    if path != prefix and not path.startswith(prefix + "/"):
        return None
    rest = path[len(prefix):]
    if "//" in rest:
        return None
    return [urllib.parse.unquote(p) for p in rest.strip("/").split("/") if p]


class CollectionHandler(Handler):
    listener = "collection"

    def route(self, method, path, query, raw):
        st = self.state
        segs = split_path(path, st.args.collection_path)
        if segs is None:
            raise self.unexpected(method, path)
        if segs == ["_testserver", "stats"] and method == "GET":
            return 200, stats(st), {}
        # No token endpoint here: the authority is another listener. Recorded before the
        # credential check so a client that posts its assertion here shows up in the tally.
        if not segs or segs[0] != "_apis" or segs[1:3] == ["oauth2", "token"]:
            raise self.unexpected(method, path)
        cred = self.authenticate()
        api = segs[1:]
        if method == "GET" and api == ["connectionData"]:
            return 200, connection_data(st, st.collection_url, query, cred[0]), {}
        if method == "OPTIONS" and len(api) <= 1:
            return 200, location_list(api[0] if api else None), {}
        if method == "GET" and api[:1] == ["ResourceAreas"]:
            return 200, {"count": 1, "value": [{"id": AREA_DISTRIBUTEDTASK,
                                                "name": "distributedtask",
                                                "locationUrl": st.collection_url + "/"}]}, {}
        if api[:1] == ["FeatureFlags"]:
            # A failed flag lookup is "Off" for the agent; not an error of the client.
            raise HttpError(404, wrapped_exception("FeatureFlagNotFoundException", "no flags"))
        if api[:2] == ["distributedtask", "pools"]:
            return self.pools(method, api[2:], query, raw, cred)
        raise self.unexpected(method, path)

    def authenticate(self) -> tuple[str, int | None]:
        """("pat", None) or ("agent", agent id); anonymous or wrong → 401 with challenges."""
        st, cred = self.state, self.credential()
        if cred is None:
            raise HttpError(401, None, challenge=True)
        kind, value = cred
        with st.lock:
            if kind == "basic" and secrets.compare_digest(value, st.args.pat):
                return "pat", None
            if kind == "bearer" and value in st.listener_tokens:
                agent_id, until = st.listener_tokens[value]
                if until > time.time() and agent_id in st.agents:
                    return "agent", agent_id
        raise HttpError(401, None, challenge=True)

    def pools(self, method, rest, query, raw, cred):
        st = self.state
        if not rest:
            if method != "GET":
                raise self.unexpected(method, "pools")
            name = query.get("poolName")
            found = name is None or name.lower() == st.pool_name.lower()
            rows = [self.pool_json()] if found else []
            return 200, {"count": len(rows), "value": rows}, {}
        try:
            pool_id = int(rest[0])
        except ValueError:
            raise not_found("TaskAgentPoolNotFoundException", "no such pool") from None
        if pool_id != st.pool_id:
            raise not_found("TaskAgentPoolNotFoundException", f"pool {pool_id} not found")
        if len(rest) == 1 and method == "GET":
            return 200, self.pool_json(), {}
        kind, what = rest[1] if len(rest) > 1 else "", rest[2:]
        if kind == "agents":
            return self.agents(method, what, query, raw, cred)
        if kind == "sessions":
            return self.sessions(method, what, raw, cred)
        if kind == "messages":
            return self.messages(method, what, query, cred)
        if kind == "jobrequests":
            return self.jobrequests(method, what, query, raw, cred)
        raise self.unexpected(method, "pools/" + "/".join(rest))

    def pool_json(self) -> dict:
        st = self.state
        return {"id": st.pool_id, "name": st.pool_name, "isHosted": False,
                "poolType": "automation", "size": len(st.agents), "isLegacy": False,
                "scope": st.collection_id}

    # -- agents: registration with the PAT --

    def agents(self, method, rest, query, raw, cred):
        st = self.state
        if cred[0] != "pat" and method != "GET":
            raise HttpError(403, wrapped_exception("AccessDeniedException", "PAT required"))
        with st.lock:
            if method == "GET" and not rest:
                name = query.get("agentName")
                rows = [self.agent_json(a) for a in st.agents.values()
                        if name is None or a.name.lower() == name.lower()]
                return 200, {"count": len(rows), "value": rows}, {}
            if method == "POST" and not rest:
                body = self.json_body(raw)
                name = body.get("name")
                if not isinstance(name, str) or not name:
                    raise HttpError(400, wrapped_exception("ArgumentException", "name required"))
                if any(a.name.lower() == name.lower() for a in st.agents.values()):
                    raise HttpError(409, wrapped_exception(
                        "TaskAgentExistsException", f"agent {name} exists in pool"))
                agent = self.agent_from_body(body, st.next_agent_id, name)
                st.next_agent_id += 1
                st.agents[agent.id] = agent
                st.client_ids[agent.client_id] = agent.id
                st.counts["registrations"] += 1
                return 200, self.agent_json(agent), {}
            agent_id = self.agent_id(rest)
            if method == "GET":
                return 200, self.agent_json(st.agents[agent_id]), {}
            if method == "PUT":
                # `config --replace`: the agent keeps its identity (id, client id) and brings
                # a new key; assertions signed with the old key stop verifying.
                old = st.agents[agent_id]
                agent = self.agent_from_body(self.json_body(raw), agent_id, old.name)
                agent.client_id, agent.created_on = old.client_id, old.created_on
                st.agents[agent_id] = agent
                st.counts["replacements"] += 1
                return 200, self.agent_json(agent), {}
            if method == "DELETE":
                agent = st.agents.pop(agent_id)
                st.client_ids.pop(agent.client_id, None)
                return 204, None, {}
        raise self.unexpected(method, "agents")

    def agent_id(self, rest) -> int:
        try:
            agent_id = int(rest[0])
        except (ValueError, IndexError):
            raise not_found("TaskAgentNotFoundException", "no such agent") from None
        if agent_id not in self.state.agents:
            raise not_found("TaskAgentNotFoundException", f"agent {agent_id} not found")
        return agent_id

    def agent_from_body(self, body: dict, agent_id: int, name: str) -> Agent:
        try:
            pk_json = body["authorization"]["publicKey"]
            key = public_key_from_json(pk_json)
        except (KeyError, TypeError, ValueError) as e:
            raise HttpError(400, wrapped_exception(
                "ArgumentException", f"authorization.publicKey: {e}")) from None
        if key.key_size < 2048:
            raise HttpError(400, wrapped_exception("ArgumentException", "key under 2048 bits"))
        return Agent(agent_id, name, key, pk_json, str(uuid.uuid4()),
                     str(body.get("version", "")), str(body.get("osDescription", "")), utc_now())

    def agent_json(self, a: Agent) -> dict:
        st = self.state
        online = st.live_session_of(a.id) is not None
        return {
            "id": a.id, "name": a.name, "version": a.version, "osDescription": a.os_description,
            "enabled": True,
            "status": "online" if online else "offline", "provisioningState": "Provisioned",
            "maxParallelism": 1, "createdOn": dotnet_time(a.created_on),
            "authorization": {"clientId": a.client_id, "authorizationUrl": st.token_url,
                              "publicKey": a.public_key_json},
        }

    # -- sessions: listener token --

    def need_agent(self, cred) -> int:
        if cred[0] != "agent":
            raise HttpError(401, None, challenge=True)
        return cred[1]

    def sessions(self, method, rest, raw, cred):
        st = self.state
        agent_id = self.need_agent(cred)
        if method == "POST" and not rest:
            body = self.json_body(raw)
            claimed = (body.get("agent") or {}).get("id")
            if claimed != agent_id:
                raise HttpError(403, wrapped_exception(
                    "AccessDeniedException", "session for another agent"))
            with st.lock:
                if st.live_session_of(agent_id) is not None:
                    st.counts["session_conflicts"] += 1
                    raise HttpError(409, wrapped_exception(
                        "TaskAgentSessionConflictException",
                        f"agent {agent_id} already has a session"))
                key = os.urandom(32)
                agent = st.agents[agent_id]
                wrapped = agent.public_key.encrypt(key, asym_padding.OAEP(
                    mgf=asym_padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None))
                session = Session(str(uuid.uuid4()), agent_id, key, last_poll=time.monotonic())
                st.sessions[session.id] = session
                st.counts["sessions_created"] += 1
                if st.args.extra_messages:
                    # Before any job: a type no listener knows; it must be acked and skipped.
                    queue_extra(st, session, "TestServerUnknownNotice", {"note": "skip me"})
                enough = st.counts["sessions_created"] >= st.args.queue_after_sessions
                if not st.queueing_started and enough:
                    st.queueing_started = True
                    start_queueing(st)
                dispatch(st)
            answer = dict(body)
            answer["sessionId"] = session.id
            answer["encryptionKey"] = {"encrypted": True, "value": b64(wrapped)}
            return 200, answer, {}
        if method == "DELETE" and len(rest) == 1:
            with st.lock:
                session = st.sessions.get(rest[0])
                if session is None or session.agent_id != agent_id or session.deleted:
                    raise not_found("TaskAgentSessionExpiredException", "no such session")
                session.deleted = True
                st.counts["sessions_deleted"] += 1
                # A job handed out but never fetched goes back to the queue.
                for msg in session.queue:
                    job = st.jobs.get(msg.request_id or -1)
                    if job is not None and job.receive_time is None:
                        job.agent_id = None
                        job.assign_time = None
                        st.pending.insert(0, job.request_id)
                session.queue.clear()
                st.changed.notify_all()
                dispatch(st)
            return 204, None, {}
        raise self.unexpected(method, "sessions")

    # -- messages: long poll, encrypted, kept until DELETE --

    def session_for(self, st: State, session_id: str | None, agent_id: int) -> Session:
        session = st.sessions.get(session_id or "")
        if session is None or session.deleted or session.agent_id != agent_id:
            raise not_found("TaskAgentSessionExpiredException", "session expired or unknown")
        return session

    def messages(self, method, rest, query, cred):
        st = self.state
        agent_id = self.need_agent(cred)
        if method == "GET" and not rest:
            try:
                last = int(query["lastMessageId"]) if "lastMessageId" in query else None
            except ValueError:
                raise HttpError(400, wrapped_exception("ArgumentException", "lastMessageId"))
            deadline = time.monotonic() + st.args.long_poll_s
            with st.lock:
                st.counts["polls"] += 1
                while True:
                    session = self.session_for(st, query.get("sessionId"), agent_id)
                    session.last_poll = time.monotonic()
                    pick = next((m for m in session.queue if last is None or m.id > last), None)
                    if pick is not None:
                        return 200, self.deliver(st, session, pick), {}
                    left = deadline - time.monotonic()
                    if left <= 0 or st.stopping:
                        st.counts["polls_empty"] += 1
                        return 202, None, {}
                    st.changed.wait(left)
        if method == "DELETE" and len(rest) == 1:
            with st.lock:
                session = self.session_for(st, query.get("sessionId"), agent_id)
                try:
                    msg_id = int(rest[0])
                except ValueError:
                    raise not_found("TaskAgentMessageNotFoundException", "bad id") from None
                msg = next((m for m in session.queue if m.id == msg_id), None)
                if msg is None:
                    raise not_found("TaskAgentMessageNotFoundException", f"message {msg_id}")
                session.queue.remove(msg)
                self.acked(st, session, msg)
            return 204, None, {}
        raise self.unexpected(method, "messages")

    def deliver(self, st: State, session: Session, msg: Message) -> dict:
        """The encrypted TaskAgentMessage, and the first delivery's receive time (lock held)."""
        if msg.request_id is None and not msg.delivered:
            st.extra_delivered[msg.type] = st.extra_delivered.get(msg.type, 0) + 1
        msg.delivered = True
        if msg.request_id is not None:
            job = st.jobs[msg.request_id]
            if job.receive_time is None:
                job.receive_time = utc_now()
        iv, cipher = encrypt_message(session.aes_key, json.dumps(msg.body).encode())
        return {"messageId": msg.id, "messageType": msg.type, "iv": b64(iv), "body": b64(cipher)}

    def acked(self, st: State, session: Session, msg: Message) -> None:
        """Bookkeeping after a DELETE, and the follow-up messages it triggers (lock held)."""
        if msg.request_id is None:
            st.extra_acked[msg.type] = st.extra_acked.get(msg.type, 0) + 1
            return
        job = st.jobs[msg.request_id]
        job.acked = True
        if st.args.extra_messages:
            # While the job runs: a metadata update for it (the listener forwards or skips it).
            queue_extra(st, session, "JobMetadataUpdate",
                        {"jobId": job.job_id, "postLinesFrequencyMillis": 750})

    # -- job requests: lock renewal (agent) and the list with server times (PAT) --

    def jobrequests(self, method, rest, query, raw, cred):
        st = self.state
        if method == "GET" and not rest:
            if cred[0] != "pat":
                raise HttpError(403, wrapped_exception("AccessDeniedException", "PAT required"))
            with st.lock:
                st.counts["jobrequest_list_calls"] += 1
                rows = [self.jobrequest_json(j) for j in st.jobs.values()
                        if "agentId" not in query or str(j.agent_id) == query["agentId"]]
            return 200, {"count": len(rows), "value": rows}, {}
        try:
            request_id = int(rest[0]) if len(rest) == 1 else -1
        except ValueError:
            request_id = -1
        with st.lock:
            job = st.jobs.get(request_id)
            if job is None:
                raise not_found("TaskAgentJobNotFoundException", f"job request {rest}")
            if method == "GET":
                return 200, self.jobrequest_json(job), {}
            if method == "PATCH":
                agent_id = self.need_agent(cred)
                if job.agent_id != agent_id:
                    raise not_found("TaskAgentJobNotFoundException", "not assigned to you")
                body = self.json_body(raw)
                if body.get("requestId") not in (None, request_id):
                    raise HttpError(400, wrapped_exception("ArgumentException", "requestId"))
                if body.get("result") is not None:
                    # Plan version 9 is completed by the worker's event; a finish PATCH here
                    # means the client treated the plan as < 8.
                    st.counts["finish_patches"] += 1
                else:
                    job.renewals += 1
                    job.locked_until = utc_now() + timedelta(minutes=st.args.lock_minutes)
                return 200, self.jobrequest_json(job), {}
        raise self.unexpected(method, "jobrequests")

    def jobrequest_json(self, j: Job) -> dict:
        st = self.state
        t = lambda v: dotnet_time(v) if v else None  # noqa: E731
        agent = st.agents.get(j.agent_id or -1)
        return {
            "requestId": j.request_id, "queueTime": t(j.queue_time), "assignTime": t(j.assign_time),
            "receiveTime": t(j.receive_time), "finishTime": t(j.finish_time),
            "lockedUntil": t(j.locked_until), "result": j.result, "planType": "Build",
            "planId": j.plan_id, "jobId": j.job_id, "scopeId": j.scope_id,
            "hostId": st.collection_id, "poolId": st.pool_id, "demands": [],
            "reservedAgent": {"id": agent.id, "name": agent.name} if agent else None,
            "matchedAgents": [{"id": a.id, "name": a.name} for a in st.agents.values()],
            "definition": {"id": 7, "name": "MyProject CI"},
        }


def start_queueing(st: State) -> None:
    """Queue the first jobs now and the rest at the configured interval (lock held)."""
    if st.args.job_interval_s <= 0:
        queue_jobs(st, st.jobs_to_queue)
        return
    queue_jobs(st, 1)

    def later() -> None:
        while True:
            time.sleep(st.args.job_interval_s)
            with st.lock:
                if st.stopping or st.jobs_to_queue <= 0:
                    return
                queue_jobs(st, 1)

    threading.Thread(target=later, name="job-arrivals", daemon=True).start()


# ---------------------------------------------------------------------------------------------
# Listener 2: the token authority
# ---------------------------------------------------------------------------------------------


class TokenHandler(Handler):
    listener = "authority"

    def route(self, method, path, query, raw):
        st = self.state
        if path != urllib.parse.urlsplit(st.token_url).path or method != "POST":
            raise self.unexpected(method, path)
        ctype = self.headers.get("Content-Type", "")
        if not ctype.startswith("application/x-www-form-urlencoded"):
            with st.lock:
                raise st.refuse_token("body must be application/x-www-form-urlencoded")
        form = dict(urllib.parse.parse_qsl(raw.decode("utf-8", "replace")))
        with st.lock:
            if form.get("grant_type") != "client_credentials":
                raise st.refuse_token("grant_type must be client_credentials")
            if form.get("client_assertion_type") != \
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
                raise st.refuse_token("client_assertion_type must be jwt-bearer")
            agent_id = verify_assertion(st, form.get("client_assertion", ""))
            token = secrets.token_urlsafe(40)
            st.listener_tokens[token] = (agent_id, time.time() + st.args.token_ttl_s)
            st.counts["tokens_issued"] += 1
        # expires_in as a JSON string, as some Azure DevOps token answers type it.
        return 200, {"access_token": token, "token_type": "jwt-bearer",
                     "expires_in": str(st.args.token_ttl_s), "scope": "vso.agentpools_listen",
                     "refresh_token": secrets.token_urlsafe(16)}, {}


# ---------------------------------------------------------------------------------------------
# Listener 3: the plan hub (SystemVssConnection.url)
# ---------------------------------------------------------------------------------------------


def cmdline_task_zip() -> bytes:
    """A minimal task package for the task-download route (a task.json in a zip)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("task.json", json.dumps({"id": TASK_CMDLINE[0], "name": "CmdLine",
                                            "version": {"Major": 2, "Minor": 279, "Patch": 1},
                                            "execution": {}}))
    return buf.getvalue()


class PlanHandler(Handler):
    listener = "plan"

    def route(self, method, path, query, raw):
        st = self.state
        segs = split_path(path, urllib.parse.urlsplit(st.plan_url).path.rstrip("/"))
        if segs is None:
            raise self.unexpected(method, path)
        job = self.job_for_token()
        if segs == ["_apis", "connectionData"] and method == "GET":
            return 200, connection_data(st, st.plan_url.rstrip("/"), query, "job"), {}
        if segs[:1] == ["_apis"] and method == "OPTIONS" and len(segs) <= 2:
            return 200, location_list(segs[1] if len(segs) == 2 else None), {}
        if segs[:3] == ["_apis", "distributedtask", "tasks"] and method == "GET":
            return 200, cmdline_task_zip(), {"Content-Type": "application/zip"}
        if segs[:1] == ["_apis"] and segs[1:2] == ["FeatureFlags"]:
            raise HttpError(404, wrapped_exception("FeatureFlagNotFoundException", "no flags"))
        # {scope}/_apis/distributedtask/hubs/{hub}/plans/{planId}/...
        if len(segs) < 7 or segs[1:5] != ["_apis", "distributedtask", "hubs", "Build"] \
                or segs[5] != "plans":
            raise self.unexpected(method, path)
        scope, plan_id, rest = segs[0], segs[6], segs[7:]
        if plan_id != job.plan_id or scope != job.scope_id:
            raise HttpError(403, wrapped_exception("AccessDeniedException",
                                                   "the token is for another plan"))
        return self.hub(method, job, rest, raw, path)

    def job_for_token(self) -> Job:
        st, cred = self.state, self.credential()
        if cred is None or cred[0] != "bearer":
            raise HttpError(401, None, challenge=True)
        with st.lock:
            for job in st.jobs.values():
                if secrets.compare_digest(job.token, cred[1]):
                    return job
        raise HttpError(401, None, challenge=True)

    def hub(self, method, job: Job, rest, raw, path):
        st = self.state
        text = lambda: raw.decode("utf-8", "replace")  # noqa: E731
        tl = ["timelines", job.timeline_id]
        if method == "PATCH" and rest == tl + ["records"]:
            records = self.json_body(raw).get("value")
            if not isinstance(records, list):
                raise HttpError(400, {"message": "records body is {count, value:[...]}"})
            known = set(job.step_ids) | {job.job_id}
            with st.lock:
                for r in records:
                    rid = r.get("id") if isinstance(r, dict) else None
                    if rid in known:
                        job.records_updated.add(rid)
                    elif r.get("parentId") in known:
                        # The agent's own records (Initialize job, …) hang under the job.
                        job.foreign_records.add(rid)
                    else:
                        job.stray_records += 1
                scan(st, job, json.dumps(records), "timeline records")
            return 200, {"count": len(records), "value": records}, {}
        if method == "POST" and len(rest) == 5 and rest[:3] == tl + ["records"] \
                and rest[4] == "feed":
            lines = self.json_body(raw).get("value") or []
            with st.lock:
                if rest[3] not in set(job.step_ids) | {job.job_id} | job.foreign_records:
                    job.feed_unknown_records += 1
                job.feed_posts += 1
                job.feed_lines += len(lines)
                scan(st, job, "\n".join(str(x) for x in lines), "feed")
            return 204, None, {}
        if method == "POST" and rest == ["logs"]:
            body = self.json_body(raw)
            with st.lock:
                log_id = st.next_log_id
                st.next_log_id += 1
                st.logs[(job.plan_id, log_id)] = str(body.get("path", ""))
                job.logs_created += 1
            now = dotnet_time(utc_now())
            return 200, {"id": log_id, "path": body.get("path"), "lineCount": 0,
                         "createdOn": now, "lastChangedOn": now,
                         "location": f"{origin(st.plan_url)}{path}/{log_id}"}, {}
        if method == "POST" and len(rest) == 2 and rest[0] == "logs":
            with st.lock:
                if (job.plan_id, int(rest[1]) if rest[1].isdigit() else -1) not in st.logs:
                    raise not_found("TaskLogNotFoundException", f"log {rest[1]}")
                job.log_uploads += 1
                job.log_bytes += len(raw)
                scan(st, job, text(), f"log {rest[1]}")
            return 200, {"id": int(rest[1]), "lineCount": text().count("\n")}, {}
        if method == "PUT" and len(rest) == 7 and rest[:3] == tl + ["records"] \
                and rest[4] == "attachments":
            with st.lock:
                job.attachments += 1
                scan(st, job, text(), f"attachment {rest[5]}/{rest[6]}")
            return 200, {"type": rest[5], "name": rest[6], "recordId": rest[3],
                         "timelineId": job.timeline_id}, {}
        if method == "POST" and rest == ["events"]:
            body = self.json_body(raw)
            if body.get("name") != "JobCompleted":
                return 204, None, {}
            if body.get("jobId") != job.job_id \
                    or body.get("requestId") not in (None, job.request_id):
                raise HttpError(400, wrapped_exception("ArgumentException", "wrong job"))
            with st.lock:
                job.completion_events += 1
                if job.result is None:
                    job.result = str(body.get("result", "")) or "unknown"
                    job.finish_time = utc_now()
                    self.after_completion(st, job)
                dispatch(st)
                st.changed.notify_all()
            return 204, None, {}
        if method in ("GET", "POST") and rest == tl:
            return 200, {"id": job.timeline_id, "changeId": 1}, {}
        raise self.unexpected(method, path)

    def after_completion(self, st: State, job: Job) -> None:
        """After an agent's first job: an AgentRefresh, which it must ack and skip (lock held)."""
        if not st.args.extra_messages or job.agent_id in st.agents_sent_refresh:
            return
        session = st.live_session_of(job.agent_id)
        if session is not None:
            st.agents_sent_refresh.add(job.agent_id)
            queue_extra(st, session, "AgentRefresh",
                        {"agentId": job.agent_id, "targetVersion": "4.999.0",
                         "timeout": "00:15:00"})


# ---------------------------------------------------------------------------------------------
# The tally and its checks
# ---------------------------------------------------------------------------------------------


def stats(st: State) -> dict:
    with st.lock:
        jobs = [j.summary() for j in sorted(st.jobs.values(), key=lambda j: j.request_id)]
        queued = len(jobs)
        count = lambda pred: sum(1 for j in jobs if pred(j))  # noqa: E731
        tally = {
            "queued": queued,
            "still_to_queue": st.jobs_to_queue,
            "delivered": count(lambda j: j["delivered"]),
            "acked": count(lambda j: j["acked"]),
            "renewed": count(lambda j: j["renewals"] > 0),
            "timeline_complete": count(lambda j: j["job_record_updated"]
                                       and j["steps_recorded"] == j["steps_total"]),
            "feed_posted": count(lambda j: j["feed_lines"] > 0),
            "logged": count(lambda j: j["log_uploads"] > 0),
            "completed": count(lambda j: j["result"] is not None),
            "results": {},
            "leaks": sum(j["leaks"] for j in jobs),
            "stray_records": sum(j["stray_records"] for j in jobs),
        }
        for j in jobs:
            if j["result"] is not None:
                tally["results"][j["result"]] = tally["results"].get(j["result"], 0) + 1
        open_sessions = sum(1 for s in st.sessions.values() if not s.deleted)
        extra = {t: {"sent": n, "delivered": st.extra_delivered.get(t, 0),
                     "acked": st.extra_acked.get(t, 0)}
                 for t, n in sorted(st.extra_sent.items())}
        # Every per-job check needs jobs: with none queued they would hold vacuously.
        some = queued > 0
        checks = {
            "all_jobs_queued": st.jobs_to_queue == 0 and queued == st.args.jobs,
            "all_delivered": some and tally["delivered"] == queued,
            "all_acked": some and tally["acked"] == queued,
            "all_renewed": some and tally["renewed"] == queued,
            "all_timelines_use_message_ids": some and tally["timeline_complete"] == queued
            and tally["stray_records"] == 0,
            "all_logged": some and tally["logged"] == queued,
            "all_fed": some and tally["feed_posted"] == queued,
            "no_leaks": tally["leaks"] == 0,
            "all_completed": some and tally["completed"] == queued,
            # A message still queued when its session closed was never seen: not a failure.
            "extra_messages_acked": all(v["delivered"] == v["acked"] for v in extra.values()),
            "extra_messages_reached_agents": not st.args.extra_messages
            or (len(extra) == 3 and all(v["delivered"] > 0 for v in extra.values())),
            "sessions_deleted": st.counts["sessions_created"] > 0 and open_sessions == 0,
            "no_unexpected_requests": not st.unexpected,
            "no_finish_patches": st.counts["finish_patches"] == 0,
            "no_server_exceptions": st.counts["server_exceptions"] == 0,
        }
        return {
            "ok": all(checks.values()),
            "checks": checks,
            "jobs": tally,
            "sessions": {"created": st.counts["sessions_created"],
                         "deleted": st.counts["sessions_deleted"], "open": open_sessions,
                         "conflicts": st.counts["session_conflicts"]},
            "tokens": {"issued": st.counts["tokens_issued"],
                       "refused": st.counts["tokens_refused"],
                       "refusal_reasons": dict(st.token_refusals)},
            "agents": {"registered": st.counts["registrations"],
                       "replaced": st.counts["replacements"], "now": len(st.agents)},
            "extra_messages": extra,
            "counts": dict(st.counts),
            "unexpected_requests": dict(st.unexpected),
            "leak_samples": list(st.leak_samples),
            "exception_samples": list(st.exception_samples),
            "per_job": jobs,
        }


# ---------------------------------------------------------------------------------------------
# Start-up and shutdown
# ---------------------------------------------------------------------------------------------


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, handler, state: State):
        super().__init__(addr, handler)
        self.state = state


def loopback(host: str) -> str:
    try:
        ok = ipaddress.ip_address(host) in ipaddress.ip_network("127.0.0.0/8")
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"{host}: only 127.0.0.0/8 addresses are allowed")
    return host


def bind(host: str, port: int, handler, state: State) -> Server:
    return Server((host, port), handler, state)


def bind_plan(args, state: State) -> Server:
    """The plan hub on its own host when 127.0.0.2 can be bound, else another port."""
    if args.plan_host:
        return bind(args.plan_host, args.plan_port, PlanHandler, state)
    try:
        return bind("127.0.0.2", args.plan_port, PlanHandler, state)
    except OSError:
        return bind(args.host, args.plan_port, PlanHandler, state)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", type=loopback, default="127.0.0.1",
                   help="address of the collection and token listeners (127.0.0.0/8)")
    p.add_argument("--port", type=int, default=0, help="collection port (0: any free)")
    p.add_argument("--token-port", type=int, default=0, help="token authority port")
    p.add_argument("--plan-host", type=loopback, default=None,
                   help="plan-hub address (default 127.0.0.2 if bindable, else --host)")
    p.add_argument("--plan-port", type=int, default=0, help="plan-hub port")
    p.add_argument("--collection-path", default="/org", help="path the collection lives under")
    p.add_argument("--pool", default="Default", help="the one agent pool's name")
    p.add_argument("--pat", default=os.environ.get("TESTSERVER_PAT", ""),
                   help="the PAT registration must present (default: $TESTSERVER_PAT)")
    p.add_argument("--jobs", type=int, default=10, help="jobs the server queues in total")
    p.add_argument("--job-interval-s", type=float, default=0.5,
                   help="seconds between queued jobs (0: all at once)")
    p.add_argument("--queue-after-sessions", type=int, default=1,
                   help="start queueing once this many sessions were created")
    p.add_argument("--long-poll-s", type=float, default=5.0, help="long-poll hold")
    p.add_argument("--lock-minutes", type=float, default=10.0, help="lock length per renewal")
    p.add_argument("--token-ttl-s", type=int, default=3599, help="listener token lifetime")
    p.add_argument("--skew-s", type=float, default=300.0, help="JWT nbf/exp clock skew")
    p.add_argument("--no-extra-messages", dest="extra_messages", action="store_false",
                   help="do not send JobMetadataUpdate, AgentRefresh and an unknown type")
    p.add_argument("--stats-file", default=None, help="write the tally here on exit")
    p.add_argument("--verbose", action="store_true", help="log every request on stderr")
    args = p.parse_args(argv)
    if not args.pat:
        p.error("a PAT is required (--pat or $TESTSERVER_PAT)")
    if not args.collection_path.startswith("/") or args.collection_path.rstrip("/") == "":
        p.error("--collection-path must be a path like /org")
    args.collection_path = args.collection_path.rstrip("/")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    state = State(args)
    collection = bind(args.host, args.port, CollectionHandler, state)
    authority = bind(args.host, args.token_port, TokenHandler, state)
    plan = bind_plan(args, state)
    url = lambda srv: f"http://{srv.server_address[0]}:{srv.server_address[1]}"  # noqa: E731
    state.collection_url = url(collection) + args.collection_path
    state.token_url = url(authority) + "/vssps" + args.collection_path + "/_apis/oauth2/token"
    # Trailing slash, as the service writes SystemVssConnection.url.
    state.plan_url = url(plan) + args.collection_path + "/"
    servers = [collection, authority, plan]
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2},
                                name=f"serve-{i}", daemon=True) for i, s in enumerate(servers)]
    for t in threads:
        t.start()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(json.dumps({
        "collection_url": state.collection_url,
        "token_url": state.token_url,
        "plan_url": state.plan_url,
        "stats_url": state.collection_url + "/_testserver/stats",
        "pool": args.pool,
        "jobs": args.jobs,
    }), flush=True)
    while not stop.wait(0.5):
        pass
    with state.lock:
        state.stopping = True
        state.changed.notify_all()
    for s in servers:
        s.shutdown()
        s.server_close()
    if args.stats_file:
        tmp = args.stats_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(stats(state), f, indent=2)
        os.replace(tmp, args.stats_file)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""Self-check of the test server: one agent's whole life, in raw HTTP, without fleetsim.

It starts azp_testserver.py as a child process and walks the path the real agent walks, as
Microsoft's documentation and the agent's source describe it: an anonymous call gets a 401 with
a Bearer challenge; registration with a PAT (any user name) returns a client id and an
authorizationUrl on another authority; a JWT client assertion signed RS256 buys a listener
token there (and the same assertion replayed is refused, and the collection itself has no token
route); a session's AES key is unwrapped with RSA-OAEP-SHA1; messages are long-polled, decrypted
(AES-CBC, PKCS7) and acknowledged; the job lock is renewed; the plan-hub calls go to the job's
SystemVssConnection.url with the job token; JobCompleted ends the job; the session is deleted.

It also proves the leak detector sees a leak: one log line carries a secret's base64 form and
the tally must count exactly one leak. So the "0 leaks" a fleet run reports means something.

Then five such agents at once, with keep-alive polls beside their main loops, serve ten jobs,
and the whole tally must be ok: the checks the fleet test asserts can be met.

A failure here is a bug of the test server, never of the fleet. Exit 0 when all holds, 1 with
the reason otherwise. Uses only the standard library and `cryptography`; never touches anything
off 127.0.0.0/8.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

HERE = Path(__file__).resolve().parent
PAT = "selftest-pat-" + uuid.uuid4().hex
#: Every call here has this deadline; the long poll hold below is well under it.
CALL_TIMEOUT_S = 15


class Failure(Exception):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Failure(what)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def call(method: str, url: str, body=None, auth: str | None = None,
         content_type: str = "application/json"):
    """(status, headers, parsed JSON or raw bytes); non-2xx answers are returned, not raised."""
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json; api-version=7.1")
    if data is not None:
        req.add_header("Content-Type", content_type)
    if auth:
        req.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(req, timeout=CALL_TIMEOUT_S) as r:
            status, headers, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, headers, raw = e.code, e.headers, e.read()
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw
    return status, headers, parsed


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def assertion(key, client_id: str, audience: str, shift_s: int = 0) -> str:
    now = int(time.time()) + shift_s
    header = b64url(json.dumps({"typ": "JWT", "alg": "RS256"}).encode())
    claims = b64url(json.dumps({"iss": client_id, "sub": client_id, "aud": audience,
                                "nbf": now, "exp": now + 300, "jti": str(uuid.uuid4())}).encode())
    sig = key.sign(f"{header}.{claims}".encode(), asym_padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{claims}.{b64url(sig)}"


def token_form(jwt: str) -> bytes:
    return urllib.parse.urlencode({
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": jwt,
    }).encode()


def decrypt(key: bytes, msg: dict) -> dict:
    iv, cipher = base64.b64decode(msg["iv"]), base64.b64decode(msg["body"])
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    unpad = padding.PKCS7(128).unpadder()
    return json.loads(unpad.update(dec.update(cipher) + dec.finalize()) + unpad.finalize())


def run(urls: dict) -> None:
    coll, token_url, plan = urls["collection_url"], urls["token_url"], urls["plan_url"]
    origin = lambda u: urllib.parse.urlsplit(u).netloc  # noqa: E731
    check(origin(token_url) != origin(coll), "token authority shares the collection's listener")
    check(origin(plan) != origin(coll), "plan hub shares the collection's listener")

    # Anonymous → 401 with a Bearer challenge among the WWW-Authenticate headers.
    status, headers, _ = call("GET", f"{coll}/_apis/connectionData")
    challenges = headers.get_all("WWW-Authenticate") or []
    check(status == 401 and any(c.startswith("Bearer") for c in challenges),
          f"anonymous connectionData: {status} {challenges}")
    # Nothing outside the collection path, and no token route on the collection.
    outside = coll.rsplit("/", 1)[0] + "/_apis/connectionData"
    status, _, _ = call("GET", outside, auth=basic("x", PAT))
    check(status == 404, f"connectionData outside /org answered {status}")
    status, _, _ = call("POST", f"{coll}/_apis/oauth2/token", token_form("a.b.c"),
                        content_type="application/x-www-form-urlencoded")
    check(status == 404, f"token route on the collection answered {status}")

    pat = basic("VstsAgent", PAT)
    status, _, cd = call("GET", f"{coll}/_apis/connectionData?connectOptions=1&lastChangeId=-1"
                               "&lastChangeId64=-1", auth=pat)
    check(status == 200 and cd["deploymentType"] == "hosted"
          and cd["locationServiceData"]["serviceDefinitions"], f"connectionData {status} {cd}")
    status, _, pools = call("GET", f"{coll}/_apis/distributedtask/pools?poolName=Default"
                                  "&poolType=Automation", auth=basic("anyone", PAT))
    check(status == 200 and pools["count"] == 1, f"pool lookup {status} {pools}")
    pool = pools["value"][0]["id"]
    agents_url = f"{coll}/_apis/distributedtask/pools/{pool}/agents"
    status, _, found = call("GET", f"{agents_url}?agentName=self-1&includeCapabilities=False",
                            auth=pat)
    check(status == 200 and found["count"] == 0, f"agent lookup {status} {found}")

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    nums = key.public_key().public_numbers()
    pub = {"exponent": base64.b64encode(nums.e.to_bytes(3, "big")).decode(),
           "modulus": base64.b64encode(nums.n.to_bytes(256, "big")).decode()}
    status, _, agent = call("POST", agents_url, {
        "name": "self-1", "version": "4.260.0", "osDescription": "selftest", "maxParallelism": 1,
        "provisioningState": "Provisioned", "systemCapabilities": {},
        "authorization": {"publicKey": pub}}, auth=pat)
    check(status == 200, f"registration {status} {agent}")
    client_id = agent["authorization"]["clientId"]
    auth_url = agent["authorization"]["authorizationUrl"]
    check(auth_url == token_url, f"authorizationUrl {auth_url} != {token_url}")

    # Registering the name again is refused; `--replace` (PUT) keeps the client id and swaps
    # the key, so the first key's assertions stop verifying.
    body = {"name": "self-1", "authorization": {"publicKey": pub}}
    status, _, _ = call("POST", agents_url, body, auth=pat)
    check(status == 409, f"duplicate registration answered {status}")
    old_key = key
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    nums = key.public_key().public_numbers()
    agent["authorization"]["publicKey"] = {
        "exponent": base64.b64encode(nums.e.to_bytes(3, "big")).decode(),
        "modulus": base64.b64encode(nums.n.to_bytes(256, "big")).decode()}
    status, _, replaced = call("PUT", f"{agents_url}/{agent['id']}", agent, auth=pat)
    check(status == 200 and replaced["authorization"]["clientId"] == client_id,
          f"replace {status} {replaced}")
    status, _, _ = call("POST", auth_url, token_form(assertion(old_key, client_id, auth_url)),
                        content_type="application/x-www-form-urlencoded")
    check(status == 400, f"an assertion signed with the replaced key answered {status}")

    # Token at the other authority; expires_in is a string; a replayed assertion is refused.
    jwt = assertion(key, client_id, auth_url)
    status, _, tok = call("POST", auth_url, token_form(jwt),
                          content_type="application/x-www-form-urlencoded")
    check(status == 200 and isinstance(tok.get("expires_in"), str), f"token {status} {tok}")
    status, _, err = call("POST", auth_url, token_form(jwt),
                          content_type="application/x-www-form-urlencoded")
    check(status == 400 and "replay" in err.get("error_description", ""), f"replay {status} {err}")
    wrong_aud = assertion(key, client_id, coll + "/_apis/oauth2/token")
    status, _, _ = call("POST", auth_url, token_form(wrong_aud),
                        content_type="application/x-www-form-urlencoded")
    check(status == 400, f"wrong audience answered {status}")
    # An assertion from a clock an hour behind: refused with the phrase the listener looks for.
    stale = assertion(key, client_id, auth_url, shift_s=-3600)
    status, _, err = call("POST", auth_url, token_form(stale),
                          content_type="application/x-www-form-urlencoded")
    check(status == 400 and "Current server time is" in err.get("error_description", ""),
          f"stale assertion {status} {err}")
    bearer = "Bearer " + tok["access_token"]

    sessions = f"{coll}/_apis/distributedtask/pools/{pool}/sessions"
    status, _, session = call("POST", sessions, {
        "sessionId": "00000000-0000-0000-0000-000000000000", "ownerName": "selftest",
        "agent": {"id": agent["id"], "name": "self-1", "version": "4.260.0",
                  "osDescription": "selftest"}, "systemCapabilities": {}}, auth=bearer)
    check(status == 200 and session["encryptionKey"]["encrypted"], f"session {status} {session}")
    aes_key = key.decrypt(base64.b64decode(session["encryptionKey"]["value"]), asym_padding.OAEP(
        mgf=asym_padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None))
    check(len(aes_key) == 32, "session key is not AES-256")
    status, _, _ = call("POST", sessions, {"agent": {"id": agent["id"]}}, auth=bearer)
    check(status == 409, f"second session answered {status}")
    sid = session["sessionId"]
    messages = f"{coll}/_apis/distributedtask/pools/{pool}/messages"

    def poll(last):
        q = f"?sessionId={sid}" + (f"&lastMessageId={last}" if last is not None else "")
        status, _, msg = call("GET", messages + q, auth=bearer)
        check(status in (200, 202), f"poll {status} {msg}")
        return msg

    def ack(msg):
        status, _, _ = call("DELETE", f"{messages}/{msg['messageId']}?sessionId={sid}",
                            auth=bearer)
        check(status == 204, f"ack {status}")

    # Messages in order: an unknown type (skip), the job, then JobMetadataUpdate.
    last, job, seen = None, None, []
    while job is None:
        msg = poll(last)
        check(msg is not None, "no job message within the long poll")
        last = msg["messageId"]
        body = decrypt(aes_key, msg)
        seen.append(msg["messageType"])
        ack(msg)
        if msg["messageType"] == "PipelineAgentJobRequest":
            job = body
    check(seen[0] != "PipelineAgentJobRequest", f"no non-job message came first: {seen}")
    check(job["plan"]["version"] == 9 and len(job["steps"]) >= 2, "job message shape")
    endpoint = next(e for e in job["resources"]["endpoints"] if e["name"] == "SystemVssConnection")
    check(endpoint["url"] == plan, f"SystemVssConnection.url {endpoint['url']} != {plan}")
    job_bearer = "Bearer " + endpoint["authorization"]["parameters"]["AccessToken"]
    secrets = [v["value"] for v in job["variables"].values() if v.get("isSecret")]
    check(len(secrets) >= 2 and job["mask"][0]["type"] == "regex", "secrets and mask hints")

    status, _, lock = call("PATCH", f"{coll}/_apis/distributedtask/pools/{pool}/jobrequests/"
                                    f"{job['requestId']}?lockToken={uuid.UUID(int=0)}",
                           {"requestId": job["requestId"]}, auth=bearer)
    check(status == 200 and lock["lockedUntil"], f"lock renewal {status} {lock}")

    hub = (f"{plan}{job['plan']['scopeIdentifier']}/_apis/distributedtask/hubs/"
           f"{job['plan']['planType']}/plans/{job['plan']['planId']}")
    tl = f"{hub}/timelines/{job['timeline']['id']}"
    # The plan hub refuses the listener token and anonymous calls; it is not on the collection.
    status, headers, _ = call("PATCH", f"{tl}/records", {"count": 0, "value": []}, auth=bearer)
    check(status == 401 and "Bearer" in (headers.get("WWW-Authenticate") or ""),
          f"listener token on the plan hub answered {status}")
    coll_hub = hub.replace(plan.rstrip("/"), coll)
    status, _, _ = call("PATCH", f"{coll_hub}/timelines/{job['timeline']['id']}/records",
                        {"count": 0, "value": []}, auth=job_bearer)
    check(status in (401, 404), f"plan hub on the collection answered {status}")

    records = [{"id": job["jobId"], "type": "Job", "name": "Job", "state": "inProgress"}]
    records += [{"id": s["id"], "parentId": job["jobId"], "type": "Task", "name": s["name"],
                 "state": "completed", "result": "succeeded"} for s in job["steps"]]
    status, _, _ = call("PATCH", f"{tl}/records", {"count": len(records), "value": records},
                        auth=job_bearer)
    check(status == 200, f"records {status}")
    step = job["steps"][1]["id"]
    status, _, _ = call("POST", f"{tl}/records/{step}/feed",
                        {"value": ["building", "using *** for the deployment"], "count": 2,
                         "stepId": step, "startLine": 1}, auth=job_bearer)
    check(status == 204, f"feed {status}")
    status, _, log = call("POST", f"{hub}/logs", {"path": f"logs\\{step}"}, auth=job_bearer)
    check(status == 200 and isinstance(log.get("id"), int), f"create log {status} {log}")
    status, _, _ = call("POST", f"{hub}/logs/{log['id']}", b"line one\nusing *** here\n",
                        auth=job_bearer, content_type="application/octet-stream")
    check(status == 200, f"log upload {status}")
    status, _, _ = call("PUT", f"{tl}/records/{step}/attachments/Distributedtask.Core.Summary/"
                               "summary.md", b"# all good", auth=job_bearer,
                        content_type="application/octet-stream")
    check(status == 200, f"attachment {status}")
    # One deliberate leak (a secret's base64 form) that the tally must catch.
    leak = base64.b64encode(secrets[1].encode())
    status, _, _ = call("POST", f"{hub}/logs/{log['id']}", b"oops " + leak + b"\n",
                        auth=job_bearer, content_type="application/octet-stream")
    check(status == 200, f"leaking log upload {status}")
    status, _, _ = call("POST", f"{hub}/events", {"name": "JobCompleted", "jobId": job["jobId"],
                                                  "requestId": job["requestId"],
                                                  "result": "succeeded"}, auth=job_bearer)
    check(status == 204, f"JobCompleted {status}")

    # After the job: JobMetadataUpdate and AgentRefresh, both acked and skipped.
    wanted = {"JobMetadataUpdate", "AgentRefresh"}
    while wanted:
        msg = poll(last)
        check(msg is not None, f"missing messages {wanted}")
        last = msg["messageId"]
        wanted.discard(msg["messageType"])
        ack(msg)

    status, _, reqs = call("GET", f"{coll}/_apis/distributedtask/pools/{pool}/jobrequests",
                           auth=pat)
    check(status == 200 and reqs["value"][0]["receiveTime"] and reqs["value"][0]["queueTime"],
          f"jobrequests {status} {reqs}")
    status, _, _ = call("DELETE", f"{sessions}/{sid}", auth=bearer)
    check(status == 204, f"session delete {status}")

    _, _, tally = call("GET", urls["stats_url"])
    c = tally["checks"]
    for name in ("all_delivered", "all_acked", "all_renewed", "all_timelines_use_message_ids",
                 "all_logged", "all_fed", "all_completed", "extra_messages_acked",
                 "extra_messages_reached_agents",
                 "sessions_deleted", "no_finish_patches", "no_server_exceptions"):
        check(c[name], f"stats check {name} failed: {json.dumps(tally, indent=1)}")
    check(tally["jobs"]["leaks"] == 1, f"the deliberate leak counted {tally['jobs']['leaks']}")
    check(tally["tokens"]["issued"] == 1 and tally["tokens"]["refused"] == 4,
          f"tokens {tally['tokens']}")
    # The deliberate probes above are the only unexpected requests.
    check(set(tally["unexpected_requests"]) == {"collection GET /_apis/connectionData",
                                                "collection POST /org/_apis/oauth2/token",
                                                "collection PATCH /org/{id}/_apis/distributedtask/"
                                                "hubs/Build/plans/{id}/timelines/{id}/records"},
          f"unexpected requests {tally['unexpected_requests']}")


class RawAgent:
    """A well-behaved agent in raw HTTP, for the concurrent phase: it serves jobs until told to
    stop, with a keep-alive poll beside its main loop as the real listener has (v3.236.1+)."""

    def __init__(self, urls: dict, name: str):
        self.urls, self.name = urls, name
        self.errors: list[str] = []
        self.jobs_done = 0

    def start(self) -> None:
        coll, pat = self.urls["collection_url"], basic("VstsAgent", PAT)
        _, _, pools = call("GET", f"{coll}/_apis/distributedtask/pools?poolName=Default", auth=pat)
        self.pool = pools["value"][0]["id"]
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        nums = self.key.public_key().public_numbers()
        pub = {"exponent": base64.b64encode(nums.e.to_bytes(3, "big")).decode(),
               "modulus": base64.b64encode(nums.n.to_bytes(256, "big")).decode()}
        status, _, agent = call("POST", f"{coll}/_apis/distributedtask/pools/{self.pool}/agents",
                                {"name": self.name, "authorization": {"publicKey": pub}}, auth=pat)
        check(status == 200, f"{self.name}: register {status}")
        auth = agent["authorization"]
        status, _, tok = call("POST", auth["authorizationUrl"], token_form(
            assertion(self.key, auth["clientId"], auth["authorizationUrl"])),
            content_type="application/x-www-form-urlencoded")
        check(status == 200, f"{self.name}: token {status}")
        self.bearer = "Bearer " + tok["access_token"]
        self.base = f"{coll}/_apis/distributedtask/pools/{self.pool}"
        status, _, session = call("POST", f"{self.base}/sessions", {
            "ownerName": self.name, "agent": {"id": agent["id"], "name": self.name}},
            auth=self.bearer)
        check(status == 200, f"{self.name}: session {status}")
        self.sid = session["sessionId"]
        self.aes = self.key.decrypt(
            base64.b64decode(session["encryptionKey"]["value"]),
            asym_padding.OAEP(mgf=asym_padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(),
                              label=None))

    def serve(self, stop: threading.Event) -> None:
        try:
            keepalive = threading.Thread(target=self.keepalive, args=(stop,), daemon=True)
            keepalive.start()
            last = None
            while not stop.is_set():
                q = f"?sessionId={self.sid}" + (f"&lastMessageId={last}" if last else "")
                status, _, msg = call("GET", f"{self.base}/messages{q}", auth=self.bearer)
                check(status in (200, 202), f"{self.name}: poll {status}")
                if msg is None:
                    continue
                last = msg["messageId"]
                body = decrypt(self.aes, msg)
                status, _, _ = call("DELETE", f"{self.base}/messages/{last}?sessionId={self.sid}",
                                    auth=self.bearer)
                check(status == 204, f"{self.name}: ack {status}")
                if msg["messageType"] == "PipelineAgentJobRequest":
                    self.run_job(body)
            keepalive.join()
            status, _, _ = call("DELETE", f"{self.base}/sessions/{self.sid}", auth=self.bearer)
            check(status == 204, f"{self.name}: session delete {status}")
        except (Failure, OSError, KeyError, ValueError) as e:
            self.errors.append(f"{self.name}: {e!r}")

    def keepalive(self, stop: threading.Event) -> None:
        # Its answers are thrown away, as the real listener does; messages must survive it.
        while not stop.wait(0.3):
            call("GET", f"{self.base}/messages?sessionId={self.sid}", auth=self.bearer)

    def run_job(self, job: dict) -> None:
        status, _, _ = call("PATCH", f"{self.base}/jobrequests/{job['requestId']}?lockToken="
                                     "00000000-0000-0000-0000-000000000000",
                            {"requestId": job["requestId"]}, auth=self.bearer)
        check(status == 200, f"{self.name}: renew {status}")
        conn = next(e for e in job["resources"]["endpoints"] if e["name"] == "SystemVssConnection")
        auth = "Bearer " + conn["authorization"]["parameters"]["AccessToken"]
        plan = job["plan"]
        hub = (f"{conn['url']}{plan['scopeIdentifier']}/_apis/distributedtask/hubs/"
               f"{plan['planType']}/plans/{plan['planId']}")
        tl = f"{hub}/timelines/{job['timeline']['id']}"
        records = [{"id": job["jobId"], "state": "inProgress"}]
        records += [{"id": st["id"], "parentId": job["jobId"], "state": "completed"}
                    for st in job["steps"]]
        for method, url, body, ctype in [
            ("PATCH", f"{tl}/records", {"count": len(records), "value": records}, None),
            ("POST", f"{tl}/records/{job['jobId']}/feed", {"value": ["step ***"], "count": 1},
             None),
            ("POST", f"{hub}/logs", {"path": "logs\\job"}, None),
        ]:
            status, _, answer = call(method, url, body, auth=auth)
            check(status in (200, 204), f"{self.name}: {method} {url} {status}")
        status, _, _ = call("POST", f"{hub}/logs/{answer['id']}", b"masked ***\n", auth=auth,
                            content_type="application/octet-stream")
        check(status == 200, f"{self.name}: log upload {status}")
        status, _, _ = call("POST", f"{hub}/events", {"name": "JobCompleted", "jobId": job["jobId"],
                                                      "requestId": job["requestId"],
                                                      "result": "succeeded"}, auth=auth)
        check(status == 204, f"{self.name}: JobCompleted {status}")
        self.jobs_done += 1


def run_concurrent(urls: dict, agents: int) -> None:
    """Several agents at once against a server queueing jobs: the whole tally must be ok."""
    fleet = [RawAgent(urls, f"conc-{i}") for i in range(agents)]
    for a in fleet:
        a.start()
    stop = threading.Event()
    threads = [threading.Thread(target=a.serve, args=(stop,)) for a in fleet]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        _, _, tally = call("GET", urls["stats_url"])
        extra = tally["extra_messages"].values()
        if tally["checks"]["all_completed"] and tally["checks"]["all_jobs_queued"] \
                and len(extra) == 3 and all(v["acked"] == v["sent"] for v in extra):
            break
        time.sleep(0.2)  # polling a tally in a check script, not synchronising threads
    stop.set()
    for t in threads:
        t.join(timeout=30)
    errors = [e for a in fleet for e in a.errors]
    check(not errors, f"concurrent agents: {errors}")
    _, _, tally = call("GET", urls["stats_url"])
    failed = [k for k, v in tally["checks"].items() if not v]
    check(tally["ok"], f"concurrent phase: checks {failed} failed: "
                       f"{json.dumps({k: v for k, v in tally.items() if k != 'per_job'})}")
    check(sum(a.jobs_done for a in fleet) == tally["jobs"]["queued"], "jobs done != queued")
    check(sum(1 for a in fleet if a.jobs_done) > 1, "the jobs did not spread over agents")


def with_server(args: list[str], body) -> None:
    """Run `body(urls)` against a fresh server; the server must exit 0 on SIGTERM."""
    server = subprocess.Popen([sys.executable, str(HERE / "azp_testserver.py"), "--pat", PAT,
                               *args], stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline() if server.stdout else ""
        check(bool(line), "the server printed no start-up line")
        body(json.loads(line))
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    check(server.returncode == 0, f"the server exited {server.returncode} on SIGTERM")


def main() -> int:
    try:
        # One agent, every rule, including the negative answers.
        with_server(["--jobs", "1", "--long-poll-s", "2"], run)
        # Five agents, ten jobs, keep-alive polls beside the main loops.
        with_server(["--jobs", "10", "--job-interval-s", "0.1", "--long-poll-s", "1"],
                    lambda urls: run_concurrent(urls, 5))
    except Failure as e:
        print(f"selftest: FAIL: {e}", file=sys.stderr)
        return 1
    print("selftest: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())

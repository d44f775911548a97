#!/usr/bin/env python3
"""Makes a data-directory fixture: a real skein-node's data, and what its API
showed, for the upgrade tests (issue 12: "a data directory written by 0.1.0
opens in the new version with everything intact").

    scripts/make-datadir-fixture.py BIN_DIR OUT.tar.gz

BIN_DIR holds the skein-node to record (for 0.1.0: a build of commit
65601e1). It starts one node that bootstraps a one-node cluster on free
loopback ports, and drives it through the HTTP API so that its log and its
snapshot hold every kind of command and every task status:

- queues configured (every field of a queue patch), paused and resumed;
- tasks that succeed (noop, sleep, exec), fail and die after retries (an
  exec that exits 75), run again after a kill -9 of the node, are cancelled (by request, and because a dependency died),
  are retried, wait blocked, wait delayed, wait in a paused queue, carry
  idempotency keys and dependencies by id and by key;
- migration plans applied (a plan, and an entity it depends on) and run:
  the plan migrates a CSV file to Parquet;
- 10,050 pause/resume toggles of a scratch queue, so that the node takes a
  snapshot (every 10,000 entries) and purges the log before it; then more
  commands after the snapshot, so that opening the directory both loads a
  snapshot and replays log entries.

Then it records what the API shows (every task with its payload, result
and history; the queues; the plans; the digest and its applied index) as
`expected.json`, stops the node (SIGTERM), and packs the data directory
and `expected.json` into OUT.tar.gz. The node's own address is recorded
too: a one-node cluster elects itself wherever it listens.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, addr):
        self.base = f"http://{addr}"

    def call(self, method, path, body=None, ok=(200, 201)):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, text = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read()
        if status not in ok:
            sys.exit(f"{method} {path}: {status} {text.decode(errors='replace')}")
        return json.loads(text) if text else None

    def enqueue(self, *specs):
        reply = self.call("POST", "/api/v1/tasks", {"tasks": list(specs)})
        return [t["id"] for t in reply["tasks"]]

    def task(self, task_id):
        return self.call("GET", f"/api/v1/tasks/{task_id}")

    def wait(self, what, check, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if check():
                return
            time.sleep(0.1)
        sys.exit(f"timed out waiting for {what}")

    def wait_status(self, task_id, *statuses, timeout=60):
        self.wait(f"task {task_id} to be {'/'.join(statuses)}",
                  lambda: self.task(task_id)["status"] in statuses, timeout)

    def all_tasks(self):
        tasks, cursor = [], None
        while True:
            page = self.call("GET", "/api/v1/tasks?limit=1000" + (f"&cursor={cursor}" if cursor else ""))
            tasks += page["tasks"]
            cursor = page.get("next_cursor")
            if cursor is None:
                return tasks


def plan_documents(data_dir):
    source = os.path.join(ROOT, "samples", "datasets", "customers.csv")
    target = os.path.join(data_dir, "..", "out", "customers-v2")
    dataset = {
        "apiVersion": "backstage.io/v1alpha1", "kind": "Component",
        "metadata": {"name": "crm-customers", "description": "the CRM's export"},
        "spec": {"type": "dataset", "lifecycle": "production", "owner": "team-crm"},
    }
    plan = {
        "apiVersion": "backstage.io/v1alpha1", "kind": "Component",
        "metadata": {"name": "customers-v2", "labels": {"tier": "gold"},
                     "annotations": {"honk/queue": "dataset-migrations"}},
        "spec": {
            "type": "migration-plan", "lifecycle": "production", "owner": "team-data",
            "dependsOn": ["component:default/crm-customers"],
            "source": {"url": f"file://{os.path.abspath(source)}", "format": "csv"},
            "target": {"url": f"file://{os.path.abspath(target)}/", "format": "parquet"},
            "steps": [
                {"type": "sql", "query": "SELECT * FROM source"},
                {"type": "validate", "row_count": "equal"},
            ],
        },
    }
    return [dataset, plan]


def drive(node, data_dir, restart):
    # Queues: every field of a patch; a paused queue.
    node.call("PATCH", "/api/v1/queues/etl", {
        "lease_ms": 20000, "max_attempts": 2, "backoff_base_ms": 100, "backoff_cap_ms": 200,
        "concurrency": 3, "max_depth": 100000, "retention_ms": 0, "stuck_expiries": 4,
        "stuck_run_ms": 600000, "stuck_factor": 5, "stuck_silence_ms": 30000})
    node.enqueue({"queue": "later", "kind": "noop"})
    node.call("POST", "/api/v1/queues/later/pause")
    node.enqueue({"queue": "later", "kind": "noop", "payload": {"waits": "for the queue to resume"}})

    # Tasks of every fate.
    ok = node.enqueue(
        {"queue": "etl", "kind": "noop", "payload": {"dataset": "a"}, "idempotency_key": "noop-a"},
        {"queue": "etl", "kind": "sleep", "payload": {"ms": 50}, "priority": 5},
        {"queue": "etl", "kind": "exec", "payload": {"command": ["/bin/echo", "{\"rows\": 3}"]}},
    )
    # Exit 75 is a retryable failure: failed, then dead after max_attempts (2).
    failing = node.enqueue({"queue": "etl", "kind": "exec", "payload": {"command": ["/bin/sh", "-c", "exit 75"]},
                            "idempotency_key": "always-fails"})[0]
    doomed = node.enqueue({"queue": "etl", "kind": "noop", "depends_on": ["always-fails"]})[0]
    chained = node.enqueue(
        {"queue": "etl", "kind": "noop", "idempotency_key": "first"},
        {"queue": "etl", "kind": "noop", "depends_on": ["first", ok[0]]},
    )
    delayed = node.enqueue({"queue": "etl", "kind": "noop", "delay_ms": 10 ** 10})[0]
    blocked = node.enqueue({"queue": "etl", "kind": "noop", "depends_on": [delayed]})[0]
    to_cancel = node.enqueue({"queue": "later", "kind": "noop", "payload": {"x": [1, 2, 3]}})[0]
    node.call("POST", f"/api/v1/tasks/{to_cancel}/cancel", {"reason": "not needed any more"})
    for t in ok + chained:
        node.wait_status(t, "succeeded")
    node.wait_status(failing, "dead")
    node.wait_status(doomed, "cancelled")
    node.call("POST", f"/api/v1/tasks/{failing}/retry")
    node.wait_status(failing, "dead")
    assert node.task(blocked)["status"] == "blocked"

    # A node killed (-9) while it runs a task: on restart it hands the lease
    # back (released) and runs the task again.
    slow = node.enqueue({"queue": "etl", "kind": "sleep", "payload": {"ms": 3000}})[0]
    node.wait_status(slow, "leased")
    restart()
    node.wait_status(slow, "succeeded", timeout=60)

    # Plans: apply, run, wait for the migration.
    node.call("POST", "/api/v1/plans", {"entities": plan_documents(data_dir)})
    runs = node.call("POST", "/api/v1/plans/run", {"refs": ["customers-v2"]})["runs"]
    node.wait("the plan's migration", lambda: node.call("GET", "/api/v1/plans/component/default/customers-v2")
              ["task"]["status"] in ("succeeded", "dead"), timeout=120)
    plan = node.call("GET", "/api/v1/plans/component/default/customers-v2")
    if plan["task"]["status"] != "succeeded":
        sys.exit(f"the migration did not succeed: {plan['task']}")

    # Enough entries for a snapshot (every 10,000) and a purge.
    before = node.call("GET", "/api/v1/admin/digest")["applied_index"]
    for i in range(10_050):
        node.call("POST", f"/api/v1/queues/scratch/{'pause' if i % 2 == 0 else 'resume'}")
    # After the snapshot: more entries to replay.
    node.enqueue({"queue": "etl", "kind": "noop", "payload": {"after": "snapshot"}, "idempotency_key": "after"})
    node.wait_status(node.enqueue({"queue": "etl", "kind": "noop", "idempotency_key": "after"})[0], "succeeded")
    node.call("POST", "/api/v1/queues/later/resume")
    node.call("POST", "/api/v1/queues/later/pause")
    return {"runs": runs, "applied_before_toggles": before}


def record(node):
    tasks = [node.task(t["id"]) for t in node.all_tasks()]
    return {
        "tasks": tasks,
        "queues": node.call("GET", "/api/v1/queues"),
        "plans": node.call("GET", "/api/v1/plans"),
        "plan_details": [node.call("GET", f"/api/v1/plans/{p['entity_ref'].replace(':', '/', 1)}")
                         for p in node.call("GET", "/api/v1/plans")["plans"]],
        "digest": node.call("GET", "/api/v1/admin/digest"),
        "max_token": max((e["token"] or 0) for t in tasks for e in t["history"]),
    }


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    bin_dir, out = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    work = tempfile.mkdtemp(prefix="skein-fixture-")
    data = os.path.join(work, "node1")
    http, rpc = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    log = open(os.path.join(work, "node1.log"), "w")
    args = [os.path.join(bin_dir, "skein-node"), "--id", "1", "--listen", rpc, "--http", http,
            "--data-dir", data, "--slots", "2"]
    procs = [subprocess.Popen(args + ["--bootstrap"], stdout=log, stderr=log)]
    node = Node(http)

    def restart():
        procs[-1].kill()
        procs[-1].wait()
        procs.append(subprocess.Popen(args, stdout=log, stderr=log))
        node.wait("the node to be ready again", lambda: _ready(node), timeout=30)

    try:
        node.wait("the node to be ready", lambda: _ready(node), timeout=30)
        version = subprocess.run([os.path.join(bin_dir, "skein-node"), "--version"], capture_output=True,
                                 text=True).stdout.strip()
        facts = drive(node, data, restart)
        expected = record(node)
        expected.update(facts, version=version, http=http, rpc=rpc)
        procs[-1].send_signal(signal.SIGTERM)
        procs[-1].wait(timeout=60)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    snaps = os.listdir(os.path.join(data, "snapshots"))
    if "current.snap" not in snaps:
        sys.exit(f"no snapshot was taken ({snaps}); see {log.name}")
    # RocksDB's own text logs are not data.
    for name in os.listdir(os.path.join(data, "db")):
        if name.startswith("LOG"):
            os.remove(os.path.join(data, "db", name))
    with open(os.path.join(work, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
    with tarfile.open(out, "w:gz") as tar:
        tar.add(data, arcname="node1")
        tar.add(os.path.join(work, "expected.json"), arcname="expected.json")
    print(f"{out}: {len(expected['tasks'])} tasks, applied index {expected['digest']}, "
          f"max token {expected['max_token']}, {os.path.getsize(out)} bytes")
    shutil.rmtree(work)


def _ready(node):
    try:
        node.call("GET", "/readyz")
        return True
    except (urllib.error.URLError, ConnectionError, OSError, SystemExit):
        return False


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A sample migration step for skein's `exec` transform: CSV -> JSON lines.

skein runs it with the task as JSON on stdin; the task's payload says
    {"source": "path/to/in.csv", "target": "path/to/out.jsonl",
     "integers": ["col", ...], "booleans": ["col", ...]}
It casts the named columns, checks that every source row was written, and
publishes the target atomically (write a temporary file, fsync, rename), so a
retry or a stale worker never leaves a half-written file behind. The last
line on stdout is the result skein records. Exit 75 asks skein to retry.
"""
import csv
import json
import os
import sys

task = json.load(sys.stdin)
p = task["payload"]
source, target = p["source"], p["target"]
integers, booleans = set(p.get("integers", [])), set(p.get("booleans", []))

if not os.path.exists(source):
    print(f"source {source} does not exist", file=sys.stderr)
    sys.exit(1)

os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
tmp = f"{target}.tmp.{task['token']}"
rows = 0
with open(source, newline="") as src, open(tmp, "w") as out:
    for row in csv.DictReader(src):
        for col in integers:
            row[col] = int(row[col])
        for col in booleans:
            row[col] = row[col].strip().lower() == "true"
        out.write(json.dumps(row, sort_keys=True) + "\n")
        rows += 1
    out.flush()
    os.fsync(out.fileno())

with open(source, newline="") as src:
    expected = sum(1 for _ in csv.DictReader(src))
if rows != expected:
    os.unlink(tmp)
    print(f"validation failed: wrote {rows} rows of {expected}", file=sys.stderr)
    sys.exit(1)

os.replace(tmp, target)
print(json.dumps({"rows": rows, "target": target}))

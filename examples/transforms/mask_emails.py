#!/usr/bin/env python3
"""An `exec` step: masks the local part of every email address.

Reads the dataset so far from $SKEIN_INPUT (JSON lines) and writes the
result to $SKEIN_OUTPUT_DIR/masked.jsonl; skein reads it back and goes on
with the next step. Exit 0 = success, 75 = try again later, other = fail.
"""
import json
import os
import sys

src = os.environ["SKEIN_INPUT"]
out = os.path.join(os.environ["SKEIN_OUTPUT_DIR"], "masked.jsonl")
n = 0
with open(src) as f, open(out, "w") as w:
    for line in f:
        row = json.loads(line)
        email = row.get("email") or ""
        local, _, domain = email.partition("@")
        if domain:
            row["email"] = local[:1] + "***@" + domain
        w.write(json.dumps(row) + "\n")
        n += 1
print(f"masked {n} rows", file=sys.stderr)

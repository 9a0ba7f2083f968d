#!/usr/bin/env python3
"""Every file or folder a doc names in backquotes (`core/...`, `tests/...`, ...) exists, from the repository's root
or from the doc's own folder: docs that point at moved code fail `make test` instead of misleading a reader."""
import os
import re
import subprocess
import sys

ROOTS = "core|consumers|edge-worker|query-lambdas|tests|scripts|infra|docs"
ls_files = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]
tracked = subprocess.run(ls_files, capture_output=True, text=True, check=True).stdout.split()
# Only what a fresh clone would have: ignored build outputs (edge-worker/build/, target/) do not count.
known = set(tracked)
for f in tracked:
    parts = f.split("/")
    known.update("/".join(parts[:i]) for i in range(1, len(parts)))
docs = [f for f in tracked if f.endswith(".md")]


def exists(path):
    return os.path.normpath(path) in known
stale = []
for doc in docs:
    text = open(doc, encoding="utf-8").read()
    for m in re.finditer(rf"`((?:{ROOTS})/[^`\s]*)`", text):
        path = m.group(1).rstrip(".,:")
        if not (exists(path) or exists(os.path.join(os.path.dirname(doc), path))):
            stale.append(f"{doc}: `{path}` does not exist")
print("\n".join(stale) or f"{len(docs)} docs: every path they name exists")
sys.exit(1 if stale else 0)

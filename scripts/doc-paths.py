#!/usr/bin/env python3
"""Every file or folder a doc names in backquotes (`core/...`, `tests/...`, ...) exists, from the repository's root
or from the doc's own folder: docs that point at moved code fail `make test` instead of misleading a reader."""
import os
import re
import subprocess
import sys

ROOTS = "core|consumers|edge-worker|query-lambdas|tests|scripts|infra|docs"
docs = subprocess.run(["git", "ls-files", "*.md"], capture_output=True, text=True, check=True).stdout.split()
stale = []
for doc in docs:
    text = open(doc, encoding="utf-8").read()
    for m in re.finditer(rf"`((?:{ROOTS})/[^`\s]*)`", text):
        path = m.group(1).rstrip(".,:")
        if not (os.path.exists(path) or os.path.exists(os.path.join(os.path.dirname(doc), path))):
            stale.append(f"{doc}: `{path}` does not exist")
print("\n".join(stale) or f"{len(docs)} docs: every path they name exists")
sys.exit(1 if stale else 0)

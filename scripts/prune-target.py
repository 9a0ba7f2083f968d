#!/usr/bin/env python3
"""Removes this workspace's own build outputs from a cargo target directory, keeping the dependencies'.

`make test` under CI builds into a target directory shared by fresh clones (see scripts/test.sh). Dependencies
compile to the same files from any clone and are reused; the workspace's crates compile to new ones in every clone
(their paths are part of their identity), so each run removes its own at the end and the directory stays the size
of the dependencies. `--dry-run` lists instead of removing.

    python3 scripts/prune-target.py [--dry-run] TARGET_DIR
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path


def workspace_names() -> tuple[set[str], set[str]]:
    """(package names, target names with `-` as `_`) of the workspace's members."""
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    packages = {p["name"] for p in meta["packages"]}
    targets = {t["name"].replace("-", "_") for p in meta["packages"] for t in p["targets"]}
    return packages, targets


def ours(path: Path, packages: set[str], targets: set[str]) -> bool:
    """Whether a file or directory of a profile directory was built from the workspace's sources."""
    name = path.name
    parent = path.parent.name
    if parent in (".fingerprint", "build"):
        return name.rsplit("-", 1)[0] in packages
    if parent in ("deps", "incremental"):
        stem = name.rsplit("-", 1)[0].removeprefix("lib")
        return stem in targets
    # a profile's top level: the binaries and libraries cargo copies out of deps/, and their dep-info files
    stem = name.split(".", 1)[0].removeprefix("lib").replace("-", "_")
    return stem in targets


def main() -> int:
    args = sys.argv[1:]
    dry = "--dry-run" in args
    args = [a for a in args if a != "--dry-run"]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(args[0])
    packages, targets = workspace_names()
    # profile directories: target/<profile> and target/<triple>/<profile>, each with a deps/ directory
    profiles = [d.parent for d in root.glob("*/deps")] + [d.parent for d in root.glob("*/*/deps")]
    removed = 0
    for profile in profiles:
        candidates = [p for p in profile.iterdir() if p.is_file()]
        for sub in ("deps", "incremental", ".fingerprint", "build"):
            if (profile / sub).is_dir():
                candidates += list((profile / sub).iterdir())
        for path in candidates:
            if not ours(path, packages, targets):
                continue
            removed += 1
            if dry:
                print(path)
            elif path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    print(f"{'would remove' if dry else 'removed'} {removed} of this workspace's build outputs from {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Writes wrangler.toml as a JSON Wrangler config without its [build] tables, for `wrangler deploy --dry-run`.

A dry run must check the bindings of every environment against the Worker already built in edge-worker/build/,
not rebuild it through cargo (each environment's [build] runs worker-build). Wrangler reads JSON configs as well
as TOML, and Python reads TOML without a dependency, so the copy is the same configuration minus the builds, with
the paths made absolute (Wrangler resolves them against the config file's directory, here a temporary one).

usage: wrangler-config.py <repo root> <output.json>
"""

import json
import sys
import tomllib
from pathlib import Path


def main() -> None:
    root, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
    config = tomllib.loads((root / "wrangler.toml").read_text())
    config.pop("build", None)
    for env in config.get("env", {}).values():
        env.pop("build", None)
    config["main"] = str(root / config["main"])
    for section in [config, *config.get("env", {}).values()]:
        assets = section.get("assets")
        if assets and "directory" in assets:
            assets["directory"] = str(root / assets["directory"])
    out.write_text(json.dumps(config, indent=2) + "\n")


if __name__ == "__main__":
    main()

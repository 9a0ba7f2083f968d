#!/usr/bin/env python3
"""Every variable the deployment definitions set is one the platform reads, and every secret they reference is in
infra/README.md's secrets list. A misspelt name is otherwise silently ignored (the default applies) and a secret
missing from the list is discovered at the first deploy.

The names the platform reads are the README configuration tables (README.md, query-lambdas/README.md), which a
test keeps equal to the code's declarations. Iggy's own variables (IGGY_ROOT_*, IGGY_HTTP_*, IGGY_CONFIG_PATH,
IGGY_SYSTEM_PATH, ...) are the server's, checked only for being listed.

usage: check-vars.py <repo root> <rendered kustomize overlay>...   (prints one line per problem, exits 1 if any)
"""

import json
import re
import sys
import tomllib
from pathlib import Path

import yaml

ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \|", re.M)


def known(root: Path) -> set[str]:
    names = set()
    for doc in ["README.md", "query-lambdas/README.md"]:
        names |= set(ROW.findall((root / doc).read_text()))
    # read by the TLS libraries, not the settings loader: the image sets it (infra/container/Containerfile)
    return names | {"SSL_CERT_FILE"}


def env_file_keys(path: Path) -> list[str]:
    keys = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keys.append(line.split("=", 1)[0])
    return keys


def main() -> int:
    root = Path(sys.argv[1])
    names = known(root)
    infra_readme = (root / "infra/README.md").read_text()
    problems: list[str] = []
    checked = 0

    def need(name: str, where: str) -> None:
        nonlocal checked
        checked += 1
        if name not in names:
            problems.append(f"{where}: {name} is not a variable the platform reads (README configuration tables)")

    def listed(secret: str, key: str, where: str) -> None:
        if f"`{key}`" not in infra_readme:
            problems.append(f"{where}: secret {secret}/{key} is not in infra/README.md's secrets list")

    for path in sorted((root / "infra/env").glob("*.env.example")):
        if path.name.startswith("iggy"):
            for key in env_file_keys(path):
                if f"`{key}`" not in infra_readme:
                    problems.append(f"{path.name}: {key} is not in infra/README.md's secrets list")
            continue
        for key in env_file_keys(path):
            need(key, f"infra/env/{path.name}")

    for path in sorted((root / "infra/systemd").glob("tracker-*.service")):
        for line in path.read_text().splitlines():
            if line.startswith("Environment="):
                need(line.removeprefix("Environment=").split("=", 1)[0], f"infra/systemd/{path.name}")

    compose = yaml.safe_load((root / "infra/compose.yaml").read_text())
    for name, service in compose["services"].items():
        if name == "iggy":
            continue
        for key in service.get("environment") or {}:
            need(key, f"infra/compose.yaml {name}")

    wrangler = tomllib.loads((root / "wrangler.toml").read_text())
    for env_name, section in [("top level", wrangler), *wrangler.get("env", {}).items()]:
        for key in section.get("vars", {}):
            need(key, f"wrangler.toml {env_name}")

    for rendered in sys.argv[2:]:
        for doc in yaml.safe_load_all(Path(rendered).read_text()):
            if not doc:
                continue
            kind, meta = doc["kind"], doc["metadata"]
            where = f"{Path(rendered).name} {kind}/{meta['name']}"
            if kind == "ConfigMap" and re.match(r"tracker-(config|endpoints)", meta["name"]):
                for key in doc.get("data", {}):
                    need(key, where)
            if kind not in ("StatefulSet", "Deployment"):
                continue
            for container in doc["spec"]["template"]["spec"]["containers"]:
                ours = container["image"].split("/")[-1].startswith("tracker-core")
                for env in container.get("env", []):
                    if ours:
                        need(env["name"], where)
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        listed(ref["name"], ref["key"], where)
                for volume in doc["spec"]["template"]["spec"].get("volumes", []):
                    if "secret" in volume and f"`{volume['secret']['secretName']}`" not in infra_readme:
                        problems.append(f"{where}: Secret {volume['secret']['secretName']} is not in infra/README.md")

    for problem in problems:
        print(problem)
    print(json.dumps({"names_checked": checked, "problems": len(problems)}))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

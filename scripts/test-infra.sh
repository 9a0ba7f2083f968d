#!/usr/bin/env bash
# `make infra-check` (and part of `make test`): validates every deployment definition in infra/ and wrangler.toml
# offline, with the tools that deploy or lint them, one line per check. Needs the built Worker (edge-worker/build/,
# for the Wrangler dry runs) and target/debug/tracker-core (for the image's smoke run); builds neither.
# infra/README.md says what each check proves.
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
ensure_node_packages
ensure_infra_tools

started=$SECONDS
work="$(mktemp -d)"
store="${XDG_CACHE_HOME:-$HOME/.cache}/tracker/containers"
# the run root must stay the same for a given store (podman records it): one per user, outside the temporary dir
uid="$(id -u)"
export BUILDAH_ROOT="$store/storage" BUILDAH_RUNROOT="${TMPDIR:-/tmp}/tracker-containers-run-$uid"
podman=(podman --root "$BUILDAH_ROOT" --runroot "$BUILDAH_RUNROOT" --storage-driver vfs)
smoke="tracker-infra-check-$$"
image="localhost/tracker-core:infra-check-$$"
cleanup() {
    "${podman[@]}" rm -f -t 0 "$smoke" >/dev/null 2>&1 || true
    "${podman[@]}" volume rm -f "$smoke" >/dev/null 2>&1 || true
    "${podman[@]}" rmi -f "$image" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

failed=()
# check NAME COMMAND...: runs COMMAND, prints one line; its output only when it fails
check() {
    local name="$1" t0=$SECONDS
    shift
    if "$@" >"$work/out" 2>&1; then
        printf '  ok    %-66s %3ss\n' "$name" "$((SECONDS - t0))"
    else
        printf '  FAIL  %-66s %3ss\n' "$name" "$((SECONDS - t0))"
        sed 's/^/        /' "$work/out" | tail -n 40
        failed+=("$name")
    fi
}

# a command whose diagnostics are warnings (exit status 0): any output line matching PATTERN fails it
quiet_unless() {
    local pattern="$1"
    shift
    "$@" >"$work/q" 2>&1 || { cat "$work/q"; return 1; }
    ! grep -E "$pattern" "$work/q"
}

say "deployment definitions (infra/, wrangler.toml)"

# Cloudflare: the dry run bundles the built Worker with each environment's bindings; the copy of wrangler.toml
# has no [build] tables, so no environment rebuilds the Worker through cargo
wrangler_dry_run() {
    local env="$1"
    [ -f edge-worker/build/index.js ] ||
        { echo "edge-worker/build/ is missing: bash scripts/build-worker.sh"; return 1; }
    mkdir -p "$work/wrangler"
    python3 scripts/wrangler-config.py . "$work/wrangler/wrangler.json"
    (cd "$work/wrangler" && WRANGLER_SEND_METRICS=false quiet_unless 'WARNING|ERROR|✘' \
        "$OLDPWD/node_modules/.bin/wrangler" deploy --dry-run --config wrangler.json --env "$env" \
        --outdir "$work/wrangler/out-${env:-top}")
}
for env in "" development staging production; do
    check "wrangler deploy --dry-run --env ${env:-\"\" (local development)}" wrangler_dry_run "$env"
done

# AWS
check "cfn-lint infra/aws/template.yaml" "$INFRA_BIN/cfn-lint" infra/aws/template.yaml
check "sam validate --lint infra/aws/template.yaml" env SAM_CLI_TELEMETRY=0 \
    "$SAM_BIN" validate --lint --template infra/aws/template.yaml --region us-east-1

# The image: built around a stripped copy of the debug binary `make test` builds, then run as in production
check "hadolint infra/container/Containerfile" "$INFRA_BIN/hadolint" infra/container/Containerfile
image_smoke_run() {
    [ -x target/debug/tracker-core ] || { echo "target/debug/tracker-core is missing (make test builds it)"; return 1; }
    infra/container/build-image.sh --tag "$image" target/debug/tracker-core || return 1
    "${podman[@]}" run -d --name "$smoke" --runtime runc --network none \
        --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --health-interval disable \
        --read-only --tmpfs /tmp --cap-drop all --security-opt no-new-privileges \
        -v "$smoke:/data" -e SECRETS_KEY="$(openssl rand -hex 32)" "$image" >/dev/null || return 1
    local healthy=""
    for _ in $(seq 60); do
        if "${podman[@]}" healthcheck run "$smoke" >/dev/null 2>&1; then healthy=1; break; fi
        sleep 0.5
    done
    [ -n "$healthy" ] || { echo "the health check never passed"; "${podman[@]}" logs "$smoke"; return 1; }
    local user
    user="$("${podman[@]}" inspect "$smoke" --format '{{.Config.User}}')"
    [ "$user" = "10001:10001" ] || { echo "runs as $user, not 10001:10001"; return 1; }
    "${podman[@]}" stop -t 30 "$smoke" >/dev/null || return 1
    local code
    code="$("${podman[@]}" inspect "$smoke" --format '{{.State.ExitCode}}')"
    [ "$code" = 0 ] || { echo "exited with $code after SIGTERM"; "${podman[@]}" logs "$smoke"; return 1; }
    "${podman[@]}" logs "$smoke" 2>&1 | grep -q "event log flushed" ||
        { echo "no 'event log flushed' on SIGTERM"; "${podman[@]}" logs "$smoke"; return 1; }
}
check "image: buildah FROM scratch, podman run --read-only, healthy, stops" image_smoke_run

# Kubernetes
validate_overlay() {
    kubectl kustomize "infra/k8s/overlays/$1" >"$work/$1.yaml" &&
        "$INFRA_BIN/kubernetes-validate" --quiet -k 1.32.0 --strict "$work/$1.yaml"
}
for overlay in staging production; do
    check "kubectl kustomize + kubernetes-validate --strict: $overlay" validate_overlay "$overlay"
done

# systemd: verify needs the ExecStart binaries and the system's units; a temporary root holds stand-ins for the
# binaries (the units are checked, not the programs) and a copy of the system's units
systemd_root() {
    local root="$work/systemd-root"
    mkdir -p "$root/usr/local/bin" "$root/etc/systemd/system" "$root/usr/lib/systemd"
    cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
    for bin in tracker-core tracker-consumer iggy-server; do
        printf '#!/bin/sh\n' >"$root/usr/local/bin/$bin"
        chmod +x "$root/usr/local/bin/$bin"
    done
    cp infra/systemd/*.service "$root/etc/systemd/system/"
}
units=(tracker-core.service tracker-consumer@filter.service tracker-consumer@archive.service iggy.service)
systemd_verify() {
    systemd_root && quiet_unless '.' systemd-analyze verify --root="$work/systemd-root" "${units[@]}"
}
systemd_security() {
    local unit
    for unit in "${units[@]}"; do
        systemd-analyze security --offline=yes --root="$work/systemd-root" --threshold=20 --no-pager "$unit" |
            tail -n 1
        [ "${PIPESTATUS[0]}" = 0 ] || return 1
    done
}
check "systemd-analyze verify infra/systemd/*.service" systemd_verify
check "systemd-analyze security: exposure at most 2.0 per unit" systemd_security

# compose and the provisioning files
check "check-jsonschema compose spec: infra/compose.yaml" \
    "$INFRA_BIN/check-jsonschema" --builtin-schema vendor.compose-spec infra/compose.yaml
check "check-jsonschema: infra/r2/lifecycle.json" \
    "$INFRA_BIN/check-jsonschema" --schemafile infra/r2/lifecycle.schema.json infra/r2/lifecycle.json
check "check-jsonschema: infra/iggy/users.json" \
    "$INFRA_BIN/check-jsonschema" --schemafile infra/iggy/users.schema.json infra/iggy/users.json
check "infra/k8s/base/iggy-server.toml is infra/iggy/server.toml" \
    cmp infra/iggy/server.toml infra/k8s/base/iggy-server.toml
check "variables are the platform's, secrets are listed (check-vars.py)" \
    "$INFRA_BIN/python" infra/check-vars.py . "$work/staging.yaml" "$work/production.yaml"

# the cost model (docs/cost.md) runs on its inputs and prints a total for the default mix
cost_model() {
    python3 scripts/cost.py >"$work/cost" || { cat "$work/cost"; return 1; }
    grep '^total per million events, all in: \$[0-9]' "$work/cost" || { cat "$work/cost"; return 1; }
}
check "cost model: python3 scripts/cost.py (default mix) prints its total" cost_model
sed -n 's/^total per million events, all in: /        default mix, per million events: /p' "$work/cost" 2>/dev/null

echo "infra checks: $((SECONDS - started)) s"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi

#!/usr/bin/env bash
# Builds the core node's OCI image with buildah (no Docker daemon) FROM scratch: assembles a minimal root filesystem
# around the given binaries (exactly the shared libraries `ldd` lists for them, CA certificates, /etc/passwd with
# the non-root user tracker (10001), /tmp, the /data volume) and builds infra/container/Containerfile on it.
#
#   infra/container/build-image.sh [--tag NAME] [--no-strip] CORE_BINARY [CONSUMER_BINARY]
#
# Real images: a release build (`cargo build --release -p tracker-core -p tracker-consumer`), then
#   infra/container/build-image.sh --tag registry.example.com/tracker-core:<version> \
#       target/release/tracker-core target/release/tracker-consumer
#   buildah push --storage-driver vfs registry.example.com/tracker-core:<version>
# The binaries are stripped copies unless --no-strip (the originals are left alone). The image is Docker format so
# that its HEALTHCHECK is kept (the OCI image format has no health check); every registry and runtime takes it.
# BUILDAH_ROOT and BUILDAH_RUNROOT, when set, keep the image store elsewhere than buildah's default (the infra
# checks use a store of their own).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tag="tracker-core:dev"
strip=1
binaries=()
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) tag="$2"; shift 2 ;;
        --no-strip) strip=0; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) binaries+=("$1"); shift ;;
    esac
done
if [ "${#binaries[@]}" -lt 1 ] || [ "${#binaries[@]}" -gt 2 ]; then
    echo "usage: $0 [--tag NAME] [--no-strip] CORE_BINARY [CONSUMER_BINARY]" >&2
    exit 2
fi
names=(tracker-core tracker-consumer)
certs=/etc/ssl/certs/ca-certificates.crt
[ -f "$certs" ] || { echo "$certs is missing on this machine (install ca-certificates)" >&2; exit 1; }

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp" "$ctx/data"
chmod 1777 "$root/tmp"

for i in "${!binaries[@]}"; do
    bin="${binaries[$i]}"
    [ -x "$bin" ] || { echo "$bin is not an executable file" >&2; exit 1; }
    dest="$root/usr/local/bin/${names[$i]}"
    if [ "$strip" = 1 ]; then strip -o "$dest" "$bin"; else cp "$bin" "$dest"; fi
    # exactly what the dynamic loader will load: every resolved library and the loader itself, at the paths ldd
    # names (dereferenced: on Debian /lib64/ld-linux-x86-64.so.2 is a link). A static (musl) binary needs none.
    if ldd "$bin" >/dev/null 2>&1; then
        while read -r lib; do
            mkdir -p "$root$(dirname "$lib")"
            cp -L "$lib" "$root$lib"
        done < <(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
    fi
done

cp -L "$certs" "$root/etc/ssl/certs/ca-certificates.crt"
cat > "$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
tracker:x:10001:10001:tracker:/data:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
EOF
cat > "$root/etc/group" <<'EOF'
root:x:0:
tracker:x:10001:
nogroup:x:65534:
EOF
# glibc (2.34 and later) has the files and dns lookups built in; say which to use in which order
echo "hosts: files dns" > "$root/etc/nsswitch.conf"
cp "$here/Containerfile" "$ctx/Containerfile"

storage=(--storage-driver vfs)
[ -z "${BUILDAH_ROOT:-}" ] || storage+=(--root "$BUILDAH_ROOT")
[ -z "${BUILDAH_RUNROOT:-}" ] || storage+=(--runroot "$BUILDAH_RUNROOT")
buildah "${storage[@]}" bud --quiet --format docker --tag "$tag" --file "$ctx/Containerfile" "$ctx" >/dev/null
size="$(buildah "${storage[@]}" images --format '{{.Size}}' "$tag" | head -n 1)"
echo "built $tag ($size): $(cd "$root" && find . -type f | sort | tr '\n' ' ')"

#!/usr/bin/env bash
# Make sure the container tools the image tests use are installed: podman (and buildah,
# which podman build runs), runc (the OCI runtime the tests ask for) and mmdebstrap (the
# Debian base images, since no image registry may be reachable). Debian/Ubuntu only;
# installs with apt-get what is missing, as root or through sudo. Quiet when all are there.
set -euo pipefail

missing=()
for tool in podman buildah runc mmdebstrap; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-container-tools: ${missing[*]} missing and no apt-get here; install" \
        "podman, buildah, runc and mmdebstrap with this system's package manager" >&2
    exit 1
fi
SUDO=()
if [[ $EUID -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || {
        echo "ensure-container-tools: ${missing[*]} missing; as root run:" \
            "apt-get install -y podman buildah runc mmdebstrap" >&2
        exit 1
    }
    SUDO=(sudo)
fi
echo "ensure-container-tools: installing ${missing[*]} with apt-get" >&2
"${SUDO[@]}" apt-get update -qq >&2
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    podman buildah runc mmdebstrap >&2

#!/usr/bin/env bash
# Make sure the helm binary the chart test runs (tests/e2e/test_helm_chart.py: helm lint,
# helm template) is built, and print its path. Builds Helm 3.22.0 with `go install` once
# into the cache, beside the Kafka jars (about 5 minutes the first time); quick and
# silent apart from the path when it is there already.
#
# Where: $HELM_BIN if set (used as is), else
#   ${THEMIS_HOME:-${XDG_CACHE_HOME:-~/.cache}/themis}/bin/helm-3.22.0
set -euo pipefail

VERSION=3.22.0

if [[ -n "${HELM_BIN:-}" ]]; then
    if [[ -x "$HELM_BIN" ]]; then
        echo "$HELM_BIN"
        exit 0
    fi
    echo "ensure-helm: HELM_BIN=$HELM_BIN is not an executable file" >&2
    exit 1
fi

HOME_DIR="${THEMIS_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/themis}"
TARGET="$HOME_DIR/bin/helm-$VERSION"
if [[ -x "$TARGET" ]]; then
    echo "$TARGET"
    exit 0
fi

fail() {
    echo "ensure-helm: $1" >&2
    echo "ensure-helm: install Go 1.24+ (https://go.dev/dl/) so that 'go' is on PATH, or" \
        "install helm $VERSION yourself and set HELM_BIN" >&2
    exit 1
}

command -v go >/dev/null 2>&1 || fail "'go' is not on PATH; it builds helm once"
mkdir -p "$HOME_DIR/bin"
# Build into a private GOBIN, then move it into place in one rename, so a concurrent
# run never sees half a binary.
STAGING="$(mktemp -d "$HOME_DIR/bin/.helm-build.XXXXXX")"
trap 'rm -rf "$STAGING"' EXIT
echo "ensure-helm: building helm $VERSION with go install (one time, about 5 minutes)" >&2
# Helm prints its version from these variables; `go install` leaves them empty otherwise.
GOBIN="$STAGING" go install \
    -ldflags "-X helm.sh/helm/v3/internal/version.version=v$VERSION" \
    "helm.sh/helm/v3/cmd/helm@v$VERSION" >&2 \
    || fail "'go install helm.sh/helm/v3/cmd/helm@v$VERSION' failed"
mv -f "$STAGING/helm" "$TARGET"
echo "$TARGET"

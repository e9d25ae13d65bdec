#!/usr/bin/env bash
# Make sure the toxiproxy-server the fault tests run (tests/integration/test_faults.py,
# through tests/fixtures/toxiproxy.py) is built, and print its path. Builds Toxiproxy
# 2.5.0 with `go install` once into the cache, beside the Kafka jars; quick and silent
# apart from the path when it is there already.
#
# Where: $TOXIPROXY_BIN if set (used as is), else
#   ${THEMIS_HOME:-${XDG_CACHE_HOME:-~/.cache}/themis}/bin/toxiproxy-server-2.5.0
set -euo pipefail

VERSION=2.5.0

if [[ -n "${TOXIPROXY_BIN:-}" ]]; then
    if [[ -x "$TOXIPROXY_BIN" ]]; then
        echo "$TOXIPROXY_BIN"
        exit 0
    fi
    echo "ensure-toxiproxy: TOXIPROXY_BIN=$TOXIPROXY_BIN is not an executable file" >&2
    exit 1
fi

HOME_DIR="${THEMIS_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/themis}"
TARGET="$HOME_DIR/bin/toxiproxy-server-$VERSION"
if [[ -x "$TARGET" ]]; then
    echo "$TARGET"
    exit 0
fi

fail() {
    echo "ensure-toxiproxy: $1" >&2
    echo "ensure-toxiproxy: install Go 1.17+ (https://go.dev/dl/) so that 'go' is on PATH, or" \
        "build toxiproxy-server $VERSION yourself and set TOXIPROXY_BIN" >&2
    exit 1
}

command -v go >/dev/null 2>&1 || fail "'go' is not on PATH; it builds toxiproxy-server once"
mkdir -p "$HOME_DIR/bin"
# Build into a private GOBIN (the command is called `server`), then move it into place
# in one rename, so a concurrent run never sees half a binary.
STAGING="$(mktemp -d "$HOME_DIR/bin/.toxiproxy-build.XXXXXX")"
trap 'rm -rf "$STAGING"' EXIT
echo "ensure-toxiproxy: building toxiproxy-server $VERSION with go install (one time)" >&2
GOBIN="$STAGING" go install \
    -ldflags "-X github.com/Shopify/toxiproxy/v2.Version=$VERSION" \
    "github.com/Shopify/toxiproxy/v2/cmd/server@v$VERSION" >&2 \
    || fail "'go install github.com/Shopify/toxiproxy/v2/cmd/server@v$VERSION' failed"
mv -f "$STAGING/server" "$TARGET"
echo "$TARGET"

#!/usr/bin/env bash
# Make sure staticcheck (the Go SDK's linter, tests/e2e/test_client_go.py) is built, and
# print its path. Builds honnef.co/go/tools v0.6.1 with `go install` once into the cache,
# beside the Kafka jars; quick and silent apart from the path when it is there already.
#
# Where: $STATICCHECK_BIN if set (used as is), else
#   ${THEMIS_HOME:-${XDG_CACHE_HOME:-~/.cache}/themis}/bin/staticcheck-0.6.1
set -euo pipefail

VERSION=0.6.1

if [[ -n "${STATICCHECK_BIN:-}" ]]; then
    if [[ -x "$STATICCHECK_BIN" ]]; then
        echo "$STATICCHECK_BIN"
        exit 0
    fi
    echo "ensure-staticcheck: STATICCHECK_BIN=$STATICCHECK_BIN is not an executable file" >&2
    exit 1
fi

HOME_DIR="${THEMIS_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/themis}"
TARGET="$HOME_DIR/bin/staticcheck-$VERSION"
if [[ -x "$TARGET" ]]; then
    echo "$TARGET"
    exit 0
fi
command -v go >/dev/null 2>&1 || {
    echo "ensure-staticcheck: 'go' is not on PATH; it builds staticcheck once" >&2
    exit 1
}
mkdir -p "$HOME_DIR/bin"
STAGING="$(mktemp -d "$HOME_DIR/bin/.staticcheck-build.XXXXXX")"
trap 'rm -rf "$STAGING"' EXIT
GOBIN="$STAGING" go install "honnef.co/go/tools/cmd/staticcheck@v$VERSION" >&2
mv "$STAGING/staticcheck" "$TARGET"
echo "$TARGET"

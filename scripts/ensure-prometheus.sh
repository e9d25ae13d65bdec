#!/usr/bin/env bash
# Make sure a `prometheus` binary is on PATH for the scrape test (tests/integration/
# test_prometheus_scrape.py). Installs Debian's `prometheus` package when missing,
# without starting its service; quick and silent when it is already there.
#
# PROMETHEUS_BIN=/path/to/prometheus skips the install (any Prometheus 2.x works).
set -euo pipefail

if [[ -n "${PROMETHEUS_BIN:-}" ]]; then
    if [[ -x "$PROMETHEUS_BIN" ]]; then
        exit 0
    fi
    echo "ensure-prometheus: PROMETHEUS_BIN=$PROMETHEUS_BIN is not an executable file" >&2
    exit 1
fi
if command -v prometheus >/dev/null 2>&1; then
    exit 0
fi

fail() {
    echo "ensure-prometheus: $1" >&2
    echo "ensure-prometheus: install Prometheus 2.x yourself (Debian/Ubuntu:" \
        "'apt-get install prometheus'; else https://prometheus.io/download/) and put" \
        "'prometheus' on PATH or set PROMETHEUS_BIN" >&2
    exit 1
}

command -v apt-get >/dev/null 2>&1 || fail "prometheus is not on PATH and there is no apt-get here"
SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || fail "prometheus is missing and installing it needs root (no sudo)"
    SUDO=(sudo -n)
fi

# A policy-rc.d that answers 101 keeps the package's postinst from starting the service;
# install a temporary one unless the machine already has its own.
POLICY=/usr/sbin/policy-rc.d
if [[ ! -e "$POLICY" ]]; then
    trap '"${SUDO[@]}" rm -f "$POLICY"' EXIT
    printf '#!/bin/sh\n# temporary, from scripts/ensure-prometheus.sh\nexit 101\n' \
        | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
fi

echo "ensure-prometheus: installing Debian's prometheus package (one time, about 20 MB)"
export DEBIAN_FRONTEND=noninteractive
install_package() {
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1
}
if ! apt-cache policy prometheus 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    "${SUDO[@]}" apt-get update -qq || fail "apt-get update failed"
fi
if ! install_package; then
    # Stale package lists name files the mirror no longer has: refresh once and retry.
    "${SUDO[@]}" apt-get update -qq || fail "apt-get update failed"
    install_package || fail "'apt-get install prometheus' failed; run it by hand to see why"
fi
# Under systemd the unit is still enabled for the next boot; the tests start their own.
if [[ -d /run/systemd/system ]]; then
    "${SUDO[@]}" systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
command -v prometheus >/dev/null 2>&1 || fail "the prometheus package is installed but 'prometheus' is not on PATH"
echo "ensure-prometheus: $(prometheus --version 2>&1 | head -n 1)"

#!/usr/bin/env bash
# Build a container image with podman and print its name: the pipeline (default) or the
# Kafka broker the container-engine tests run (tests/e2e/test_container_image.py).
#
#   scripts/build-image.sh [pipeline|kafka]
#
# pipeline: deploy/container/Containerfile, the file a user with Docker builds as
#   `docker build -f deploy/container/Containerfile .` (FROM python:3.11 / -slim). No image
#   registry is needed here: both stages start FROM Debian bookworm bases made with
#   mmdebstrap and `podman import`, and pip installs the wheels of pyproject.toml's
#   dependencies, downloaded on this host once, with --no-index. The C codec is compiled
#   in the build stage, against the image's own Python.
# kafka: deploy/container/kafka/Containerfile, Apache Kafka's jars as the local broker
#   resolves them from Maven (pipeline/kafka/kafka_runtime.py) on a bookworm JRE, started
#   the way the apache/kafka image is (KAFKA_* environment variables).
#
# Everything is cached, so a second run with nothing changed takes a second or two:
#   ${THEMIS_HOME:-${XDG_CACHE_HOME:-~/.cache}/themis}/containers/
#     rootfs-<name>-<hash>.tar   the mmdebstrap bases (the hash is of their package list)
#     wheelhouse-<hash>/          the dependencies' wheels (the hash is of their list)
# and podman's image store holds localhost/themis-pipeline:<hash of the inputs> (also tagged
# :latest); an image whose inputs did not change is not built again.
#
# Needs podman and mmdebstrap (scripts/ensure-container-tools.sh installs them).
set -euo pipefail
shopt -s inherit_errexit # a failing step inside $(...) stops the script too

WHAT="${1:-pipeline}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOME_DIR="${THEMIS_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/themis}"
CACHE="$HOME_DIR/containers"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
SUITE=bookworm
KAFKA_VERSION=4.1.1 # pipeline/kafka/kafka_runtime.py KAFKA_VERSION

# crun fails on some cgroup layouts where runc works, and some hosts refuse podman's
# default ulimits; these settings run everywhere podman does.
PODMAN_RUN_FLAGS=(--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=4096:4096)

log() { echo "build-image: $*" >&2; }
fail() {
    log "$1"
    exit 1
}

for tool in podman mmdebstrap; do
    command -v "$tool" >/dev/null 2>&1 \
        || fail "'$tool' is not on PATH; run scripts/ensure-container-tools.sh (as root) or" \
            "apt-get install podman buildah runc mmdebstrap"
done
mkdir -p "$CACHE"
# One build at a time per cache: two sessions building at once would write the same files.
exec 9>"$CACHE/.build.lock"
flock 9

hash_of() { sha256sum | cut -c1-12; }

# A bookworm base image with these Debian packages, made once: mmdebstrap writes a rootfs
# tarball into the cache, `podman import` makes it an image. Prints the image name.
base_image() {
    local name="$1" packages="$2"
    local tag image tarball
    tag="$(printf '%s %s' "$SUITE" "$packages" | hash_of)"
    image="localhost/themis-base-$name:$tag"
    tarball="$CACHE/rootfs-$name-$tag.tar"
    if ! podman image exists "$image"; then
        if [[ ! -s "$tarball" ]]; then
            log "making the $name base with mmdebstrap ($packages; once, about a minute)"
            # Without man pages (nor docs, locales); the folder stays, since update-alternatives
            # (openjdk's postinst) links man pages into it.
            mmdebstrap --quiet --variant=minbase --format=tar --include="$packages" \
                --dpkgopt='path-exclude=/usr/share/doc/*' \
                --dpkgopt='path-exclude=/usr/share/man/*' \
                --dpkgopt='path-exclude=/usr/share/locale/*' \
                --aptopt='APT::Install-Recommends "false"' \
                --essential-hook='mkdir -p "$1/usr/share/man/man1"' \
                "$SUITE" "$tarball.partial" >&2 || fail "mmdebstrap failed for the $name base"
            mv -f "$tarball.partial" "$tarball"
        fi
        podman import --quiet "$tarball" "$image" >/dev/null
    fi
    echo "$image"
}

# Builds the image once per content: skips the build when podman has $image already.
build() {
    local image="$1" context="$2"
    shift 2
    if podman image exists "$image"; then
        echo "$image"
        return
    fi
    local t0=$SECONDS
    podman build --quiet --layers "${PODMAN_RUN_FLAGS[@]}" --tag "$image" "$@" "$context" >/dev/null \
        || fail "podman build of $image failed (see above)"
    log "built $image in $((SECONDS - t0)) s"
    # Older builds of the same image go (their layers are a few hundred MB each); one that
    # a container still uses stays. The build cache (untagged layers) stays too.
    local repo="${image%:*}" old
    for old in $(podman images --format '{{.Repository}}:{{.Tag}}' "$repo"); do
        [[ $old == "$image" || $old == "$repo:latest" ]] || podman rmi "$old" >/dev/null 2>&1 || true
    done
    echo "$image"
}

build_pipeline() {
    local inputs tag requirements wheelhouse build_base runtime_base image
    cd "$REPO"
    # The inputs that .dockerignore lets into the build, plus the Containerfile.
    inputs="$(
        git ls-files --cached --others --exclude-standard -- \
            pyproject.toml setup.py README.md config pipeline topics deploy/container/Containerfile \
            .dockerignore | sort | xargs sha256sum
    )"
    tag="$(printf '%s' "$inputs" | hash_of)"
    image="localhost/themis-pipeline:$tag"
    if podman image exists "$image"; then
        podman tag "$image" localhost/themis-pipeline:latest
        echo "$image"
        return
    fi
    build_base="$(base_image python-build python3,python3-venv,python3-dev,gcc,libc6-dev)"
    runtime_base="$(base_image python python3,passwd)"

    # The project's dependencies (not the project: the build stage compiles that) and what
    # its build backend needs; the wheels are for CPython 3.11 on glibc, bookworm's Python.
    [[ -x "$PYTHON" ]] || fail "$PYTHON not found; run 'make setup' (or set PYTHON)"
    requirements="$("$PYTHON" -c '
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))
print("\n".join(project["project"]["dependencies"] + project["build-system"]["requires"]))')"
    wheelhouse="$CACHE/wheelhouse-$(printf '%s' "$requirements" | hash_of)"
    if [[ ! -f "$wheelhouse/.complete" ]]; then
        log "downloading the dependencies' wheels into $wheelhouse (once)"
        rm -rf "$wheelhouse" "$wheelhouse.partial"
        printf '%s\n' "$requirements" >"$CACHE/requirements.txt"
        "$PYTHON" -m pip wheel --quiet --wheel-dir "$wheelhouse.partial" \
            -r "$CACHE/requirements.txt" >&2 || fail "pip wheel of the dependencies failed"
        mv "$wheelhouse.partial" "$wheelhouse"
        touch "$wheelhouse/.complete"
    fi

    build "$image" "$REPO" \
        --file deploy/container/Containerfile \
        --build-arg "BUILD_IMAGE=$build_base" \
        --build-arg "BASE_IMAGE=$runtime_base" \
        --build-arg PIP_NO_INDEX=1 \
        --build-arg PIP_FIND_LINKS=/wheelhouse \
        --volume "$wheelhouse:/wheelhouse:ro" >/dev/null
    podman tag "$image" localhost/themis-pipeline:latest
    echo "$image"
}

build_kafka() {
    local libs tag image base context
    [[ -x "$PYTHON" ]] || fail "$PYTHON not found; run 'make setup' (or set PYTHON)"
    # The last line: a first resolution prints what it does before the path.
    libs="$(cd "$REPO" && "$PYTHON" -c "
from pipeline.kafka.kafka_runtime import resolve_kafka_jars
from pipeline.kafka.local_broker import themis_home
print(resolve_kafka_jars(themis_home(), '$KAFKA_VERSION'))" | tail -n 1)"
    tag="$(
        cd "$REPO/deploy/container/kafka" && sha256sum Containerfile run | hash_of
    )"
    image="localhost/themis-kafka:$KAFKA_VERSION-$tag"
    if podman image exists "$image"; then
        echo "$image"
        return
    fi
    base="$(base_image jre openjdk-17-jre-headless,passwd)"
    # The build context: the jars (hard links into the cache, no copy) and the start script.
    context="$(mktemp -d "$CACHE/.kafka-context.XXXXXX")"
    trap 'rm -rf "$context"' RETURN
    cp -al "$libs" "$context/libs" 2>/dev/null || cp -a "$libs" "$context/libs"
    rm -f "$context/libs/.complete"
    cp "$REPO/deploy/container/kafka/run" "$context/run"
    build "$image" "$context" \
        --file "$REPO/deploy/container/kafka/Containerfile" \
        --build-arg "BASE_IMAGE=$base"
}

case "$WHAT" in
    pipeline) build_pipeline ;;
    kafka) build_kafka ;;
    *) fail "unknown image '$WHAT'; give pipeline or kafka" ;;
esac

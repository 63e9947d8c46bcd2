#!/usr/bin/env bash
# make image-test: build docker/Dockerfile for real with podman on this machine, offline, and run
# the image the way Kubernetes will (read-only root filesystem, uid 1001, no capabilities), then
# ask it for a prediction. Offline means: the FROM image is a Debian bookworm made here with
# debootstrap and tagged python:3.11-slim-bookworm, pip installs only from a local wheelhouse
# (the `wheels` named context), and the model is a tiny random checkpoint (the `model` context).
# Everything is cached under .image-test/ (gitignored); a fresh machine builds it all from nothing.
#
# Needs root and: podman runc debootstrap uidmap slirp4netns fuse-overlayfs (Debian packages;
# .ci/run installs them). Environment knobs: IMAGE_TEST_DIR (work dir), DEBIAN_MIRROR,
# READY_TIMEOUT (seconds to wait for /ready, default 180), IMAGE_TEST_KEEP=1 (keep the container).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WORK="${IMAGE_TEST_DIR:-$ROOT/.image-test}"
PY="$ROOT/.venv/bin/python"
BASE_IMAGE="docker.io/library/python:3.11-slim-bookworm"
IMAGE="localhost/uninlu:image-test"
CONTAINER="uninlu-image-test-$$"
READY_TIMEOUT="${READY_TIMEOUT:-180}"
# runc and small default ulimits: the only podman settings that work on these hosts (OFFLINE.md).
export CONTAINERS_CONF="$ROOT/docker/containers.conf"

log() { printf '[image-test %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { printf '[image-test] FAILED: %s\n' "$*" >&2; exit 1; }

started=$SECONDS

# ---- prerequisites ------------------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap and rootful podman need it)"
for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null || die "$tool not found: apt-get install -y podman runc debootstrap uidmap slirp4netns fuse-overlayfs"
done
[ -x "$PY" ] || die "$PY not found: run 'make venv' first"
mkdir -p "$WORK"

# ---- base image: Debian bookworm + python3, tagged as the Dockerfile's FROM image -----------------
debian_mirror() {
    # The mirror apt already uses here (deb822 .sources or classic sources.list), else Debian's.
    local uri
    uri="$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)"
    [ -n "$uri" ] || uri="$(grep -hsE '^deb +(\[[^]]*\] +)?https?://' /etc/apt/sources.list \
        | sed -E 's/^deb +(\[[^]]*\] +)?//' | awk '{print $1}' | grep -v security | head -n1 || true)"
    echo "${DEBIAN_MIRROR:-${uri:-http://deb.debian.org/debian}}"
}

if podman image exists "$BASE_IMAGE"; then
    log "base image $BASE_IMAGE: present, reused"
else
    mirror="$(debian_mirror)"
    log "base image: debootstrap bookworm from $mirror"
    rootfs="$WORK/rootfs"
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" "$mirror" \
        >"$WORK/debootstrap.log" 2>&1 || { tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap"; }
    # Trim what the official slim image does not carry either, so image sizes compare.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
    tar -C "$rootfs" -c . | podman import --quiet - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    log "base image $BASE_IMAGE imported ($(podman image inspect --format '{{.Size}}' "$BASE_IMAGE") bytes)"
fi

# ---- wheelhouse: exactly app/requirements.txt, binary wheels, torch from the local CPU wheel ---------
log "wheelhouse: pip download -r app/requirements.txt"
find_links=()
[ -d /opt/wheels ] && find_links=(--find-links /opt/wheels)
"$PY" -m pip download --quiet --disable-pip-version-check --only-binary=:all: "${find_links[@]}" \
    -r app/requirements.txt -d "$WORK/wheels" >"$WORK/wheels.log" 2>&1 \
    || { tail -n 20 "$WORK/wheels.log" >&2; die "pip download (full log: $WORK/wheels.log)"; }
ls "$WORK"/wheels/torch-*+cpu-*.whl >/dev/null 2>&1 \
    || die "the wheelhouse has no CPU torch wheel (torch-*+cpu-*.whl): refusing a CUDA build"

# ---- the model context: a tiny random checkpoint in the ModelScope layout ------------------------
rm -rf "$WORK/model"
"$PY" -m app.random_checkpoint --size tiny --seed 0 --out "$WORK/model" >/dev/null

# ---- build -------------------------------------------------------------------------------------
# --format docker keeps the HEALTHCHECK (the OCI image format has no field for it).
log "podman build (offline: --network=none, PIP_NO_INDEX=1)"
build_started=$SECONDS
podman build --pull=never --network=none --format docker \
    --build-context wheels="$WORK/wheels" \
    --build-context model="$WORK/model" \
    --build-arg PIP_NO_INDEX=1 \
    -f docker/Dockerfile -t "$IMAGE" . >"$WORK/build.log" 2>&1 \
    || { tail -n 40 "$WORK/build.log" >&2; die "podman build (full log: $WORK/build.log)"; }
grep -E '^convert_model:' "$WORK/build.log" || true
log "built $IMAGE in $((SECONDS - build_started)) s"

# ---- static checks on the image ------------------------------------------------------------------
inspect() { podman image inspect --format "$1" "$IMAGE"; }
[ "$(inspect '{{.Config.User}}')" = "1001:1001" ] || die "image user is '$(inspect '{{.Config.User}}')', expected 1001:1001"
inspect '{{json .Config.ExposedPorts}}' | grep -q '"7860/tcp"' || die "image does not expose 7860"
inspect '{{json .Config.Healthcheck}}' | grep -q '/health' || die "image has no HEALTHCHECK on /health"
# No build tools, no pip, no tests in the runtime image.
podman run --rm --network=none --health-cmd=none --read-only --cap-drop=ALL --user 1001:1001 "$IMAGE" python -c '
import importlib.util, os, shutil, sys
bad = [t for t in ("gcc", "cc", "make", "curl", "pip", "pip3") if shutil.which(t)]
bad += ["pip module"] if importlib.util.find_spec("pip") else []
bad += [p for p in ("/srv/tests", "/root/.cache/pip") if os.path.exists(p)]
weights = sorted(os.listdir(os.environ["MODEL_PATH"]))
bad += [] if "model.safetensors" in weights and "pytorch_model.bin" not in weights else [f"weights {weights}"]
sys.exit(f"unexpected in the runtime image: {bad}" if bad else 0)
' || die "runtime image content"

# ---- run it as Kubernetes will -------------------------------------------------------------------
cleanup() {
    if [ "${IMAGE_TEST_KEEP:-0}" != 1 ]; then podman rm --force --ignore "$CONTAINER" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

port="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# --health-interval=disable: no systemd timer (there is no systemd here); the check is run below.
run_flags=(--detach --name "$CONTAINER" --read-only --tmpfs /tmp:rw,nosuid,nodev,size=256m
    --cap-drop ALL --user 1001:1001 --security-opt no-new-privileges --health-interval=disable)
if ! podman run "${run_flags[@]}" -p "127.0.0.1:$port:7860" "$IMAGE" >"$WORK/run.log" 2>&1; then
    # Some hosts lack the CNI plugins for port publishing: share the host's network instead.
    log "port publishing failed ($(tail -n 1 "$WORK/run.log")); using --network host"
    podman rm --force --ignore "$CONTAINER" >/dev/null 2>&1 || true
    podman run "${run_flags[@]}" --network host -e PORT="$port" "$IMAGE" >/dev/null
fi
log "container $CONTAINER started: read-only, uid 1001, no capabilities, http://127.0.0.1:$port"

PORT="$port" CONTAINER="$CONTAINER" READY_TIMEOUT="$READY_TIMEOUT" "$PY" - <<'EOF' || { podman logs --tail 40 "$CONTAINER" >&2 || true; die "the running image"; }
"""Wait for /ready (bounded), then check /health and one real prediction."""
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

base = f"http://127.0.0.1:{os.environ['PORT']}"
deadline = time.monotonic() + float(os.environ["READY_TIMEOUT"])


def call(path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


start = time.monotonic()
while True:
    try:
        status, _ = call("/ready")
        if status == 200:
            break
    except OSError:
        pass
    state = subprocess.run(
        ["podman", "inspect", "--format", "{{.State.Status}}", os.environ["CONTAINER"]],
        capture_output=True, text=True, check=False,
    ).stdout.strip()
    if state != "running":
        sys.exit(f"container is {state or 'gone'} before /ready")
    if time.monotonic() > deadline:
        sys.exit(f"/ready not 200 after {os.environ['READY_TIMEOUT']} s")
    time.sleep(1)
print(f"[image-test] /ready after {time.monotonic() - start:.1f} s")

status, body = call("/health")
assert status == 200 and body == {"status": "ok"}, f"/health: {status} {body}"

text = "小林上周在杭州参加了一场关于人工智能的会议。"
status, body = call("/predict", {"text": text, "schema": {"人物": None, "地点": None}})
assert status == 200, f"/predict: HTTP {status}: {body}"
output = body.get("output")
assert isinstance(output, list), f"/predict: no 'output' list in {body}"
for chain in output:
    for item in chain:
        start_, end = item["offset"]
        assert item["type"] in ("人物", "地点") and text[start_:end] == item["span"], item
print(f"[image-test] /predict: 200, {len(output)} output item(s)")

status, body = call("/predict", {"text": text, "schema": "{not json"})
assert status == 422, f"/predict with a broken schema: expected 422, got {status}: {body}"
EOF

# The image's own HEALTHCHECK command, run inside the container.
podman healthcheck run "$CONTAINER" >/dev/null || die "the image's HEALTHCHECK failed"
log "HEALTHCHECK passed"

# ---- sizes ---------------------------------------------------------------------------------------
size=$(inspect '{{.Size}}')
tiny=$(du -sb "$WORK/model/pytorch_model.bin" | cut -f1)
full=$("$PY" - <<'EOF'
"""fp32 safetensors bytes of the full-size model (the published checkpoint's architecture)."""
import torch
from transformers import BertConfig

from app.model import SiameseUniNLU
from app.random_checkpoint import model_config

config = {k: v for k, v in model_config("base").items() if k != "model_type"}
with torch.device("meta"):
    model = SiameseUniNLU(BertConfig(**config))
print(sum(t.numel() * t.element_size() for t in model.state_dict().values()))
EOF
)
mb() { awk -v b="$1" 'BEGIN { printf "%.0f MB", b / 1e6 }'; }
log "image size: $size bytes ($(mb "$size")) with the tiny checkpoint ($(mb "$tiny"))"
log "projected with the full checkpoint ($(mb "$full")): $(mb $((size - tiny + full))) (seed target: 850 MB)"
log "PASSED in $((SECONDS - started)) s"

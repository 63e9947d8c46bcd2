#!/usr/bin/env bash
# make image-test: build docker/Dockerfile for real with podman on this machine, offline, and run
# the image the way Kubernetes will (read-only root filesystem, uid 1001, no capabilities), then
# ask it for a prediction. Offline means: the FROM image is a Debian bookworm made here with
# debootstrap and tagged python:3.11-slim-bookworm, pip installs only from a local wheelhouse
# (the `wheels` named context), and the model is a tiny random checkpoint (the `model` context).
# Both targets are built and run: `runtime` (torch, the default) and `runtime-onnx`.
# Everything is cached under .image-test/ (gitignored); a fresh machine builds it all from nothing.
#
# Needs root and: podman runc debootstrap uidmap slirp4netns fuse-overlayfs (Debian packages;
# .ci/run installs them). Environment knobs: IMAGE_TEST_DIR (work dir), DEBIAN_MIRROR,
# READY_TIMEOUT (seconds to wait for /ready, default 180), IMAGE_TEST_KEEP=1 (keep the
# container), IMAGE_TEST_TARGETS (default: "runtime runtime-onnx"), IMAGE_TEST_ONNX_BACKEND
# (onnx | onnx-int8: the runtime-onnx image's backend, default onnx), IMAGE_TEST_MODEL (a
# checkpoint directory to bake instead of the tiny one, e.g. .models/base: the real image size),
# IMAGE_TEST_EXAMPLES (an examples.json of your own traffic: the `calibration` context, whose texts
# join the project's examples, app/model/examples.json, in the int8 calibration set).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WORK="${IMAGE_TEST_DIR:-$ROOT/.image-test}"
PY="$ROOT/.venv/bin/python"
BASE_IMAGE="docker.io/library/python:3.11-slim-bookworm"
IMAGE="localhost/uninlu"
TARGETS="${IMAGE_TEST_TARGETS:-runtime runtime-onnx}"
CONTAINER="uninlu-image-test-$$"
READY_TIMEOUT="${READY_TIMEOUT:-180}"
ONNX_BACKEND="${IMAGE_TEST_ONNX_BACKEND:-onnx}"
MODEL_SRC="${IMAGE_TEST_MODEL:-}"
EXAMPLES="${IMAGE_TEST_EXAMPLES:-}"
case "$ONNX_BACKEND" in onnx | onnx-int8) ;; *) echo "IMAGE_TEST_ONNX_BACKEND: onnx or onnx-int8" >&2; exit 2 ;; esac
# runc and small default ulimits: the only podman settings that work on these hosts (OFFLINE.md).
export CONTAINERS_CONF="$ROOT/docker/containers.conf"

log() { printf '[image-test %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { printf '[image-test] FAILED: %s\n' "$*" >&2; exit 1; }
mb() { awk -v b="$1" 'BEGIN { printf "%.0f MB", b / 1e6 }'; }

started=$SECONDS

# ---- prerequisites ------------------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap and rootful podman need it)"
for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null \
        || die "$tool not found: apt-get install -y podman runc debootstrap uidmap slirp4netns fuse-overlayfs"
done
[ -x "$PY" ] || die "$PY not found: run 'make venv' first"
mkdir -p "$WORK"

# ---- base image: Debian bookworm + python3, tagged as the Dockerfile's FROM image ---------------
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

# ---- wheelhouse: exactly the pinned files, binary wheels, torch from the local CPU wheel --------
log "wheelhouse: pip download (app/requirements.txt, docker/requirements-{onnx,export}.txt)"
find_links=()
[ -d /opt/wheels ] && find_links=(--find-links /opt/wheels)
"$PY" -m pip download --quiet --disable-pip-version-check --only-binary=:all: "${find_links[@]}" \
    -r app/requirements.txt -r docker/requirements-onnx.txt -r docker/requirements-export.txt \
    -d "$WORK/wheels" >"$WORK/wheels.log" 2>&1 \
    || { tail -n 20 "$WORK/wheels.log" >&2; die "pip download (full log: $WORK/wheels.log)"; }
ls "$WORK"/wheels/torch-*+cpu-*.whl >/dev/null 2>&1 \
    || die "the wheelhouse has no CPU torch wheel (torch-*+cpu-*.whl): refusing a CUDA build"

# ---- the model context: a tiny random checkpoint in the ModelScope layout, or IMAGE_TEST_MODEL ---
rm -rf "$WORK/model" "$WORK/calibration" "$WORK/host-onnx"
if [ -n "$MODEL_SRC" ]; then
    # Hard links of the checkpoint's own files (not its onnx/ folder): no 400 MB copy.
    mkdir -p "$WORK/model"
    find "$MODEL_SRC" -maxdepth 1 -type f -exec cp -l {} "$WORK/model/" \; 2>/dev/null \
        || find "$MODEL_SRC" -maxdepth 1 -type f -exec cp {} "$WORK/model/" \;
    log "model context: $MODEL_SRC ($(du -sh "$WORK/model" | cut -f1))"
else
    "$PY" -m app.tools.random_checkpoint --size tiny --seed 4 --out "$WORK/model" >/dev/null
fi
mkdir -p "$WORK/calibration"
if [ -n "$EXAMPLES" ]; then
    [ -f "$EXAMPLES" ] || die "IMAGE_TEST_EXAMPLES: no file $EXAMPLES"
    cp "$EXAMPLES" "$WORK/calibration/examples.json"
fi
# What the containers must answer: the host's own pipeline on the same checkpoint (for onnx-int8,
# on int8 graphs the host exports with the same recipe and calibration set: static int8 is
# deterministic, so the image's graphs answer the same).
export TEXT="小林上周在杭州参加了一场关于人工智能的会议，会后去了上海。"
export SCHEMA='{"人物": null, "地点": null, "组织机构": null}'
host_predict() {  # BACKEND [ONNX_DIR]
    "$PY" -m app predict --model-path "$WORK/model" --backend "$1" ${2:+--onnx-dir "$2"} \
        --text "$TEXT" --schema "$SCHEMA"
}
EXPECTED_TORCH="$(host_predict torch)"
log "the host's pipeline answers (torch fp32): $EXPECTED_TORCH"
if [ "$ONNX_BACKEND" = onnx-int8 ]; then
    calibration=()
    [ -f "$WORK/calibration/examples.json" ] && calibration=(--examples "$WORK/calibration/examples.json")
    "$PY" -m app.tools.export_onnx --model-path "$WORK/model" --out "$WORK/host-onnx" --int8 \
        "${calibration[@]}" >/dev/null
    EXPECTED_ONNX="$(host_predict onnx-int8 "$WORK/host-onnx")"
    log "the host's pipeline answers (onnx-int8): $EXPECTED_ONNX"
else
    EXPECTED_ONNX="$EXPECTED_TORCH"  # fused fp32 graphs give torch fp32's spans
fi
# fp32 weight bytes of the full-size model (the published checkpoint's architecture), for the
# projected size of a tiny-checkpoint image: its size - tiny weights + full weights.
full=0
if [ -z "$MODEL_SRC" ]; then
    full="$("$PY" -c '
import torch
from transformers import BertConfig
from app.model.network import SiameseUniNLU
from app.tools.random_checkpoint import model_config
config = {k: v for k, v in model_config("base").items() if k != "model_type"}
with torch.device("meta"):
    model = SiameseUniNLU(BertConfig(**config))
print(sum(t.numel() * t.element_size() for t in model.state_dict().values()))
')"
fi

cleanup() {
    if [ "${IMAGE_TEST_KEEP:-0}" != 1 ]; then
        podman rm --force --ignore "$CONTAINER" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

build() {  # TARGET TAG
    # --format docker keeps the HEALTHCHECK (the OCI image format has no field for it).
    log "podman build --target $1 (offline: --network=none, PIP_NO_INDEX=1)"
    local t0=$SECONDS
    podman build --pull=never --network=none --format docker --target "$1" \
        --build-context wheels="$WORK/wheels" \
        --build-context model="$WORK/model" \
        --build-context calibration="$WORK/calibration" \
        --build-arg PIP_NO_INDEX=1 --build-arg ONNX_BACKEND="$ONNX_BACKEND" \
        -f docker/Dockerfile -t "$2" . >"$WORK/build-$1.log" 2>&1 \
        || { tail -n 40 "$WORK/build-$1.log" >&2; die "podman build --target $1 (log: $WORK/build-$1.log)"; }
    grep -E '^(convert_model|compile_bytecode):' "$WORK/build-$1.log" || true
    log "built $2 in $((SECONDS - t0)) s"
}

check_image() {  # IMAGE: its config, and no build tools, pip, tests or pickled weights inside
    local user
    user="$(podman image inspect --format '{{.Config.User}}' "$1")"
    [ "$user" = "1001:1001" ] || die "$1: user is '$user', expected 1001:1001"
    podman image inspect --format '{{json .Config.ExposedPorts}}' "$1" | grep -q '"7860/tcp"' \
        || die "$1 does not expose 7860"
    podman image inspect --format '{{json .Config.Healthcheck}}' "$1" | grep -q '/health' \
        || die "$1 has no HEALTHCHECK on /health"
    podman run --rm --network=none --no-healthcheck --read-only --cap-drop=ALL \
        --user 1001:1001 "$1" python -c '
import importlib.util, os, shutil, sys
bad = [t for t in ("gcc", "cc", "make", "curl", "pip", "pip3") if shutil.which(t)]
bad += ["pip module"] if importlib.util.find_spec("pip") else []
bad += [p for p in ("/srv/tests", "/root/.cache/pip") if os.path.exists(p)]
model = os.environ["MODEL_PATH"]
bad += ["pytorch_model.bin"] if os.path.exists(os.path.join(model, "pytorch_model.bin")) else []
if os.environ.get("BACKEND", "torch").startswith("onnx"):
    bad += ["torch"] if importlib.util.find_spec("torch") else []
    onnx = os.path.join(model, "onnx")
    weights = os.path.join(onnx, sorted(os.listdir(onnx))[0]) if os.path.isdir(onnx) else onnx
else:
    weights = os.path.join(model, "model.safetensors")
bad += [] if os.path.isfile(weights) else [f"no {weights}"]
sys.exit(f"unexpected in the runtime image: {bad}" if bad else 0)
' || die "$1: runtime image content"
}

run_and_probe() {  # IMAGE EXPECTED: run it as Kubernetes will, wait for /ready, predict, healthcheck
    local port
    port="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    # --health-interval=disable: no systemd timer (there is no systemd here); it is run below.
    local flags=(--detach --name "$CONTAINER" --read-only --tmpfs /tmp:rw,nosuid,nodev,size=256m
        --cap-drop ALL --user 1001:1001 --security-opt no-new-privileges --health-interval=disable)
    if ! podman run "${flags[@]}" -p "127.0.0.1:$port:7860" "$1" >"$WORK/run.log" 2>&1; then
        # Some hosts lack the CNI plugins for port publishing: share the host's network instead.
        log "port publishing failed ($(tail -n 1 "$WORK/run.log")); using --network host"
        podman rm --force --ignore "$CONTAINER" >/dev/null 2>&1 || true
        podman run "${flags[@]}" --network host -e PORT="$port" "$1" >/dev/null
    fi
    log "$1 started: read-only root, uid 1001, no capabilities, http://127.0.0.1:$port"
    PORT="$port" CONTAINER="$CONTAINER" READY_TIMEOUT="$READY_TIMEOUT" EXPECTED="$2" \
        "$PY" docker/image_probe.py \
        || { podman logs --tail 40 "$CONTAINER" >&2 || true; die "$1: the running image"; }
    # The image's own HEALTHCHECK command, run inside the container.
    podman healthcheck run "$CONTAINER" >/dev/null || die "$1: the image's HEALTHCHECK failed"
    log "HEALTHCHECK passed"
    podman rm --force --ignore "$CONTAINER" >/dev/null 2>&1
}

report_size() {  # IMAGE
    local size weights
    size="$(podman image inspect --format '{{.Size}}' "$1")"
    weights="$(podman run --rm --network=none --no-healthcheck "$1" bash -c \
        'du -sbc "$MODEL_PATH"/model.safetensors "$MODEL_PATH"/onnx 2>/dev/null | tail -n 1 | cut -f1')"
    if [ -n "$MODEL_SRC" ]; then
        log "SIZE $1: $(mb "$size") ($size bytes) with $MODEL_SRC ($(mb "$weights") of weights)"
    else
        log "SIZE $1: $(mb "$size") ($size bytes) with the tiny checkpoint ($(mb "$weights") of weights);" \
            "projected with the full checkpoint ($(mb "$full") fp32): $(mb $((size - weights + full)))" \
            "(seed target: 850 MB)"
    fi
}

unopened_report() {  # IMAGE: what the image carries that serving never opens (runtime-onnx)
    # docker/opened_files.py inside the image: the files a serving process opens (modules, mapped
    # libraries, open files) after every kind of request; against the image's own file list of
    # the venv (the model folder holds only what the server loads: graphs, config, vocabulary).
    podman run --rm --network=none --no-healthcheck --read-only --tmpfs /tmp:rw,size=64m \
        --cap-drop=ALL --user 1001:1001 -e PORT=7861 -e PYTHONPATH=/srv \
        -v "$ROOT/docker/opened_files.py:/tmp/opened_files.py:ro" "$1" bash -c '
python /tmp/opened_files.py --with-reads > /tmp/opened.txt 2> /tmp/opened.err \
    || { tail -n 5 /tmp/opened.err; exit 1; }
find /opt/venv -type f -printf "%s %p\n" > /tmp/all.txt
python - <<"PY"
opened = set(open("/tmp/opened.txt").read().split())
total = unused = 0
largest = []
for line in open("/tmp/all.txt"):
    size, path = line.rstrip("\n").split(" ", 1)
    size = int(size)
    total += size
    if path not in opened:
        unused += size
        largest.append((size, path))
largest.sort(reverse=True)
print(f"{len(opened)} files opened; the venv {total / 1e6:.0f} MB, never opened "
      f"{unused / 1e6:.1f} MB in {len(largest)} files; largest: "
      + ", ".join(f"{p} ({s / 1e6:.1f} MB)" for s, p in largest[:3]))
PY'
}

for target in $TARGETS; do
    tag="$IMAGE:image-test${target#runtime}"
    build "$target" "$tag"
    check_image "$tag"
    if [ "$target" = runtime ]; then expected="$EXPECTED_TORCH"; else expected="$EXPECTED_ONNX"; fi
    run_and_probe "$tag" "$expected"
    report_size "$tag"
    if [ "$target" = runtime-onnx ]; then
        unopened="$(unopened_report "$tag")" || die "$tag: docker/opened_files.py in the image: $unopened"
        log "UNOPENED $tag: $unopened"
    fi
done
log "PASSED in $((SECONDS - started)) s"

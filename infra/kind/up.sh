#!/usr/bin/env bash
# `make kind-up`: the dev stack's laptop cluster, idempotently. Each step checks first and only
# then changes something, so a second run changes nothing:
#   1. the registry container, reachable from the host as localhost:5001;
#   2. the kind cluster (infra/kind/cluster.yaml: containerd reads /etc/containerd/certs.d);
#   3. in each node, localhost:5001 resolved to the registry container;
#   4. the registry on the kind network (so the nodes reach it by name);
#   5. the local-registry-hosting ConfigMap (KEP-1755: tells tools where the registry is);
#   6. a docker-container buildx builder on the host network, the one the dev stack names
#      (image.builder): pulumi-docker-build cannot use the legacy docker driver, and a builder on
#      the bridge network would push to its own localhost:5001 (docker/buildx#94).
set -euo pipefail

CLUSTER="${KIND_CLUSTER:-uninlu}"
REGISTRY="${KIND_REGISTRY:-kind-registry}"
REGISTRY_PORT="${KIND_REGISTRY_PORT:-5001}"
BUILDER="${KIND_BUILDER:-uninlu-kind}"
CONTEXT="kind-${CLUSTER}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

say() { printf 'kind-up: %s\n' "$*"; }

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "kind-up: $tool not found: install it (docs/stack-config.md)" >&2; exit 1; }
done

running="$(docker container inspect -f '{{.State.Running}}' "$REGISTRY" 2>/dev/null || echo missing)"
if [ "$running" = missing ]; then
  say "starting the registry $REGISTRY on 127.0.0.1:$REGISTRY_PORT"
  docker run -d --restart=always -p "127.0.0.1:${REGISTRY_PORT}:5000" --network bridge --name "$REGISTRY" registry:2
elif [ "$running" != true ]; then
  say "restarting the registry $REGISTRY"
  docker start "$REGISTRY"
fi

if ! kind get clusters | grep -qx "$CLUSTER"; then
  say "creating the kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --config "$HERE/cluster.yaml" --wait 120s
fi

hosts_dir="/etc/containerd/certs.d/localhost:${REGISTRY_PORT}"
hosts_toml="[host.\"http://${REGISTRY}:5000\"]"
for node in $(kind get nodes --name "$CLUSTER"); do
  if [ "$(docker exec "$node" cat "$hosts_dir/hosts.toml" 2>/dev/null || true)" != "$hosts_toml" ]; then
    say "pointing localhost:$REGISTRY_PORT at $REGISTRY in $node"
    docker exec "$node" mkdir -p "$hosts_dir"
    printf '%s\n' "$hosts_toml" | docker exec -i "$node" cp /dev/stdin "$hosts_dir/hosts.toml"
  fi
done

if [ "$(docker container inspect -f '{{json .NetworkSettings.Networks.kind}}' "$REGISTRY")" = null ]; then
  say "connecting $REGISTRY to the kind network"
  docker network connect kind "$REGISTRY"
fi

if ! kubectl --context "$CONTEXT" -n kube-public get configmap local-registry-hosting >/dev/null 2>&1; then
  say "publishing the registry in kube-public/local-registry-hosting"
  kubectl --context "$CONTEXT" apply -f - <<YAML
apiVersion: v1
kind: ConfigMap
metadata:
  name: local-registry-hosting
  namespace: kube-public
data:
  localRegistryHosting.v1: |
    host: "localhost:${REGISTRY_PORT}"
    help: "https://kind.sigs.k8s.io/docs/user/local-registry/"
YAML
fi

if ! docker buildx inspect "$BUILDER" >/dev/null 2>&1; then
  say "creating the buildx builder $BUILDER (docker-container, host network)"
  docker buildx create --name "$BUILDER" --driver docker-container --driver-opt network=host
fi

say "ready: kube context $CONTEXT, registry localhost:$REGISTRY_PORT, builder $BUILDER"

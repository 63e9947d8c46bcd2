#!/usr/bin/env bash
# `make kind-down`: remove what `make kind-up` made (cluster, registry, builder), idempotently.
# The dev stack's Pulumi state (.pulumi-state/) stays: `pulumi stack rm dev` if it should go too.
set -euo pipefail

CLUSTER="${KIND_CLUSTER:-uninlu}"
REGISTRY="${KIND_REGISTRY:-kind-registry}"
BUILDER="${KIND_BUILDER:-uninlu-kind}"

if kind get clusters | grep -qx "$CLUSTER"; then
  kind delete cluster --name "$CLUSTER"
fi
if docker container inspect "$REGISTRY" >/dev/null 2>&1; then
  docker rm -f "$REGISTRY"
fi
if docker buildx inspect "$BUILDER" >/dev/null 2>&1; then
  docker buildx rm "$BUILDER"
fi
echo "kind-down: removed cluster $CLUSTER, registry $REGISTRY and builder $BUILDER (where present)"

"""Promotion without a rebuild: `image.build: false` releases the digest that `image.tag` points at
in the registry (pulumi-docker getRegistryImage), instead of building its own image."""

from __future__ import annotations

import json

import pytest
import yaml
from pulumi_harness import (
    GET_REGISTRY_IMAGE,
    IMAGE_TYPE,
    RELEASE_TYPE,
    REPO,
    TEST_PASSWORD,
    is_secret,
    plain_occurrences,
    prod_secrets,
    run_program,
)

from infra.image import PromotionError
from infra.program import deploy

TESTED = "sha256:" + "7e" * 32  # what dev built, pushed and smoke-tested
PROMOTED_TAG = "ghcr.io/example-org/uninlu:dev-4f2c1e9"


def promote(tag: str = "dev-4f2c1e9", registry: dict[str, str] | None = None):
    config = yaml.safe_load((REPO / "Pulumi.prod.yaml").read_text())["config"]
    image = {**config["uninlu:image"], "build": False, "tag": tag}
    return run_program(
        deploy,
        "prod",
        secrets=prod_secrets(),
        overrides={"image": image},
        registry={PROMOTED_TAG: TESTED} if registry is None else registry,
    )


def test_promotion_releases_the_registry_digest_of_the_tag_and_builds_nothing():
    res = promote()
    assert res.run.of_type(IMAGE_TYPE) == []
    release = res.run.one(RELEASE_TYPE, "uninlu").plain_inputs
    assert release["values"]["image"] == {
        "repository": "ghcr.io/example-org/uninlu",
        "digest": TESTED,
    }
    assert res.outputs["imageRef"] == f"ghcr.io/example-org/uninlu@{TESTED}"
    provider = res.run.one("pulumi:providers:docker")
    # The registry is read with the stack's credentials, which stay a secret.
    assert json.loads(provider.plain_inputs["registryAuth"]) == [
        {"address": "ghcr.io", "username": "uninlu-ci", "password": TEST_PASSWORD}
    ]
    assert is_secret(provider.inputs["registryAuth"])
    assert [r.name for r in res.run.resources if plain_occurrences(r.inputs, TEST_PASSWORD)] == []


def test_promotion_asks_the_registry_for_exactly_that_tag():
    res = promote()
    recorder = res.run.monitor.mocks
    assert [args["name"] for token, args in recorder.invokes if token == GET_REGISTRY_IMAGE] == [
        PROMOTED_TAG
    ]


def test_a_tag_that_does_not_resolve_is_a_clear_error_naming_it():
    with pytest.raises(PromotionError) as error:
        promote(tag="dev-never-pushed")
    message = str(error.value)
    assert "ghcr.io/example-org/uninlu:dev-never-pushed must already be in the registry" in message
    assert "404 manifest unknown" in message  # the registry's own answer, kept
    assert "image.build: true" in message


def test_a_registry_answer_without_a_digest_is_refused():
    with pytest.raises(PromotionError, match="no sha256 digest for"):
        promote(registry={PROMOTED_TAG: ""})


def test_building_stacks_never_ask_the_registry():
    res = run_program(deploy, "prod", secrets=prod_secrets())
    assert res.run.of_type(IMAGE_TYPE) and res.run.of_type("pulumi:providers:docker") == []
    assert GET_REGISTRY_IMAGE not in [token for token, _ in res.run.monitor.mocks.invokes]

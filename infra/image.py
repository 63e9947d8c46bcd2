"""The inference image: build docker/Dockerfile with BuildKit and push it, or promote a tag another
stack pushed; either way output a digest reference.

The Deployment uses `<registry>/<repository>@sha256:...`, never a moving tag, so every new build
changes the pod template and rolls the pods, and a node can never run a stale image.
Paths are relative to the project root (where Pulumi runs the program): absolute paths would
differ between a laptop and CI and show up as a spurious diff in every preview.
"""

from __future__ import annotations

import re
from typing import Any

import pulumi
import pulumi_docker as docker
import pulumi_docker_build as docker_build

from infra.config import ImageSettings, ModelSource

CONTEXT = "."
DOCKERFILE = "docker/Dockerfile"
# The Dockerfile copies the checkpoint from a build stage of this name; a named context of the
# same name replaces that stage with a local directory.
MODEL_CONTEXT = "model"
CACHE_TAG = "buildcache"
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# Dockerfile targets per image.runtime: the ONNX image ships no torch.
TARGETS = {"onnx": "runtime-onnx", "onnx-int8": "runtime-onnx", "torch": "runtime"}


def build_args(image: ImageSettings, model: ModelSource) -> dict[str, str]:
    """The Dockerfile's ARGs: which checkpoint to download, which torch wheel index to use (the
    ONNX export stage needs torch too) and which ONNX graphs the lean runtime serves.

    A local checkpoint needs no ModelScope args: the `model` named context replaces the stage
    that downloads it.
    """
    args = {"TORCH_INDEX_URL": image.torch_index_url}
    if image.runtime != "torch":
        args["ONNX_BACKEND"] = image.runtime
    if model.source == "modelscope":
        args |= {"MODELSCOPE_MODEL_ID": model.id, "MODELSCOPE_REVISION": model.revision}
    return args


def build_context(model: ModelSource) -> docker_build.BuildContextArgs:
    named = None
    if model.source == "local":
        assert model.path is not None  # checked by the config
        named = {MODEL_CONTEXT: docker_build.ContextArgs(location=model.path)}
    return docker_build.BuildContextArgs(location=CONTEXT, named=named)


def registry_cache(
    image: ImageSettings,
) -> tuple[list[docker_build.CacheFromArgs], list[docker_build.CacheToArgs]]:
    """Layer cache kept in the registry next to the image (mode=max also caches build stages)."""
    if not image.cache:
        return [], []
    ref = f"{image.name}:{CACHE_TAG}"
    return (
        [docker_build.CacheFromArgs(registry=docker_build.CacheFromRegistryArgs(ref=ref))],
        [
            docker_build.CacheToArgs(
                registry=docker_build.CacheToRegistryArgs(
                    ref=ref,
                    mode=docker_build.CacheMode.MAX,
                    image_manifest=True,
                    oci_media_types=True,
                )
            )
        ],
    )


def registry_login(
    image: ImageSettings, registry_password: pulumi.Output[str] | None, args_type: Any
) -> list[Any] | None:
    """The registry login either provider takes (address, user, password kept a secret), or
    None for a registry without one."""
    if not image.username or registry_password is None:
        return None
    password = pulumi.Output.secret(registry_password)
    return [args_type(address=image.registry, username=image.username, password=password)]


class InferenceImage(pulumi.ComponentResource):
    """The model server image as `repository@digest`: built and pushed by this stack, or (with
    image.build false) a tag that another stack built and tested, promoted without a rebuild."""

    repository: str
    digest: pulumi.Output[str]
    ref: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        image: ImageSettings,
        model: ModelSource,
        registry_password: pulumi.Output[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("uninlu:infra:InferenceImage", name, None, opts)
        self.repository = image.name
        if image.build:
            self.digest = self._build(name, image, model, registry_password)
        else:
            self.digest = self._promote(name, image, registry_password)
        self.ref = self.digest.apply(lambda digest: f"{image.name}@{digest}")
        self.register_outputs({"ref": self.ref, "digest": self.digest})

    def _build(
        self,
        name: str,
        image: ImageSettings,
        model: ModelSource,
        registry_password: pulumi.Output[str] | None,
    ) -> pulumi.Output[str]:
        cache_from, cache_to = registry_cache(image)
        built = docker_build.Image(
            name,
            context=build_context(model),
            dockerfile=docker_build.DockerfileArgs(location=DOCKERFILE),
            build_args=build_args(image, model),
            target=TARGETS[image.runtime],
            tags=[f"{image.name}:{image.tag}"],
            push=True,
            platforms=[docker_build.Platform(platform) for platform in image.platforms],
            registries=registry_login(image, registry_password, docker_build.RegistryArgs),
            cache_from=cache_from or None,
            cache_to=cache_to or None,
            build_on_preview=image.build_on_preview,
            builder=docker_build.BuilderConfigArgs(name=image.builder) if image.builder else None,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return built.digest.apply(
            lambda digest: pushed_digest(image.name, digest, pulumi.runtime.is_dry_run())
        )

    def _promote(
        self, name: str, image: ImageSettings, registry_password: pulumi.Output[str] | None
    ) -> pulumi.Output[str]:
        """Resolve `registry/repository:tag` to the digest the registry holds now, at every
        preview and up (pulumi-docker's getRegistryImage reads the manifest; it never pulls)."""
        # Only the registry is read: no Docker daemon is needed where the program runs.
        registry = docker.Provider(
            f"{name}-registry",
            registry_auth=registry_login(image, registry_password, docker.ProviderRegistryAuthArgs),
            disable_docker_daemon_check=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        tagged = f"{image.name}:{image.tag}"
        found = docker.get_registry_image_output(
            name=tagged, opts=pulumi.InvokeOutputOptions(provider=registry, parent=self)
        )

        async def resolved(_: Any) -> str:
            try:
                result = await found.future()
            except Exception as err:
                raise PromotionError(
                    f"image.build is false, so {tagged} must already be in the registry, but it "
                    f"does not resolve ({err}). Push it from the stack that builds it (or set "
                    "image.tag to a tag that exists), or set image.build: true"
                ) from err
            return promoted_digest(tagged, result.sha256_digest if result else None)

        return pulumi.Output.from_input(tagged).apply(resolved)


class PromotionError(pulumi.RunError):
    """The tag to promote is not in the registry (RunError: the CLI prints it without a trace)."""


def promoted_digest(tagged: str, digest: str | None) -> str:
    if digest and DIGEST.fullmatch(digest):
        return digest
    raise PromotionError(f"the registry returned no sha256 digest for {tagged}: {digest!r}")


def pushed_digest(repository: str, digest: str | None, dry_run: bool) -> Any:
    """The build's digest, checked; unknown while a preview skips the build.

    With build_on_preview off, pulumi-docker-build answers a preview of an *update* with an empty
    digest, a known "" (provider/internal/image.go: Update calls Create, which returns before
    building on a dry run, and the infer framework of pulumi-go-provider marks outputs unknown
    only on a create, infer/resource.go markComputed). That "" means "computed after the
    build", so a preview carries it on as unknown. Outside a preview it means the push failed.
    """
    if digest and DIGEST.fullmatch(digest):
        return digest
    if dry_run and not digest:
        return pulumi.UNKNOWN
    raise ValueError(f"the image push returned no sha256 digest for {repository}: {digest!r}")

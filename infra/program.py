"""The whole deployment as one function: what __main__.py runs and what the tests run under mocks.

A function, not module-level code, so every test registers a fresh set of resources.
"""

from __future__ import annotations

from typing import Any

from infra.config import load_stack_config
from infra.image import InferenceImage
from infra.monitoring import Monitoring
from infra.service import ModelService


def _scaling_outputs(cfg_settings: Any) -> dict[str, Any]:
    scaling = cfg_settings.autoscaling
    if not scaling.enabled:
        return {"enabled": False, "replicas": cfg_settings.replicas}
    return {
        "enabled": True,
        "engine": scaling.engine,
        "minReplicas": scaling.min_replicas,
        "maxReplicas": scaling.max_replicas,
        "targetCPUUtilizationPercentage": scaling.target_cpu_utilization_percentage,
        "targetTextsPerSecondPerPod": scaling.target_texts_per_second_per_pod,
    }


def deploy() -> dict[str, Any]:
    """Validate the stack config, then build the image, the metrics pipeline and the service.

    Returns the stack outputs. The service is released after the metrics pipeline: the HPA's
    custom metric is being served by the time the HPA first asks for it, and with installKeda the
    ScaledObject's CRD exists before the chart's ScaledObject.
    """
    cfg = load_stack_config()
    settings = cfg.settings
    image = InferenceImage(
        "uninlu-image", settings.image, settings.model, registry_password=cfg.registry_password
    )
    monitoring = Monitoring("uninlu-monitoring", settings)
    service = ModelService(
        "uninlu",
        cfg,
        image_repository=image.repository,
        image_digest=image.digest,
        after=[monitoring],
    )
    return {
        "namespace": service.namespace,
        "serviceName": service.service_name,
        "serviceUrl": service.url,
        "imageRef": image.ref,
        "prometheusUrl": monitoring.prometheus_url,
        "autoscaling": _scaling_outputs(settings),
    }

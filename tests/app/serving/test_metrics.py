"""The metric series that must exist before any traffic."""

from prometheus_client import generate_latest

from app.serving.metrics import PREDICT_ROUTES, PREDICT_TEXTS_TOTAL, REQUESTS_TOTAL, Metrics


def test_predict_request_counters_exist_at_zero_before_traffic():
    """The adapter turns these into the HPA's per-pod rate; a pod without the series has no value,
    and one missing value stops the HPA from scaling down."""
    metrics = Metrics()
    text = generate_latest(metrics.registry).decode()
    for route in PREDICT_ROUTES:
        line = f'{REQUESTS_TOTAL}{{method="POST",route="{route}",status="200"}} 0.0'
        assert line in text
        assert f'{PREDICT_TEXTS_TOTAL}{{route="{route}",status="200"}} 0.0' in text

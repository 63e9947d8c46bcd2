"""Prometheus metric names: the contract shared with the Prometheus Adapter rule and the chart's HPA."""

METRIC_PREFIX = "uninlu_"
REQUESTS_TOTAL = "uninlu_requests_total"
# The HPA's Pods metric, derived by the Prometheus Adapter from REQUESTS_TOTAL on the predict routes.
PREDICT_RPS_METRIC = "uninlu_predict_requests_per_second"
PREDICT_ROUTES = ("/predict", "/predict/batch")

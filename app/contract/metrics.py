"""Metric names and routes that the server exports and the deployment reads (the Prometheus
Adapter rule, the KEDA query, the HPA, the dashboard): defined once here, pinned by tests."""

METRIC_PREFIX = "uninlu_"
REQUESTS_TOTAL = "uninlu_requests_total"
# Texts in predict calls (a /predict is 1, a /predict/batch of n items is n), counted for every
# call whose body parsed, whatever the answer: the work offered, rejected load included.
PREDICT_TEXTS_TOTAL = "uninlu_predict_texts_total"
# The HPA's Pods metric, derived by the Prometheus Adapter from PREDICT_TEXTS_TOTAL (a per-pod
# rate over the predict routes, all statuses). Counting texts, not HTTP calls, keeps a client
# that batches from hiding its load from the HPA.
PREDICT_TEXTS_METRIC = "uninlu_predict_texts_per_second"
PREDICT_ROUTES = ("/predict", "/predict/batch")

# The request-duration histogram's buckets: the SLO recording rules pick their `le` from these.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

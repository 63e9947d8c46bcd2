"""Serving: the HTTP API, the fair scheduler, admission and cost, metrics, logs, settings and the
web page, on top of a runtime."""

"""What the server, the chart and the Pulumi program must agree on (metric names, routes, the
shutdown budget). Pure Python with no dependencies, so `infra/` can import it without the server."""

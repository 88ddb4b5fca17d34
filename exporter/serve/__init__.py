"""Running the exporter: the refresher that keeps the served state fresh, the change
listener, the HTTP server and its web config."""

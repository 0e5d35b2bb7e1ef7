"""The product's one ASGI app: the MDM endpoints, the ops API, dashboards and metrics."""

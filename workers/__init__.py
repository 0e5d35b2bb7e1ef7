"""The Celery side of rollout: the app, its configuration and thin tasks over ``rollout``."""

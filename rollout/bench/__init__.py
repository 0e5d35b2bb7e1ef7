"""Benchmarks the product runs on itself (``rollout bench ...``); each returns a JSON-able dict."""

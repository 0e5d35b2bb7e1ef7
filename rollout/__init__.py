"""rollout: renews provisioning profiles across an Apple device fleet before they expire."""

__version__ = "0.1.0"

"""Where renewed provisioning profiles come from."""

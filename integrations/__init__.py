"""Integrations: API tokens for scripts and outbound webhooks (the top layer)."""

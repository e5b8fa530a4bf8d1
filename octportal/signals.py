"""Signals defined low and connected high, so that lower layers announce events
without importing the apps that react (integrations: token revocation, webhooks)."""
import django.dispatch

# Sent by octportal.security.user_sessions_end with ``user``: revoke everything that signs them in.
signed_out_everywhere = django.dispatch.Signal()

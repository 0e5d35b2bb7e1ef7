"""Sending alert notifications: webhook and e-mail.

The functions here do I/O and nothing else: no storage, no decisions about which alerts to
send. The task that drains the outbox of notifications calls :func:`webhook.post` or
:func:`email.send` for one notification and records the :class:`result.DeliveryResult`.
"""

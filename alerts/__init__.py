"""Alerts on suspected unlicensed derivatives: licence knowledge, findings from the graph, an outbox, sinks.

Imports only :mod:`graph` of ours. The application evaluates findings from the store
(:func:`alerts.findings.evaluate`), records their changes with the events that announce them
(:meth:`alerts.outbox.AlertStore.sync`) and runs the delivery job (:func:`alerts.delivery.deliver`).
"""

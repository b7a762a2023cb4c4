"""Operating the product, not part of any stage: broker configuration, the compose stack's first-start steps,
real local servers for tests and the demo, and ``plm demo``. No stage imports this package; the contract
every stage shares (wire format, configuration, rules, the MQTT client) stays in :mod:`plm`."""

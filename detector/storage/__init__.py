"""What the detector stores and how: line-protocol builders (pure), the durable outbox and the InfluxDB
writer, the journal of received batches, and the sleep diary's notes."""

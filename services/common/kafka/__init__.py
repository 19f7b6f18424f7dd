"""Events: the envelope, the producer, the outbox and its relay, the consumer runner."""

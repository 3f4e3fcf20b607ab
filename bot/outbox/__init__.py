"""The way out: queuing a message durably (outbox stream + message record, atomically), the
opt-out list every send is screened against, quiet hours, and the sends they defer."""

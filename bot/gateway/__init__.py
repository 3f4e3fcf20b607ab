"""The gateway server: webhooks, inbox, outbox and sender, receipts, timers, management API."""

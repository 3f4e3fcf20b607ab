"""Built-in conversation handlers (opt-out compliance, keyword auto-replies, fallback)."""

"""What happens to a message after it is queued: its record (created, sent, failed, and
every delivery receipt merged monotonically), the conversation's timeline, and the events
forwarded to downstream subscribers."""

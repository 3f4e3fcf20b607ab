"""The ordered worker: each owned partition's inbox, handled in arrival order a batch at a
time through the handler seam (:mod:`bot.inbox.handling`), conversation timers, and commands
posted into a conversation from outside."""

"""The kit's fixtures: ``sinchbot_redis``, one real redis-server for the test session."""

pytest_plugins = ["bot.testing"]

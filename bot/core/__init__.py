"""The foundations every other folder may use: settings, logging, asyncio helpers, SMS
arithmetic (segments, phone numbers, masking) and the one clock. Nothing here knows Redis,
the provider or the pipeline."""

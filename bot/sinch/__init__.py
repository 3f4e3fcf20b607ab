"""The Sinch MessageMedia / Sinch Engage protocol: models, client, authentication, signatures."""

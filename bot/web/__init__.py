"""The web pages ``sinchbot serve`` serves: the phone simulator and the conversation inspector
(:func:`~bot.web.routes.web_routes`)."""

from bot.web.routes import web_routes

__all__ = ["web_routes"]

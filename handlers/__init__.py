"""Built-in conversation handlers (opt-out compliance, keyword auto-replies, fallback).

The engine runs them around the plugins::

    Engine(
        compliance.build_router(ComplianceSettings(), client, redis=redis),
        *plugin_routers,
        keywords.build_router(KeywordSettings(fallback="Sorry, we did not get that.")),
    )
"""

from handlers import compliance, keywords
from handlers.compliance import ComplianceSettings
from handlers.keywords import KeywordSettings

__all__ = ["ComplianceSettings", "KeywordSettings", "compliance", "keywords"]

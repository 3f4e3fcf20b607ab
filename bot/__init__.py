"""sinchbot: two-way SMS, MMS and RCS conversations over Sinch MessageMedia / Sinch Engage."""

__version__ = "0.1.0"

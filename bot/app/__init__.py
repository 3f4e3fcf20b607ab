"""The composition root: builds every part from the settings and the config file, in start
and stop order; the handler chain (compliance, plugins, keywords, fallback); the plugin host;
metrics; ``sinchbot serve``."""

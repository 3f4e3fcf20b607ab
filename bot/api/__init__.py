"""The management API: request models and limits, the routes, and the OpenAPI document
built from them."""

"""Tests of sinchbot commands that run against a whole gateway or its dependencies."""

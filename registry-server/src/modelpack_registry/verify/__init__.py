"""Checking and rebuilding a registry's state: ``verify`` (packages against records,
state documents, owners, tokens) and ``reindex``."""

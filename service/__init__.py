"""Shared service package: settings, database, models, blob store, job states, enqueue helper.

Imported by both ``api`` and ``worker``; imports neither of them.
"""

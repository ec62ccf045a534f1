"""Test helpers: service factories and real-process stacks (imported as ``utils``)."""

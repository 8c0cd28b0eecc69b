"""Evaluation harnesses that measure sopagent on data nobody here wrote."""

"""Offline evaluation tooling: the evaluation CLI and the baselines that need torch."""

"""Rollouts on the local runtime: rolling, blue-green and canary with automated analysis."""

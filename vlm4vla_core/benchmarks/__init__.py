"""Simulation benchmarks on which the VLA policies are evaluated."""

"""Evaluation through the real gRPC path: cycle tests (cycle), fidelity against the engine (fidelity),
the suites behind `mirage eval` (suite, budget) and `mirage bench` (bench). The metric definitions
are `runtime.metrics`."""

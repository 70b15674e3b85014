"""Compute backends: where a written job spec is run (local process now; EC2 and Lambda next)."""

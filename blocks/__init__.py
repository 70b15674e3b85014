"""Prefect blocks: prefect-aws credentials and buckets, plus our compute settings blocks."""

from __future__ import annotations

from blocks.compute import Ec2Compute, LambdaCompute

__all__ = ["Ec2Compute", "LambdaCompute"]

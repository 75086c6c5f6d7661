"""The plan stage: scores, scheduler, penalty, selection methods, and writing the plan."""

from .build import build_plan, compute_plan, print_plan

__all__ = ["build_plan", "compute_plan", "print_plan"]

"""The plan stage: scores, scheduler, penalty, selection methods, and writing the plan."""

from .planner import build_plan, compute_plan, print_plan

__all__ = ["build_plan", "compute_plan", "print_plan"]

"""The planner and its plan: which zone runs each op, the conversions between them, what each party sees."""

from hsi.plan.build import make_plan
from hsi.plan.place import place
from hsi.plan.types import CLIENT, Conversion, PartyView, Plan, PlanError, Stage

__all__ = ["CLIENT", "Conversion", "PartyView", "Plan", "PlanError", "Stage", "make_plan", "place"]

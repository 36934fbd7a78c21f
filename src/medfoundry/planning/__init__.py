"""Planning: dataset fingerprint -> plan.json (target spacing, normalisation, patch, stage layout)."""

from medfoundry.planning.fingerprint import compute_fingerprint
from medfoundry.planning.plan import load_plan, make_plan

__all__ = ["compute_fingerprint", "load_plan", "make_plan"]

"""The Border Control Function (NENA-STA-010.3 section 4.1): recognizes and marks emergency
calls at the ESInet's border, tracks sources, and protects the core without ever turning an
emergency call away."""

from firebox.bcf.conditions import BcfCondition, ConditionKind, TdosConfig, TdosGuard
from firebox.bcf.core import Bcf, CallbackRecord, Outcome
from firebox.bcf.marking import CallKind, Marked, Recognized, mark, recognize
from firebox.bcf.protection import Action, BadActors, BcfRules, RateLimit, RateTracker, Rule, RuleError, Verdict, decide

__all__ = [
    "Action", "BadActors", "Bcf", "BcfCondition", "BcfRules", "CallKind", "CallbackRecord", "ConditionKind", "Marked",
    "Outcome", "TdosConfig", "TdosGuard",
    "RateLimit", "RateTracker", "Recognized", "Rule", "RuleError", "Verdict", "decide", "mark", "recognize",
]  # fmt: skip

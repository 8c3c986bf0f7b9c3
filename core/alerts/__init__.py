"""Alerts: one state machine per key (``store``), what the config says of keys (``policy``)."""

from core.alerts.policy import AlertPolicy, Thresholds, Window, covers
from core.alerts.store import Alerts, AlertState, Flip, FlipKind, Mute, Observation, Silencer

__all__ = [
    "AlertPolicy",
    "AlertState",
    "Alerts",
    "Flip",
    "FlipKind",
    "Mute",
    "Observation",
    "Silencer",
    "Thresholds",
    "Window",
    "covers",
]

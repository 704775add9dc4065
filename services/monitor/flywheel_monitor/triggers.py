"""Per (model, rule) trigger state: consecutive breached windows, hysteresis and cooldown. Pure.

A window's verdict is its latest evaluation; a rule fires when the current window breaches, the
`consecutive_windows - 1` windows before it ended breached, the rule is not already in the breaching state
(hysteresis: it leaves that state only when the value recovers past threshold +/- hysteresis) and the
cooldown since the last trigger has passed. Time is event time (window_end), so replays decide alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from flywheel_monitor.rules import Rule


@dataclass(slots=True)
class RuleState:
    window: int | None = None  # index of the window evaluated last
    window_breached: bool = False  # that window's latest verdict
    streak: int = 0  # consecutive breached windows that ended just before `window`
    breaching: bool = False  # fired and not yet recovered
    last_trigger_ms: int | None = None
    not_before_ms: int = 0  # observations up to here describe a replaced model version

    def roll_to(self, window: int) -> None:
        """Move to `window`, closing the previous one into the streak."""
        if self.window is not None and window == self.window + 1 and self.window_breached:
            self.streak += 1
        elif self.window is None or window != self.window:
            self.streak = 0
        self.window, self.window_breached = window, False

    def in_cooldown(self, at_ms: int, cooldown_ms: int) -> bool:
        return self.last_trigger_ms is not None and at_ms - self.last_trigger_ms < cooldown_ms


@dataclass(frozen=True, slots=True)
class Verdict:
    breached: bool  # this evaluation breached the threshold (with enough samples)
    fire: bool  # ...and it asks for a retrain


QUIET = Verdict(False, False)
BREACHED = Verdict(True, False)  # breached, but no retrain request (streak, hysteresis or cooldown)
FIRE = Verdict(True, True)


def evaluate(state: RuleState, rule: Rule, window: int, value: float, samples: int, at_ms: int) -> Verdict:
    """Update `state` with the current aggregate of `window`; late windows are ignored."""
    if at_ms <= state.not_before_ms or (state.window is not None and window < state.window):
        return QUIET
    if window != state.window:
        state.roll_to(window)
    if samples < rule.min_samples or value != value:  # NaN: nothing to compare yet
        return QUIET
    breached = rule.breached(value)
    state.window_breached = breached
    if state.breaching and rule.recovered(value):
        state.breaching = False
    if not breached:
        return QUIET
    if state.breaching or state.streak + 1 < rule.consecutive_windows:
        return BREACHED
    if state.in_cooldown(at_ms, int(rule.cooldown_s * 1000)):
        return BREACHED
    state.breaching, state.last_trigger_ms = True, at_ms
    return FIRE


def restore(state: RuleState, triggered_at_ms: int) -> None:
    """Rebuild cooldown evidence from a RetrainRequested already on the topic (after a restart)."""
    if state.last_trigger_ms is None or triggered_at_ms > state.last_trigger_ms:
        state.last_trigger_ms = triggered_at_ms
        state.breaching = True


def reset_for_new_version(registered_at_ms: int, previous: RuleState | None = None) -> RuleState:
    """A new model version starts clean: older observations describe the replaced version, so the streak and
    the hysteresis start over. The cooldown is the rule's, not the version's: the last request of `previous`
    still counts (docs/decisions/0015-monitor-scale-out.md), so a bad version replacing a bad one cannot ask
    for a retrain sooner than `cooldown_s` after the request that caused it."""
    return RuleState(not_before_ms=registered_at_ms,
                     last_trigger_ms=previous.last_trigger_ms if previous is not None else None)


def durable(state: RuleState) -> dict[str, int | bool | None]:
    """What must outlive the process and move with the model to another worker; the streak is a window cache."""
    return {"breaching": state.breaching, "last_trigger_ms": state.last_trigger_ms,
            "not_before_ms": state.not_before_ms}


def adopt(state: RuleState, saved: dict[str, int | bool | None]) -> None:
    """Take the durable fields written by whichever worker decided last: its word wins over this one's memory
    (every request is claimed in that document before it is sent); the current window and streak stay."""
    state.breaching = bool(saved.get("breaching"))
    last = saved.get("last_trigger_ms")
    state.last_trigger_ms = int(last) if last is not None else None
    state.not_before_ms = max(state.not_before_ms, int(saved.get("not_before_ms") or 0))

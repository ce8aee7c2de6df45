//! What the API server accepts in the status we write, enforced in one place.
//!
//! The Gateway API CRDs constrain status: conditions need `type`, `status`, `reason`,
//! `message` and `lastTransitionTime`; a reason is a word (a letter first, then letters, digits,
//! `_`, `,` or `:`, not ending in `,` or `:`, at most 1024 characters); a message is at most 32768
//! characters; `observedGeneration` is never negative; at most 8 conditions per list, one per
//! type; `attachedRoutes` is a 32-bit integer; a route holds at most 32 parent entries, each
//! with at least one condition. A status that breaks any of these is refused whole (422), so
//! one bad reason string would leave the object's status stale for as long as the config stays.
//! Nothing in our tests plays a validating API server (the emulator stores what it gets), so
//! the writer does not rely on every producer of a condition knowing these rules: it shapes
//! what it sends here, and the tests of this module pin each rule.
//!
//! What happens at a limit: a reason that is not a word keeps its valid characters (`Unknown`
//! when none are left); a long message is cut; conditions past the 8th, or repeating a type,
//! are dropped (the first of each type wins); a route parent entry of ours with no condition is
//! not written (`desired`); a route's parents past 32 lose our entries, last first, since other
//! controllers' entries are not ours to drop. Each of these is logged.

use serde_json::{Value, json};
use waypoint_core::config::Condition;
use waypoint_core::route_status::condition_json;

/// The most conditions a condition list may hold.
pub(super) const MAX_CONDITIONS: usize = 8;

/// The most entries a route's `status.parents` may hold.
pub(super) const MAX_PARENTS: usize = 32;

/// The longest condition message, in characters (cut in bytes here, which is never more).
const MAX_MESSAGE_BYTES: usize = 32_768;

/// The longest condition reason.
const MAX_REASON_CHARS: usize = 1024;

/// The reason written when a reason has no valid character left.
const FALLBACK_REASON: &str = "Unknown";

/// `conditions` as the API accepts them: one per type (the first wins), at most
/// [`MAX_CONDITIONS`], each shaped by [`api_condition`].
pub(crate) fn api_conditions(conditions: &[Condition], generation: Option<i64>) -> Vec<Value> {
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for c in conditions {
        if seen.contains(&c.kind.as_str()) {
            tracing::warn!(condition = %c.kind, "a second condition of one type: not written");
            continue;
        }
        if out.len() == MAX_CONDITIONS {
            tracing::warn!(condition = %c.kind, "more than {MAX_CONDITIONS} conditions: not written");
            continue;
        }
        seen.push(&c.kind);
        out.push(api_condition(c, generation));
    }
    out
}

/// One condition as the API accepts it: the reason a valid word, the message within its cap,
/// `observedGeneration` only when it is a generation (not negative).
pub(crate) fn api_condition(c: &Condition, generation: Option<i64>) -> Value {
    let mut condition = condition_json(c);
    let reason = api_reason(&c.reason);
    if reason != c.reason {
        tracing::warn!(condition = %c.kind, reason = %c.reason, written = %reason, "condition reason is not a valid API reason");
        condition["reason"] = json!(reason);
    }
    if let Some(Value::String(message)) = condition.get_mut("message")
        && message.len() > MAX_MESSAGE_BYTES
    {
        let mut end = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    if let Some(generation) = generation.filter(|g| *g >= 0) {
        condition["observedGeneration"] = json!(generation);
    }
    condition
}

/// `reason` made a valid API reason: its letters, digits, `_`, `,` and `:`, starting at the
/// first letter, without a trailing `,` or `:`, at most [`MAX_REASON_CHARS`] long.
fn api_reason(reason: &str) -> String {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | ',' | ':');
    let mut out: String = reason
        .chars()
        .filter(|c| allowed(*c))
        .skip_while(|c| !c.is_ascii_alphabetic())
        .take(MAX_REASON_CHARS)
        .collect();
    while out.ends_with([',', ':']) {
        out.pop();
    }
    if out.is_empty() {
        FALLBACK_REASON.to_owned()
    } else {
        out
    }
}

/// A listener's `attachedRoutes`, within the API's 32-bit integer.
pub(super) fn api_attached_routes(attached: u32) -> i32 {
    i32::try_from(attached).unwrap_or(i32::MAX)
}

/// Cuts `parents` to [`MAX_PARENTS`] by dropping entries `is_ours` says are ours, last first;
/// entries of other controllers always stay.
pub(super) fn cap_parents(parents: &mut Vec<Value>, is_ours: impl Fn(&Value) -> bool) {
    let mut excess = parents.len().saturating_sub(MAX_PARENTS);
    if excess == 0 {
        return;
    }
    tracing::warn!(
        entries = parents.len(),
        "a route's status.parents would exceed {MAX_PARENTS} entries: our last entries are not written"
    );
    let mut at = parents.len();
    while excess > 0 && at > 0 {
        at -= 1;
        if is_ours(&parents[at]) {
            parents.remove(at);
            excess -= 1;
        }
    }
}

//! The memory watermark: the process watches its own resident set and sheds load above a limit.
//!
//! RSS is read from `/proc/self/status` on a timer (1 s by default), never per request: a
//! read is a few microseconds, and memory does not move faster than connections arrive. The
//! state has hysteresis: it turns on at the limit and off only below 90 % of it, so a process
//! hovering at the line does not flap between accepting and refusing every second.
//!
//! While on: new connections are refused at accept, `/healthz/ready` answers 503 (so a
//! Kubernetes Service sends new connections to other replicas), and each tick closes every
//! idle keep-alive connection gracefully; when none is idle, a tenth of the busy ones are asked
//! to close after their current request (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY).
//!
//! Freed memory is not always handed back to the kernel by the allocator at once, so RSS can
//! stay above the low mark for a while after connections close; the state then stays on, which
//! fails closed (refusing) rather than open.

use std::sync::Arc;

use super::Overload;
use crate::shutdown::Shutdown;

/// Below this share of the limit (in percent) the watermark turns off again.
pub(crate) const LOW_WATERMARK_PERCENT: u64 = 90;

/// What one reading of the resident set means for the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    /// No change.
    Stay,
    /// Crossed the limit: start shedding.
    Enter,
    /// Fell below the low mark: accept again.
    Leave,
}

/// The pure state rule: on at `limit`, off below [`LOW_WATERMARK_PERCENT`] of it.
pub(crate) fn transition(overloaded: bool, rss: u64, limit: u64) -> Transition {
    let low = limit / 100 * LOW_WATERMARK_PERCENT + limit % 100 * LOW_WATERMARK_PERCENT / 100;
    match overloaded {
        false if rss >= limit => Transition::Enter,
        true if rss < low => Transition::Leave,
        _ => Transition::Stay,
    }
}

/// Applies one reading: updates the state, logs a change, and while over the limit closes
/// connections. Returns the state after.
pub(crate) fn apply_reading(overload: &Overload, rss: u64, limit: u64) -> bool {
    let was = overload.memory_overloaded();
    match transition(was, rss, limit) {
        Transition::Enter => {
            tracing::warn!(
                rss,
                limit,
                connections = overload.open_connections(),
                "memory over the limit: refusing new connections, closing idle ones"
            );
            overload.set_memory_overloaded(true);
        }
        Transition::Leave => {
            tracing::info!(rss, limit, "memory back under the limit: accepting again");
            overload.set_memory_overloaded(false);
        }
        Transition::Stay => {}
    }
    let on = overload.memory_overloaded();
    if on {
        shed(overload);
    }
    on
}

fn shed(overload: &Overload) {
    let registry = overload.connections();
    let idle = registry.close_idle();
    if idle > 0 {
        overload.metrics.inc_shed("idle", idle);
        tracing::info!(
            closed = idle,
            "memory over the limit: closing idle connections"
        );
        return;
    }
    let busy = registry.close_busy(registry.len().div_ceil(10));
    if busy > 0 {
        overload.metrics.inc_shed("busy", busy);
        tracing::info!(
            closed = busy,
            "memory over the limit and no idle connection left: closing busy connections after their current request"
        );
    }
}

/// Reads the resident set every `memory_check_interval` (the first time one interval after
/// start) and applies it, until `shutdown`.
/// Returns at once when no memory limit is set or RSS cannot be read on this platform.
pub(crate) async fn watch(overload: Arc<Overload>, shutdown: Shutdown) {
    let Some(limit) = overload.options().memory_limit else {
        return;
    };
    let interval = overload.options().memory_check_interval;
    if crate::telemetry::metrics::resident_bytes().is_none() {
        tracing::warn!(
            "cannot read resident memory (/proc/self/status): memory limit not enforced"
        );
        return;
    }
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if let Some(rss) = crate::telemetry::metrics::resident_bytes() {
            apply_reading(&overload, rss, limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overload::OverloadOptions;

    #[test]
    fn the_watermark_turns_on_at_the_limit_and_off_below_ninety_percent() {
        assert_eq!(transition(false, 999, 1000), Transition::Stay);
        assert_eq!(transition(false, 1000, 1000), Transition::Enter);
        assert_eq!(transition(true, 950, 1000), Transition::Stay);
        assert_eq!(transition(true, 900, 1000), Transition::Stay);
        assert_eq!(transition(true, 899, 1000), Transition::Leave);
        assert_eq!(transition(true, 5000, 1000), Transition::Stay);
        // No overflow near the top of the range.
        assert_eq!(transition(true, u64::MAX / 2, u64::MAX), Transition::Leave);
    }

    #[test]
    fn over_the_limit_idle_connections_go_first_and_new_ones_are_refused() {
        let overload = Overload::new(OverloadOptions {
            memory_limit: Some(1000),
            ..OverloadOptions::default()
        });
        let registry = overload.connections();
        let idle = registry.register();
        let busy = registry.register();
        let _request = busy.conn().busy();
        let gate = overload.gate("l", None);

        assert!(apply_reading(&overload, 1000, 1000));
        assert_eq!(overload.metrics().connections_shed("idle"), 1);
        assert_eq!(overload.metrics().connections_shed("busy"), 0);
        assert!(gate.admit().is_err());
        // The idle one has gone; next tick the busy one is asked to finish and close.
        drop(idle);
        assert!(apply_reading(&overload, 950, 1000));
        assert_eq!(overload.metrics().connections_shed("busy"), 1);

        assert!(!apply_reading(&overload, 800, 1000));
        assert!(gate.admit().is_ok());
    }
}

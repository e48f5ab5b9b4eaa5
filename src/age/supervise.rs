//! [`supervise`]: the task that drives one connection's life.

use std::sync::Arc;

use tokio::time::{Instant, sleep_until};

use super::state::{ConnectionState, DrainReason, Event};

/// Drives one connection's life: deadline, drain, force-close.
pub(super) async fn supervise(state: Arc<ConnectionState>) {
    let handle = state.handle.clone();
    let mut metrics = crate::metrics::Connection::opened(&state.endpoint);
    let deadline = sleep_until(state.deadline.unwrap_or_else(Instant::now));
    tokio::pin!(deadline);
    let mut deadline_passed = state.deadline.is_none();
    while state.is_serving() {
        tokio::select! {
            _ = &mut deadline, if !deadline_passed => {
                deadline_passed = true;
                metrics.max_duration_reached();
                tracing::debug!(
                    endpoint = %state.endpoint,
                    age_ms = state.age().as_millis() as u64,
                    managed = state.is_managed(),
                    "connection deadline reached"
                );
                if state.is_managed() {
                    state.emit(Event::Deadline);
                } else {
                    state.start_draining(DrainReason::Aged);
                }
            }
            _ = state.changed() => {}
            _ = handle.going_away() => {
                state.start_draining(DrainReason::GoAway);
            }
            _ = handle.closed() => state.mark_closed(),
        }
    }

    let drain_deadline = tokio::time::sleep(state.drain_timeout);
    tokio::pin!(drain_deadline);
    loop {
        if state.in_flight() == 0 {
            tracing::debug!(
                endpoint = %state.endpoint,
                age_ms = state.age().as_millis() as u64,
                "connection drained"
            );
            break;
        }
        if handle.is_closed() {
            break;
        }
        tokio::select! {
            _ = state.changed() => {}
            _ = handle.closed() => {}
            _ = &mut drain_deadline => {
                tracing::warn!(
                    endpoint = %state.endpoint,
                    age_ms = state.age().as_millis() as u64,
                    in_flight = state.in_flight(),
                    "drain timeout passed, closing connection by force"
                );
                handle.force_close();
                metrics.force_closed();
                break;
            }
        }
    }
    let graceful = state
        .drain_reason()
        .is_some_and(|reason| reason != DrainReason::Closed);
    metrics.closed(graceful, state.in_flight());
    state.mark_closed();
}

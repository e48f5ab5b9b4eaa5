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
            _ = handle.closed() => {
                // A server that sent GOAWAY closes once its last stream
                // ended; seen late, the close must not hide the GOAWAY
                // (a routine end is no loss).
                if handle.go_away_reason().is_some() {
                    state.start_draining(DrainReason::GoAway);
                }
                state.mark_closed();
            }
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::connector::ConnectionHandle;

    /// A state whose force-close is counted, with a 10 s drain timeout.
    fn state(deadline: Option<Duration>) -> (Arc<ConnectionState>, Arc<AtomicUsize>) {
        let forced = Arc::new(AtomicUsize::new(0));
        let f = forced.clone();
        let handle = ConnectionHandle::new(move || {
            f.fetch_add(1, Ordering::SeqCst);
        });
        handle.count_streams();
        let state = ConnectionState::new(
            "http://10.0.0.1:80".into(),
            deadline.map(|d| Instant::now() + d),
            Duration::from_secs(10),
            handle,
        );
        (state, forced)
    }

    #[tokio::test(start_paused = true)]
    async fn an_unmanaged_connection_drains_at_its_deadline_and_ends_once_idle() {
        let (state, forced) = state(Some(Duration::from_secs(60)));
        let task = tokio::spawn(supervise(state.clone()));
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert!(state.is_serving());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(state.drain_reason(), Some(DrainReason::Aged));
        task.await.unwrap();
        assert_eq!(
            forced.load(Ordering::SeqCst),
            0,
            "nothing in flight: no force"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_managed_connection_keeps_serving_past_its_deadline_and_says_so() {
        let (state, _) = state(Some(Duration::from_secs(60)));
        let heard = Arc::new(Mutex::new(Vec::new()));
        let h = heard.clone();
        state.observe(move |event| h.lock().unwrap().push(event), None);
        let task = tokio::spawn(supervise(state.clone()));
        tokio::time::sleep(Duration::from_secs(3_600)).await;
        assert!(
            state.is_serving(),
            "make-before-break: it waits for its replacement"
        );
        assert_eq!(*heard.lock().unwrap(), [Event::Deadline], "once");
        state.start_draining(DrainReason::Replaced);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_waits_for_requests_then_forces_the_close_at_the_drain_timeout() {
        let (state, forced) = state(None);
        let task = tokio::spawn(supervise(state.clone()));
        let request = state.begin();
        let started = Instant::now();
        state.start_draining(DrainReason::Replaced);
        task.await.unwrap();
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(10),
            "the drain timeout"
        );
        assert_eq!(forced.load(Ordering::SeqCst), 1);
        assert!(state.handle.was_forced());
        drop(request);
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_ends_when_its_last_request_does() {
        let (state, forced) = state(None);
        let task = tokio::spawn(supervise(state.clone()));
        let request = state.begin();
        state.start_draining(DrainReason::Replaced);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!task.is_finished());
        drop(request);
        let ended = Instant::now();
        task.await.unwrap();
        assert_eq!(ended.elapsed(), Duration::ZERO);
        assert_eq!(forced.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_goaway_drains_and_a_closed_transport_ends_it() {
        let (state, _) = state(None);
        let task = tokio::spawn(supervise(state.clone()));
        let request = state.begin();
        state.handle.set_going_away(h2::Reason::NO_ERROR);
        tokio::task::yield_now().await;
        assert_eq!(state.drain_reason(), Some(DrainReason::GoAway));
        state.handle.set_closed();
        task.await.unwrap();
        assert_eq!(state.drain_reason(), Some(DrainReason::GoAway));
        drop(request);
    }

    /// A server's `GOAWAY` and its close both came before the supervisor
    /// looked (a busy runtime): the manager still hears a `GOAWAY`, not a
    /// loss, whichever the supervisor's select picks first.
    #[tokio::test(start_paused = true)]
    async fn a_goaway_seen_only_with_the_close_is_still_a_goaway() {
        for _ in 0..20 {
            let (state, _) = state(None);
            let heard = Arc::new(Mutex::new(Vec::new()));
            let h = heard.clone();
            state.observe(move |event| h.lock().unwrap().push(event), None);
            state.handle.set_going_away(h2::Reason::NO_ERROR);
            state.handle.set_closed();
            supervise(state.clone()).await;
            assert_eq!(*heard.lock().unwrap(), [Event::GoAway]);
            assert_eq!(state.drain_reason(), Some(DrainReason::GoAway));
        }
    }
}

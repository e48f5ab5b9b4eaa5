//! The phase and its reason, the stream count, observer events, in paused time.

use std::sync::Mutex;

use super::*;

fn state(deadline: Option<Instant>) -> Arc<ConnectionState> {
    ConnectionState::for_test(deadline)
}

#[tokio::test(start_paused = true)]
async fn the_drain_reason_is_read_with_the_phase_and_kept_when_closed() {
    for reason in [
        DrainReason::Aged,
        DrainReason::Replaced,
        DrainReason::GoAway,
        DrainReason::Closed,
        DrainReason::RequestCap,
    ] {
        let state = state(None);
        assert_eq!(state.drain_reason(), None);
        assert!(state.start_draining(reason));
        assert!(
            !state.start_draining(DrainReason::Closed),
            "the first reason stays"
        );
        assert_eq!(state.drain_reason(), Some(reason));
        state.mark_closed();
        assert!(!state.is_serving());
        assert_eq!(state.drain_reason(), Some(reason), "closing keeps it");
    }
}

#[tokio::test(start_paused = true)]
async fn requests_are_counted_on_the_transport_handle_until_their_guard_drops() {
    let state = state(None);
    let first = state.begin();
    let second = state.begin();
    assert_eq!((state.in_flight(), state.handle.in_flight()), (2, 2));
    assert!(state.handle.is_busy() && state.handle.is_shared());
    let started = state.started();
    drop(first);
    assert!(state.handle.is_busy() && !state.handle.is_shared());
    drop(second);
    assert!(!state.handle.is_busy());
    assert_eq!(state.in_flight(), 0);
    assert_eq!(state.started(), started, "ending starts nothing");
    let _third = state.begin();
    assert_eq!(state.started(), started.wrapping_add(1));
}

#[test]
fn a_handle_nobody_counts_on_is_always_busy() {
    let handle = ConnectionHandle::new(|| {});
    assert!(handle.is_busy() && handle.is_shared());
}

#[tokio::test(start_paused = true)]
async fn the_observer_hears_a_loss_and_a_graceful_goaway_but_not_a_replacement() {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let observe = |state: &ConnectionState| {
        let heard = heard.clone();
        state.observe(move |event| heard.lock().unwrap().push(event), None);
    };
    let replaced = state(None);
    observe(&replaced);
    replaced.start_draining(DrainReason::Replaced);
    let lost = state(None);
    observe(&lost);
    lost.start_draining(DrainReason::Closed);
    let go_away = state(None);
    observe(&go_away);
    go_away.handle.set_going_away(h2::Reason::NO_ERROR);
    go_away.start_draining(DrainReason::GoAway);
    let calm = state(None);
    observe(&calm);
    calm.handle.set_going_away(h2::Reason::ENHANCE_YOUR_CALM);
    calm.start_draining(DrainReason::GoAway);
    assert_eq!(
        *heard.lock().unwrap(),
        [Event::Lost, Event::GoAway, Event::Lost]
    );
}

#[tokio::test(start_paused = true)]
async fn an_observer_attached_late_still_hears_an_earlier_loss() {
    let state = state(None);
    state.start_draining(DrainReason::Closed);
    let heard = Arc::new(Mutex::new(Vec::new()));
    let h = heard.clone();
    state.observe(move |event| h.lock().unwrap().push(event), None);
    assert_eq!(*heard.lock().unwrap(), [Event::Lost]);
}

#[tokio::test(start_paused = true)]
async fn the_observer_hears_once_when_the_cap_is_near_and_refusals_do_not_count_as_served() {
    let state = state(None);
    let heard = Arc::new(Mutex::new(Vec::new()));
    let h = heard.clone();
    state.observe(move |event| h.lock().unwrap().push(event), Some(3));
    drop(state.begin());
    drop(state.begin());
    assert!(heard.lock().unwrap().is_empty());
    drop(state.begin());
    assert_eq!(*heard.lock().unwrap(), [Event::CapNear], "at the third");
    assert_eq!(
        state.cap_marks.load(Ordering::Relaxed),
        0,
        "the mark is spent"
    );
    let refused = state.begin();
    state.request_refused();
    drop(refused);
    assert_eq!(*heard.lock().unwrap(), [Event::CapNear], "only once");
    assert_eq!((state.started(), state.served()), (4, 3));
}

#[tokio::test(start_paused = true)]
async fn at_the_cap_the_last_request_goes_and_the_connection_drains_once() {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let state = state(None);
    let h = heard.clone();
    state.observe(move |event| h.lock().unwrap().push(event), None);
    state.drain_at_cap(2);
    drop(state.begin());
    assert!(state.is_serving());
    let last = state.begin();
    assert_eq!(state.drain_reason(), Some(DrainReason::RequestCap));
    assert_eq!(state.in_flight(), 1, "the cap's last request is sent");
    drop(last);
    assert_eq!(*heard.lock().unwrap(), [Event::CapReached]);

    let late = self::state(None);
    for _ in 0..3 {
        drop(late.begin());
    }
    late.drain_at_cap(2);
    assert_eq!(
        late.drain_reason(),
        Some(DrainReason::RequestCap),
        "past the cap already: at once"
    );
}

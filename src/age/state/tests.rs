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
    let mut refused = state.begin();
    let _ = refused.failed(crate::error::Error::refused(http::Request::new(())));
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

fn grpc_head(status: Option<&'static str>) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    if let Some(status) = status {
        headers.insert("grpc-status", http::HeaderValue::from_static(status));
    }
    headers
}

/// A connection whose endpoint's failures are counted (threshold 3), and
/// where the threshold's report arrives.
fn watched() -> (
    Arc<ConnectionState>,
    tokio::sync::mpsc::UnboundedReceiver<http::Uri>,
) {
    let (report, reports) = tokio::sync::mpsc::unbounded_channel();
    let state = state(None);
    state.set_health(EndpointHealth::new(
        "http://10.0.0.1:80".parse().unwrap(),
        3,
        false,
        report,
    ));
    (state, reports)
}

#[tokio::test(start_paused = true)]
async fn failed_answers_in_a_row_report_the_endpoint_and_a_good_one_ends_the_run() {
    let (state, mut reports) = watched();
    let none = http::HeaderMap::new();
    let answer = |status: u16| {
        let mut request = state.begin();
        request.record_response(http::StatusCode::from_u16(status).unwrap(), &none);
    };
    answer(503);
    answer(500);
    answer(404); // the caller's mistake: the pod did its job
    answer(503);
    answer(502);
    assert!(reports.try_recv().is_err(), "a good answer ended the run");
    answer(504);
    assert_eq!(
        reports.try_recv().unwrap(),
        "http://10.0.0.1:80".parse::<http::Uri>().unwrap()
    );
    assert_eq!(state.in_flight(), 0, "each answer's request ended with it");
}

#[tokio::test(start_paused = true)]
async fn a_grpc_answer_is_judged_by_its_trailers_or_their_absence() {
    let (state, mut reports) = watched();
    // Trailers-only UNAVAILABLE: judged at the head.
    let mut request = state.begin();
    request.record_response(http::StatusCode::OK, &grpc_head(Some("14")));
    drop(request);
    // A body, then INTERNAL in the trailers.
    let mut request = state.begin();
    request.record_response(http::StatusCode::OK, &grpc_head(None));
    request.record_trailers(Some(&grpc_head(Some("13"))));
    request.record_trailers(None); // the end after the trailers: judged once
    drop(request);
    assert!(reports.try_recv().is_err(), "two failures so far");
    // A body that ends without a status.
    let mut request = state.begin();
    request.record_response(http::StatusCode::OK, &grpc_head(None));
    request.record_trailers(None);
    drop(request);
    assert!(reports.try_recv().is_ok(), "the third failure in a row");
    // A caller that drops the body before its trailers: not judged.
    let mut request = state.begin();
    request.record_response(http::StatusCode::OK, &grpc_head(None));
    drop(request);
    let mut request = state.begin();
    request.record_response(http::StatusCode::OK, &grpc_head(Some("0")));
    drop(request);
    assert!(reports.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn a_connection_answering_with_failures_costs_more_than_one_answering_well() {
    let failing = state(None);
    let healthy = state(None);
    let none = http::HeaderMap::new();
    // Answers at once, with 503s, for a while (the load's clock is std's).
    let until = LoadInstant::now() + Duration::from_millis(50);
    while LoadInstant::now() < until {
        let mut request = failing.begin();
        request.record_response(http::StatusCode::SERVICE_UNAVAILABLE, &none);
        let mut request = healthy.begin();
        request.record_response(http::StatusCode::OK, &none);
    }
    let now = LoadInstant::now();
    assert!(
        failing.cost(now) > healthy.cost(now) + 0.02e9,
        "failing {} vs healthy {}",
        failing.cost(now),
        healthy.cost(now)
    );
}

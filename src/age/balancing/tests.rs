//! What a connection's requests teach the pick, in memory: failures in a
//! row reported for ejection, gRPC answers judged by their trailers, the
//! load of a connection answering with failures, refusals counted.

use std::time::Duration;

use super::*;

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
    Arc<Balancing>,
    tokio::sync::mpsc::UnboundedReceiver<http::Uri>,
) {
    let (report, reports) = tokio::sync::mpsc::unbounded_channel();
    let mut balancing = Balancing::new(
        ConnectionState::for_test(None),
        crate::load::LoadKind::default(),
    );
    let health = EndpointHealth::new("http://10.0.0.1:80".parse().unwrap(), 3, false, report);
    balancing.weigh_as(Some(health), None);
    (Arc::new(balancing), reports)
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
    assert_eq!(
        state.lifetime.in_flight(),
        0,
        "each answer's request ended with it"
    );
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
    let failing = Balancing::for_test();
    let healthy = Balancing::for_test();
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

#[tokio::test(start_paused = true)]
async fn a_refused_request_is_no_failure_and_does_not_count_as_served() {
    let (state, mut reports) = watched();
    for _ in 0..3 {
        let mut refused = state.begin();
        let error = refused.failed(crate::error::Error::refused(http::Request::new(())));
        assert!(error.is_unprocessed());
    }
    assert!(
        reports.try_recv().is_err(),
        "the server said no: not the pod's failure"
    );
    let lifetime = &state.lifetime;
    assert_eq!((lifetime.started(), lifetime.served()), (3, 0));
    assert_eq!(lifetime.drain_reason(), None, "a refusal drains nothing");
}

#[tokio::test(start_paused = true)]
async fn the_endpoints_ejection_takes_every_connection_to_it_out_of_the_pick() {
    let (report, _reports) = tokio::sync::mpsc::unbounded_channel();
    let health = EndpointHealth::new("http://10.0.0.1:80".parse().unwrap(), 3, false, report);
    let connections: Vec<Balancing> = (0..2)
        .map(|_| {
            let mut balancing = Balancing::new(
                ConnectionState::for_test(None),
                crate::load::LoadKind::default(),
            );
            balancing.weigh_as(Some(health.clone()), None);
            balancing
        })
        .collect();
    assert!(connections.iter().all(|c| !c.is_ejected()));
    health.set_ejected(true);
    assert!(connections.iter().all(|c| c.is_ejected()));
    health.set_ejected(false);
    assert!(connections.iter().all(|c| !c.is_ejected()));
}

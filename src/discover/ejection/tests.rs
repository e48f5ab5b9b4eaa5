//! Outlier detection's timeline in paused time: threshold, ejection,
//! readmission, repeated ejections and `max_ejection_percent`.

use std::time::Duration;

use super::*;

fn uri(n: u8) -> Uri {
    format!("http://10.0.0.{n}:80").parse().unwrap()
}

fn ejections(endpoints: u8) -> (Ejections, mpsc::UnboundedReceiver<Uri>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut ejections = Ejections::new(OutlierDetection::new(), tx);
    for n in 1..=endpoints {
        ejections.add(uri(n));
    }
    (ejections, rx)
}

const BASE: Duration = Duration::from_secs(30);

#[tokio::test(start_paused = true)]
async fn consecutive_failures_reaching_the_threshold_report_the_endpoint_once() {
    let (ejections, mut reports) = ejections(1);
    let health = ejections.health(&uri(1)).unwrap();
    for _ in 0..4 {
        health.failure();
    }
    health.success();
    for _ in 0..4 {
        health.failure();
    }
    assert!(reports.try_recv().is_err(), "a success ends the run");
    health.failure();
    assert_eq!(reports.try_recv().unwrap(), uri(1));
    health.failure();
    assert!(
        reports.try_recv().is_err(),
        "reported when reaching it, not above"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_endpoint_is_ejected_for_the_base_time_once() {
    let (mut ejections, _reports) = ejections(10);
    assert_eq!(
        ejections.decide(&uri(1), 10),
        Decision::Eject {
            time: BASE,
            ejections: 1
        }
    );
    assert!(ejections.is_ejected(&uri(1)));
    assert_eq!(ejections.ejected(), 1);
    assert_eq!(
        ejections.decide(&uri(1), 10),
        Decision::Nothing,
        "out already"
    );
}

#[tokio::test(start_paused = true)]
async fn no_more_endpoints_are_ejected_than_max_ejection_percent_allows() {
    let (mut ejections, _reports) = ejections(3);
    assert!(matches!(
        ejections.decide(&uri(1), 3),
        Decision::Eject { .. }
    ));
    assert_eq!(
        ejections.decide(&uri(2), 3),
        Decision::Overflow { ejected: 1 },
        "10% of 3 endpoints: one may be out"
    );
    assert!(!ejections.is_ejected(&uri(2)));
    assert!(ejections.readmit(&uri(1)));
    assert!(
        matches!(ejections.decide(&uri(2), 3), Decision::Eject { .. }),
        "room again once the first is back"
    );
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_failing_again_soon_after_readmission_is_ejected_longer() {
    let (mut ejections, _reports) = ejections(10);
    ejections.decide(&uri(1), 10);
    tokio::time::advance(BASE).await;
    assert!(ejections.readmit(&uri(1)));
    assert!(!ejections.is_ejected(&uri(1)));
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(
        ejections.decide(&uri(1), 10),
        Decision::Eject {
            time: 2 * BASE,
            ejections: 2
        }
    );
}

#[tokio::test(start_paused = true)]
async fn each_base_ejection_time_healthy_takes_one_ejection_off() {
    let (mut ejections, _reports) = ejections(10);
    for _ in 0..3 {
        ejections.decide(&uri(1), 10);
        ejections.readmit(&uri(1));
    }
    // Three in a row; two base times healthy leave one.
    tokio::time::advance(2 * BASE + Duration::from_secs(1)).await;
    assert_eq!(
        ejections.decide(&uri(1), 10),
        Decision::Eject {
            time: 2 * BASE,
            ejections: 2
        }
    );
}

#[tokio::test(start_paused = true)]
async fn the_ejection_time_stops_growing_at_the_maximum() {
    let (mut ejections, _reports) = ejections(10);
    let mut last = Decision::Nothing;
    for _ in 0..20 {
        last = ejections.decide(&uri(1), 10);
        ejections.readmit(&uri(1));
    }
    assert_eq!(
        last,
        Decision::Eject {
            time: Duration::from_secs(300),
            ejections: 20
        }
    );
}

#[tokio::test(start_paused = true)]
async fn readmission_resets_the_failure_count_and_a_removed_endpoint_is_forgotten() {
    let (mut ejections, mut reports) = ejections(10);
    let health = ejections.health(&uri(1)).unwrap().clone();
    for _ in 0..4 {
        health.failure();
    }
    ejections.decide(&uri(1), 10);
    ejections.readmit(&uri(1));
    for _ in 0..4 {
        health.failure();
    }
    assert!(reports.try_recv().is_err(), "the count started over");
    ejections.remove(&uri(1));
    assert_eq!(ejections.decide(&uri(1), 9), Decision::Nothing);
    assert!(!ejections.readmit(&uri(1)));
    assert!(ejections.health(&uri(1)).is_none());
}

#[tokio::test(start_paused = true)]
async fn an_interval_ejects_the_endpoints_failing_often_enough_with_enough_requests() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let detection = OutlierDetection::new()
        .failure_percentage(50)
        .failure_percentage_minimum_requests(10)
        .consecutive_failures(1000);
    let mut ejections = Ejections::new(detection, tx);
    assert_eq!(ejections.interval(), Some(Duration::from_secs(10)));
    for n in 1..=3 {
        ejections.add(uri(n));
    }
    let health = |n| ejections.health(&uri(n)).unwrap().clone();
    // 1: half of 20 fail, at random; 2: a third of 30; 3: all of 5.
    for i in 0..20 {
        health(1).response(i % 2 == 0);
    }
    for i in 0..30 {
        health(2).response(i % 3 == 0);
    }
    for _ in 0..5 {
        health(3).failure();
    }
    assert_eq!(ejections.interval_over(), vec![uri(1)]);
    assert_eq!(
        ejections.interval_over(),
        Vec::<Uri>::new(),
        "the counts started over"
    );
    assert_eq!(
        ejections.failing(&uri(1), 3, EjectionReason::FailurePercentage),
        Some(BASE)
    );
    assert!(ejections.is_ejected(&uri(1)));
}

#[tokio::test(start_paused = true)]
async fn without_a_failure_percentage_nothing_is_counted_per_request() {
    let (ejections, _reports) = ejections(1);
    assert_eq!(ejections.interval(), None);
    let health = ejections.health(&uri(1)).unwrap();
    health.response(true);
    health.response(false);
    assert_eq!(health.take_interval(), (0, 0));
}

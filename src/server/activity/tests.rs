//! The activity tracker's tests.
use super::*;

#[tokio::test(start_paused = true)]
async fn idle_waits_for_the_last_request_to_end() {
    let activity = Activity::new();
    let guard = activity.start(Version::HTTP_2);
    assert_eq!(activity.protocol(), Protocol::Http2);
    let idle = activity.idle_for(Duration::from_secs(1));
    tokio::pin!(idle);
    // In flight for 5 s: never idle, however long the wait.
    assert!(
        tokio::time::timeout(Duration::from_secs(5), idle.as_mut())
            .await
            .is_err()
    );
    drop(guard);
    let ended = Instant::now();
    idle.await;
    assert_eq!(ended.elapsed(), Duration::from_secs(1));
    assert_eq!(activity.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_new_request_restarts_the_idle_clock() {
    let activity = Activity::new();
    let start = Instant::now();
    let idle = activity.idle_for(Duration::from_secs(1));
    tokio::pin!(idle);
    assert!(
        tokio::time::timeout(Duration::from_millis(600), idle.as_mut())
            .await
            .is_err()
    );
    drop(activity.start(Version::HTTP_11));
    assert_eq!(activity.protocol(), Protocol::Http1);
    idle.await;
    assert_eq!(start.elapsed(), Duration::from_millis(1600));
}

#[tokio::test(start_paused = true)]
async fn an_idle_limit_of_duration_max_never_ends_and_does_not_panic() {
    let activity = Activity::new();
    let idle = activity.idle_for(Duration::MAX);
    tokio::pin!(idle);
    assert!(
        tokio::time::timeout(Duration::from_secs(3600), idle.as_mut())
            .await
            .is_err()
    );
    // A request coming and going recomputes the deadline: still none.
    drop(activity.start(Version::HTTP_11));
    assert!(
        tokio::time::timeout(Duration::from_secs(3600), idle)
            .await
            .is_err()
    );
}

/// Feeds `chunks` through an [`ObservedIo`] and returns the protocol
/// seen after each.
async fn protocols_after(chunks: &[&[u8]]) -> (Arc<Activity>, Vec<Protocol>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let activity = Activity::new();
    let (server, mut client) = tokio::io::duplex(256);
    let mut io = ObservedIo::new(server, Arc::clone(&activity));
    let mut seen = Vec::new();
    for chunk in chunks {
        client.write_all(chunk).await.unwrap();
        let mut buf = vec![0u8; chunk.len()];
        io.read_exact(&mut buf).await.unwrap();
        seen.push(activity.protocol());
    }
    (activity, seen)
}

#[tokio::test]
async fn the_preface_tells_http2_from_http1_before_any_request() {
    let (activity, seen) =
        protocols_after(&[b"PRI * HT", b"TP/2.0\r\n\r\nSM", b"\r\n\r\n", b"\0\0"]).await;
    assert_eq!(
        seen,
        [
            Protocol::Unknown,
            Protocol::Unknown,
            Protocol::Http2,
            Protocol::Http2
        ]
    );
    assert!(activity.is_receiving());

    // "P" could still be the preface; "PO" is not.
    let (_, seen) = protocols_after(&[b"P", b"OST / HTTP/1.1\r\n"]).await;
    assert_eq!(seen, [Protocol::Unknown, Protocol::Http1]);
    let (_, seen) = protocols_after(&[b"GET / HTTP/1.1\r\n"]).await;
    assert_eq!(seen, [Protocol::Http1]);
}

#[tokio::test]
async fn bytes_read_mean_receiving_until_the_request_they_carried_ends() {
    let (activity, _) = protocols_after(&[b"GET / HTTP/1.1\r\n"]).await;
    assert!(activity.is_receiving());
    let guard = activity.start(Version::HTTP_11);
    // In flight is not "receiving the next request".
    assert!(!activity.is_receiving());
    drop(guard);
    assert!(!activity.is_receiving());
    assert_eq!(activity.started(), 1);
}

#[test]
fn draining_responses_get_connection_close_once() {
    let mut plain = Response::new(());
    close_after(&mut plain);
    let values: Vec<_> = plain.headers().get_all(CONNECTION).iter().collect();
    assert_eq!(values, ["close"]);

    let mut keep_alive = Response::builder()
        .header(CONNECTION, "keep-alive")
        .body(())
        .unwrap();
    close_after(&mut keep_alive);
    let values: Vec<_> = keep_alive.headers().get_all(CONNECTION).iter().collect();
    assert_eq!(values, ["keep-alive", "close"]);

    let mut already = Response::builder()
        .header(CONNECTION, "Upgrade, Close")
        .body(())
        .unwrap();
    close_after(&mut already);
    assert_eq!(already.headers().get_all(CONNECTION).iter().count(), 1);
}

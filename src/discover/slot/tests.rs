//! The slot's transitions, in paused time: what each event leads to.

use std::sync::Arc;
use std::time::Duration;

use super::*;

fn connection() -> Arc<ConnectionState> {
    ConnectionState::for_test(None)
}

fn backoff() -> Backoff {
    Backoff {
        min: Duration::from_millis(100),
        max: Duration::from_secs(5),
    }
}

fn within(delay: Duration, low_ms: u64, high_ms: u64) -> bool {
    delay >= Duration::from_millis(low_ms) && delay <= Duration::from_millis(high_ms)
}

#[test]
fn a_new_slot_wants_one_connect_at_a_time() {
    let mut slot = Slot::<()>::new(Kind::Regular);
    assert!(slot.wants_connect());
    assert!(slot.begin_connect());
    assert_eq!(slot.attempt(), Attempt::Connecting);
    assert!(!slot.wants_connect(), "one connect under way is enough");
    assert!(!slot.begin_connect());
}

#[tokio::test(start_paused = true)]
async fn a_failed_connect_backs_off_longer_each_time_then_connects_again() {
    let mut slot = Slot::<()>::new(Kind::Regular);
    assert!(slot.begin_connect());
    let first = slot.connect_failed(&backoff());
    assert!(within(first, 50, 100), "first delay {first:?}");
    assert!(slot.begin_backoff());
    assert!(!slot.wants_connect(), "waiting for the backoff");
    assert!(!slot.begin_backoff(), "one timer at a time");
    slot.backoff_over();
    assert!(slot.wants_connect());
    assert!(slot.begin_connect());
    let second = slot.connect_failed(&backoff());
    assert!(within(second, 100, 200), "second delay {second:?}");
    assert_eq!(slot.failures(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_keeps_the_connection_serving_until_its_replacement_is_in() {
    let mut slot = Slot::<()>::new(Kind::Regular);
    slot.begin_connect();
    let old = connection();
    let (first, replaced) = slot.connected(old.clone());
    assert!(replaced.is_none());
    assert!(!slot.wants_connect(), "serving");
    slot.deadline();
    assert!(slot.wants_connect(), "due: a replacement is wanted");
    assert!(
        Arc::ptr_eq(slot.current().unwrap(), &old),
        "the due connection keeps serving meanwhile"
    );
    assert!(slot.begin_connect());
    let new = connection();
    let (second, replaced) = slot.connected(new.clone());
    assert!(
        Arc::ptr_eq(&replaced.unwrap(), &old),
        "the old one is handed back to drain"
    );
    assert!(Arc::ptr_eq(slot.current().unwrap(), &new));
    assert!(
        !slot.is_current(first),
        "events of the old connection are ignored"
    );
    assert!(slot.is_current(second));
    assert!(!slot.wants_connect());
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_lived_its_whole_age_clears_the_failures() {
    let mut slot = Slot::<()>::new(Kind::Regular);
    slot.begin_connect();
    slot.connect_failed(&backoff());
    slot.begin_connect();
    slot.connected(connection());
    assert_eq!(slot.failures(), 1, "a connect alone proves little");
    slot.deadline();
    assert_eq!(slot.failures(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_goaway_rotates_at_once_when_the_connection_is_older_than_the_backoff_minimum() {
    let mut slot = Slot::<()>::new(Kind::Regular);
    slot.begin_connect();
    slot.connect_failed(&backoff());
    slot.begin_connect();
    slot.connected(connection());
    tokio::time::advance(Duration::from_secs(60)).await;
    let (_, next) = slot.go_away(&backoff()).expect("a connection went away");
    assert_eq!(next, Reconnect::Now);
    assert!(slot.current().is_none(), "it left the slot to drain");
    assert_eq!(slot.failures(), 0, "a rotation is no failure");
    assert!(slot.go_away(&backoff()).is_none(), "only once");
}

#[tokio::test(start_paused = true)]
async fn a_goaway_right_after_connecting_waits_the_rest_of_the_backoff_minimum() {
    let mut slot = Slot::<()>::new(Kind::Regular);
    slot.begin_connect();
    slot.connected(connection());
    tokio::time::advance(Duration::from_millis(30)).await;
    let (_, next) = slot.go_away(&backoff()).unwrap();
    assert_eq!(next, Reconnect::After(Duration::from_millis(70)));
}

#[tokio::test(start_paused = true)]
async fn a_goaway_after_many_requests_is_a_request_cap_and_rotates_at_once() {
    let mut slot = Slot::<()>::new(Kind::Regular);
    slot.begin_connect();
    let state = connection();
    slot.connected(state.clone());
    for _ in 0..SERVED_MANY {
        drop(state.begin());
    }
    // Young, but it served its cap (nginx: 1,000 requests per connection).
    tokio::time::advance(Duration::from_millis(5)).await;
    let (_, next) = slot.go_away(&backoff()).unwrap();
    assert_eq!(next, Reconnect::Now);
}

#[tokio::test(start_paused = true)]
async fn the_first_loss_reconnects_at_once_and_repeated_losses_back_off() {
    let mut slot = Slot::<()>::new(Kind::Regular);
    slot.begin_connect();
    slot.connected(connection());
    let (_, next) = slot.lost(&backoff()).unwrap();
    assert_eq!(next, Reconnect::Now);
    slot.begin_connect();
    slot.connected(connection());
    let (_, next) = slot.lost(&backoff()).unwrap();
    let Reconnect::After(delay) = next else {
        panic!("a second loss in a row backs off, got {next:?}");
    };
    assert!(within(delay, 50, 100), "{delay:?}");
    slot.begin_connect();
    slot.connected(connection());
    // A connection that lived longer than the longest backoff was healthy.
    tokio::time::advance(backoff().max).await;
    let (_, next) = slot.lost(&backoff()).unwrap();
    assert_eq!(next, Reconnect::Now);
    assert_eq!(slot.failures(), 1);
}

#[test]
fn a_backoff_gives_way_to_a_connect_asked_for_now() {
    let mut slot = Slot::<()>::new(Kind::Regular);
    assert!(slot.begin_backoff());
    assert!(slot.begin_connect(), "a deadline or GOAWAY connects now");
    slot.backoff_over();
    assert_eq!(
        slot.attempt(),
        Attempt::Connecting,
        "the stale timer does not end the connect"
    );
    assert!(!slot.begin_backoff(), "no timer while connecting");
}

#[tokio::test(start_paused = true)]
async fn an_extra_is_idle_after_two_checks_without_a_request() {
    let mut slot = Slot::<()>::new(Kind::Extra { idle_seen: None });
    slot.begin_connect();
    let state = connection();
    slot.connected(state.clone());
    assert!(!slot.idle_since_last_check(), "the first check only looks");
    drop(state.begin());
    assert!(!slot.idle_since_last_check(), "a request started since");
    let request = state.begin();
    assert!(!slot.idle_since_last_check(), "a request started since");
    assert!(!slot.idle_since_last_check(), "a request is in flight");
    drop(request);
    assert!(slot.idle_since_last_check());

    let mut regular = Slot::<()>::new(Kind::Regular);
    regular.connected(connection());
    regular.idle_since_last_check();
    assert!(
        !regular.idle_since_last_check(),
        "regular slots are never idle-closed"
    );
}

#[tokio::test(start_paused = true)]
async fn a_successor_connected_ahead_takes_over_when_the_server_ends_the_connection() {
    let mut slot = Slot::<()>::new(Kind::Regular);
    assert!(!slot.begin_standby(), "nothing serves yet");
    slot.begin_connect();
    let current = connection();
    let (first, _) = slot.connected(current.clone());
    assert!(slot.begin_standby());
    assert!(slot.connecting_standby());
    assert!(!slot.wants_connect(), "the current one still serves");
    assert!(!slot.begin_standby(), "one successor at a time");
    let next = connection();
    slot.stand_by(next.clone(), ());
    assert!(!slot.connecting_standby());
    assert!(!slot.begin_standby(), "a successor waits already");
    assert!(
        Arc::ptr_eq(slot.current().unwrap(), &current),
        "it waits out of service"
    );
    for _ in 0..SERVED_MANY {
        drop(current.begin());
    }
    let (old, next_step) = slot.go_away(&backoff()).unwrap();
    assert!(Arc::ptr_eq(&old, &current));
    assert_eq!(
        next_step,
        Reconnect::Now,
        "what happens without a successor"
    );
    let (standby, ()) = slot.take_standby().expect("the successor is ready");
    assert!(Arc::ptr_eq(&standby, &next));
    let (second, replaced) = slot.connected(standby);
    assert!(replaced.is_none(), "the old one left at its GOAWAY");
    assert!(slot.is_current(second) && !slot.is_current(first));
    assert!(Arc::ptr_eq(slot.current().unwrap(), &next));
    assert!(slot.take_standby().is_none(), "used once");
}

#[tokio::test(start_paused = true)]
async fn a_due_connection_hands_over_to_its_waiting_successor() {
    let mut slot = Slot::<()>::new(Kind::Regular);
    slot.begin_connect();
    let current = connection();
    slot.connected(current.clone());
    slot.begin_standby();
    slot.stand_by(connection(), ());
    slot.deadline();
    let (standby, ()) = slot.take_standby().unwrap();
    let (_, replaced) = slot.connected(standby);
    assert!(
        Arc::ptr_eq(&replaced.unwrap(), &current),
        "the due one is handed back to drain"
    );
}

#[tokio::test(start_paused = true)]
async fn a_successor_that_closed_while_it_waited_is_not_used() {
    let mut slot = Slot::<()>::new(Kind::Regular);
    slot.begin_connect();
    slot.connected(connection());
    slot.begin_standby();
    let next = connection();
    slot.stand_by(next.clone(), ());
    // The server closed the idle successor (nginx's keepalive_timeout).
    next.mark_closed();
    slot.lost(&backoff()).unwrap();
    assert!(slot.take_standby().is_none());
    assert!(slot.wants_connect(), "a connect is due as without one");
}

#[test]
fn a_request_cap_is_what_the_server_served_before_its_goaway() {
    let ended = connection();
    for _ in 0..SERVED_MANY - 1 {
        drop(ended.begin());
    }
    assert_eq!(request_cap(&ended), None, "few requests: shedding load");
    drop(ended.begin());
    assert_eq!(request_cap(&ended), Some(SERVED_MANY));
}

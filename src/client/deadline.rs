//! A request's deadline: the client's `timeout`, or the request's
//! `grpc-timeout` header, whichever ends first (as tonic's `Channel`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, HeaderName};
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use crate::error::{Error, ErrorKind};

/// gRPC's per-call timeout header (gRPC over HTTP/2, "Requests").
pub(crate) const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The request's deadline, if it has one: the shorter of `timeout` and its
/// `grpc-timeout`. A `grpc-timeout` that is not valid gRPC is an error
/// that names it (tonic's `Channel` ignores it; a silently missing
/// deadline is worse).
pub(crate) fn of(headers: &HeaderMap, timeout: Option<Duration>) -> Result<Option<Limit>, Error> {
    let grpc = match headers.get(&GRPC_TIMEOUT) {
        Some(value) => Some(parse_grpc_timeout(value.as_bytes()).ok_or_else(|| {
            Error::new(ErrorKind::Request).with_message(format!(
                "the request's grpc-timeout header {value:?} is not a gRPC timeout (1 to 8 \
                 digits, then one of H, M, S, m, u, n)"
            ))
        })?),
        None => None,
    };
    Ok(match (grpc, timeout) {
        (Some(grpc), Some(client)) if client < grpc => Some(Limit::client(client)),
        (Some(grpc), _) => Some(Limit {
            after: grpc,
            set_by: "the request's grpc-timeout",
        }),
        (None, Some(client)) => Some(Limit::client(client)),
        (None, None) => None,
    })
}

/// `TimeoutValue TimeoutUnit`: at most 8 ASCII digits, then `H`, `M`, `S`,
/// `m`, `u` or `n` (so it never overflows a `Duration`).
fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// How long a request may take, and who said so (for its error).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit {
    after: Duration,
    set_by: &'static str,
}

impl Limit {
    fn client(after: Duration) -> Self {
        Limit {
            after,
            set_by: "the client's timeout",
        }
    }

    pub(crate) fn start(self) -> Pin<Box<Deadline>> {
        Box::pin(Deadline {
            sleep: tokio::time::sleep(crate::time::saturate(self.after)),
            limit: self,
        })
    }
}

pin_project! {
    /// A running deadline.
    pub(crate) struct Deadline {
        #[pin]
        sleep: Sleep,
        limit: Limit,
    }
}

impl Deadline {
    /// Ready with the request's error once the deadline has passed.
    pub(crate) fn poll_expired(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Error> {
        let this = self.project();
        let limit = *this.limit;
        this.sleep.poll(cx).map(|()| {
            Error::new(ErrorKind::Timeout).with_message(format!(
                "{} ({:?}) passed before the response; the stream was cancelled",
                limit.set_by, limit.after
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        let cases: [(&[u8], Duration); 6] = [
            (b"1H", Duration::from_secs(3600)),
            (b"2M", Duration::from_secs(120)),
            (b"3S", Duration::from_secs(3)),
            (b"300m", Duration::from_millis(300)),
            (b"99999999u", Duration::from_micros(99_999_999)),
            (b"5n", Duration::from_nanos(5)),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_grpc_timeout(value), Some(expected));
        }
        assert_eq!(
            parse_grpc_timeout(b"99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
    }

    #[test]
    fn malformed_grpc_timeouts_are_rejected() {
        for value in [
            &b""[..],
            b"S",
            b"123456789S",
            b"10x",
            b"-1S",
            b"1.5S",
            b"10",
        ] {
            assert_eq!(parse_grpc_timeout(value), None, "{value:?}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_TIMEOUT, "soon".parse().unwrap());
        let err = of(&headers, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Request);
    }

    #[test]
    fn the_earlier_deadline_wins() {
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_TIMEOUT, "300m".parse().unwrap());
        let limit = of(&headers, Some(Duration::from_secs(5))).unwrap().unwrap();
        assert_eq!(limit.after, Duration::from_millis(300));
        let limit = of(&headers, Some(Duration::from_millis(100)))
            .unwrap()
            .unwrap();
        assert_eq!(limit.after, Duration::from_millis(100));
        assert!(of(&HeaderMap::new(), None).unwrap().is_none());
    }
}

//! How a request, or its connection, ended on the wire: the one place h2's
//! errors are read.
//!
//! Everything here is derived from `h2::Error`'s accessors (`is_io`,
//! `is_go_away`, `is_reset`, `is_remote`, `reason`), never from its
//! `Display` text, and rests on these facts of h2 0.4 (read in its source,
//! each pinned by a test that produces the real error):
//!
//! - `send_request` fails before a stream exists either with a connection
//!   error (I/O, a `GOAWAY` sent or received: it carries a reason or is
//!   I/O) or with a *user* error about the request itself (malformed
//!   headers, a URI without scheme and authority, no stream ids left), which
//!   has neither a reason nor an I/O cause;
//! - a stream fails with a remote `GOAWAY` only in h2's `recv_go_away`, and
//!   only when the stream is above the `GOAWAY`'s last-stream-id (streams
//!   at or below it that are cut later get I/O errors);
//! - `REFUSED_STREAM` from the server means the stream was not processed
//!   (RFC 9113 §8.7).
//!
//! A failure is read once, where it happens, into a [`Verdict`] (what it
//! says about the request: replay, blame) and a [`Wire`] (what the wire
//! said: the HTTP/2 code, a remote `GOAWAY`, a broken connection), which the
//! crate's [`Error`](crate::Error) keeps. Replay, the age layer, load,
//! ejection, metrics and the gRPC status all read those, never h2's error.

use h2::Reason;

/// What an h2 error says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No stream was opened because the connection takes no more: the
    /// request goes back to the caller unsent.
    ConnectionClosed,
    /// h2 refused the request itself (a user error); the connection is
    /// unaffected, and sending the same request again would fail again.
    BadRequest,
    /// The server provably did not process the stream: `REFUSED_STREAM`,
    /// or above the last-stream-id of a `GOAWAY` that blames nobody.
    Unprocessed,
    /// Above the last-stream-id of a `GOAWAY` whose code says the client
    /// broke a rule (`ENHANCE_YOUR_CALM`, `PROTOCOL_ERROR`,
    /// `COMPRESSION_ERROR`, `FRAME_SIZE_ERROR`), often with one oversized
    /// request. Unprocessed, but this request may be the cause, so it is
    /// not replayed into another connection.
    UnprocessedBlamed(Reason),
    /// The request may have been processed.
    MaybeProcessed,
}

/// Where the error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// `SendRequest::send_request` failed: no stream exists.
    Open,
    /// The stream's response (or body) failed.
    Stream,
}

/// Sorts `e`; see [`Verdict`].
pub(crate) fn classify(e: &h2::Error, stage: Stage) -> Verdict {
    match stage {
        Stage::Open if is_user_error(e) => Verdict::BadRequest,
        Stage::Open => Verdict::ConnectionClosed,
        Stage::Stream if e.is_remote() && e.is_reset() => match e.reason() {
            Some(Reason::REFUSED_STREAM) => Verdict::Unprocessed,
            _ => Verdict::MaybeProcessed,
        },
        Stage::Stream if e.is_remote() && e.is_go_away() => match e.reason() {
            Some(reason) if blames_the_client(reason) => Verdict::UnprocessedBlamed(reason),
            _ => Verdict::Unprocessed,
        },
        Stage::Stream => Verdict::MaybeProcessed,
    }
}

/// Sorts the h2 error somewhere in `e`'s chain (hyper wraps h2's); an
/// error without one may have been processed.
pub(crate) fn classify_wrapped(e: &(dyn std::error::Error + 'static), stage: Stage) -> Verdict {
    find_h2(e).map_or(Verdict::MaybeProcessed, |h2| classify(h2, stage))
}

/// h2's user errors are the ones with neither a protocol reason nor an I/O
/// cause (h2's `Kind::User`, which it does not expose by name).
fn is_user_error(e: &h2::Error) -> bool {
    e.reason().is_none() && !e.is_io()
}

/// `GOAWAY` codes that say the client (usually one request) misbehaved.
fn blames_the_client(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::ENHANCE_YOUR_CALM
            | Reason::PROTOCOL_ERROR
            | Reason::COMPRESSION_ERROR
            | Reason::FRAME_SIZE_ERROR
    )
}

/// A server's `GOAWAY(ENHANCE_YOUR_CALM)` on a connection that sent
/// keepalive `PING`s blames the pings (grpc-go's and C-core's
/// "too_many_pings"), not a request.
pub(crate) fn blames_pings(reason: Option<Reason>, pinged: bool) -> bool {
    pinged && reason == Some(Reason::ENHANCE_YOUR_CALM)
}

/// What the wire said about a failure, read once from the h2 error (or the
/// I/O error) in its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Wire {
    /// The HTTP/2 error code that ended the stream or connection.
    pub(crate) reason: Option<Reason>,
    /// The server sent `GOAWAY`, and this stream was above its
    /// last-stream-id or opened after it (h2 reports both as a remote
    /// go-away on the stream).
    pub(crate) remote_go_away: bool,
    /// The connection broke (an I/O error).
    pub(crate) io: bool,
}

impl Wire {
    /// Reads `e`'s chain: the first h2 error decides; without one, any
    /// I/O error in it counts as a broken connection.
    pub(crate) fn of(e: &(dyn std::error::Error + 'static)) -> Option<Wire> {
        if let Some(h2) = find_h2(e) {
            return Some(Wire {
                reason: h2.reason(),
                remote_go_away: h2.is_go_away() && h2.is_remote(),
                io: h2.is_io(),
            });
        }
        chain(e).any(|e| e.is::<std::io::Error>()).then_some(Wire {
            io: true,
            ..Wire::default()
        })
    }
}

/// How an HTTP/2 connection (not one stream) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectionEnd {
    /// The server sent `GOAWAY` with this code.
    GoAway(Reason),
    /// The transport broke or closed (an HTTP/1.1-only server closes on
    /// the preface like this).
    Io,
    /// The server ended it otherwise (a reset, a protocol error it sent).
    Remote,
    /// h2 could not parse what came back: not HTTP/2 frames.
    Local,
}

impl ConnectionEnd {
    /// Sorts the error a connection (or its `poll_ready`) ended with.
    pub(crate) fn of(e: &h2::Error) -> ConnectionEnd {
        if e.is_go_away() && e.is_remote() {
            ConnectionEnd::GoAway(e.reason().unwrap_or(Reason::NO_ERROR))
        } else if e.is_io() {
            ConnectionEnd::Io
        } else if e.is_remote() {
            ConnectionEnd::Remote
        } else {
            ConnectionEnd::Local
        }
    }
}

/// The h2 error behind `err`, if any (errors wrap them; reach them via `source()`).
fn find_h2<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a h2::Error> {
    chain(err).find_map(|e| e.downcast_ref::<h2::Error>())
}

fn chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| e.source())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_alone_is_not_a_user_error() {
        // `h2::Error::from(Reason)` is h2's `Kind::Reason`.
        let e = h2::Error::from(Reason::CANCEL);
        assert_eq!(classify(&e, Stage::Open), Verdict::ConnectionClosed);
        assert_eq!(classify(&e, Stage::Stream), Verdict::MaybeProcessed);
    }

    #[test]
    fn wire_reads_the_h2_error_first_and_io_errors_without_one() {
        let reset = h2::Error::from(Reason::INTERNAL_ERROR);
        assert_eq!(
            Wire::of(&reset),
            Some(Wire {
                reason: Some(Reason::INTERNAL_ERROR),
                remote_go_away: false,
                io: false,
            })
        );
        let bare = std::io::Error::other("broken pipe");
        assert_eq!(Wire::of(&bare).map(|w| w.io), Some(true));
        let neither = std::fmt::Error;
        assert_eq!(Wire::of(&neither), None);
    }

    #[test]
    fn only_enhance_your_calm_after_pings_blames_the_pings() {
        assert!(blames_pings(Some(Reason::ENHANCE_YOUR_CALM), true));
        assert!(!blames_pings(Some(Reason::ENHANCE_YOUR_CALM), false));
        assert!(!blames_pings(Some(Reason::PROTOCOL_ERROR), true));
        assert!(!blames_pings(None, true));
    }
}

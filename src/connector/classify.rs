//! The one place where h2's errors are sorted: what a failure says about the
//! request (was it processed?) and about its connection.
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

/// h2's user errors are the ones with neither a protocol reason nor an I/O
/// cause (h2's `Kind::User`, which it does not expose by name).
fn is_user_error(e: &h2::Error) -> bool {
    e.reason().is_none() && !e.is_io()
}

/// `GOAWAY` codes that say the client (usually one request) misbehaved.
pub(crate) fn blames_the_client(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::ENHANCE_YOUR_CALM
            | Reason::PROTOCOL_ERROR
            | Reason::COMPRESSION_ERROR
            | Reason::FRAME_SIZE_ERROR
    )
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
}

//! Durations from settings, made safe to add to an `Instant`.

use std::time::Duration;

/// The longest wait any setting stands for: about 30 years, tokio's own
/// "far future". Longer settings (up to `Duration::MAX`) mean "never" in
/// practice and are treated as this, so no deadline computed from a setting
/// can overflow (which panics).
pub(crate) const LONGEST: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `d`, at most [`LONGEST`].
pub(crate) fn saturate(d: Duration) -> Duration {
    d.min(LONGEST)
}

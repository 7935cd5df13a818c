//! Generated protobuf messages and tonic clients/servers for CloudAI.
//!
//! - `MasterService` (served by the master, called by workers) and
//!   `WorkerService` (served by workers, called by the master) come from
//!   `proto/master_worker.proto`;
//! - `MasterAgent` (served by the master, called by external schedulers)
//!   comes from `proto/master_agent.proto`;
//! - `MasterAdmin` (served by the master, called by the `cloudai` CLI) comes
//!   from `proto/master_admin.proto`.
//!
//! Everything lives in [`v1`], the `cloudai.v1` protobuf package.

/// The `cloudai.v1` protobuf package.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("cloudai.v1");
}

pub use prost_types::Timestamp;

/// Converts a wall-clock time into a protobuf timestamp.
pub fn timestamp(time: std::time::SystemTime) -> Timestamp {
    Timestamp::from(time)
}

/// Latest instant a timestamp from a peer may name: the end of year 9999,
/// in seconds since the Unix epoch (what RFC 3339 and JavaScript dates hold).
pub const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

/// Converts a protobuf timestamp from a peer into milliseconds since the Unix
/// epoch; `None` for an instant before the epoch, after year 9999, or with
/// nanoseconds out of range (a malformed or hostile value, never wrapped).
pub fn timestamp_millis(ts: &Timestamp) -> Option<i64> {
    if !(0..=MAX_TIMESTAMP_SECONDS).contains(&ts.seconds) || !(0..1_000_000_000).contains(&ts.nanos)
    {
        return None;
    }
    ts.seconds
        .checked_mul(1000)?
        .checked_add(i64::from(ts.nanos / 1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64, nanos: i32) -> Option<i64> {
        timestamp_millis(&Timestamp { seconds, nanos })
    }

    #[test]
    fn timestamps_convert_within_range() {
        assert_eq!(at(0, 0), Some(0));
        assert_eq!(at(1_795_780_800, 123_456_789), Some(1_795_780_800_123));
        assert_eq!(
            at(MAX_TIMESTAMP_SECONDS, 999_999_999),
            Some(MAX_TIMESTAMP_SECONDS * 1000 + 999)
        );
    }

    #[test]
    fn extreme_timestamps_are_refused_not_wrapped() {
        for (seconds, nanos) in [
            (i64::MAX, 999_999_999),
            (i64::MAX, 0),
            (i64::MIN, 0),
            (-1, 0),
            (MAX_TIMESTAMP_SECONDS + 1, 0),
            (0, -1),
            (0, 1_000_000_000),
            (0, i32::MAX),
        ] {
            assert_eq!(at(seconds, nanos), None, "{seconds}s {nanos}ns");
        }
    }
}

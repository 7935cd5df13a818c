//! Task ids: `t-` and 12 hex digits that follow the submit time.
//!
//! The digits are the time in 10 µs ticks since 1970 (48 bits: they wrap in
//! 2059), raised past the last id this process gave so each is unique
//! here. Ids given in a row are close together, so every table keyed by task
//! id (tasks, assignments, results, output chunks) grows at its end: a commit
//! touches a few pages at the end of each tree instead of one page per task
//! scattered over the whole history. With random ids the embedded store's
//! dispatch rate fell as history grew (docs/PERFORMANCE.md); ids are not
//! secrets either way (access is checked by role and owner).
//!
//! A restarted master continues after the newest stored id when that is
//! ahead of its clock (a clock stepped back), so it never gives an id
//! again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The 48 bits of an id.
const MASK: u64 = 0xffff_ffff_ffff;

/// How far ahead of the clock a stored id may be and still be continued
/// after (a day of ticks); one further ahead is an older random id.
const AHEAD: u64 = 86_400 * 100_000;

/// The next id's value, at least: raised by the clock and by every id given.
static NEXT: AtomicU64 = AtomicU64::new(0);

fn now_ticks() -> u64 {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    u64::try_from(micros / 10).unwrap_or(u64::MAX) & MASK
}

/// A new task id, unique in this process and after every id it was told of.
pub fn new_task_id() -> String {
    NEXT.fetch_max(now_ticks(), Ordering::Relaxed);
    let value = NEXT.fetch_add(1, Ordering::Relaxed) & MASK;
    format!("t-{value:012x}")
}

/// Continues after `id` (the newest stored) if it is one of these ids and
/// ahead of the clock by less than a day.
pub fn continue_after(id: &str) {
    let Some(value) = id
        .strip_prefix("t-")
        .filter(|hex| hex.len() == 12)
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
    else {
        return;
    };
    let now = now_ticks();
    if value >= now && value - now < AHEAD {
        NEXT.fetch_max(value + 1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudai_common::validate;

    #[test]
    fn ids_are_valid_unique_and_in_order() {
        let ids: Vec<String> = (0..10_000).map(|_| new_task_id()).collect();
        assert!(ids.iter().all(|id| id.len() == 14));
        assert!(validate::id("task", &ids[0]).is_ok());
        // Fixed width: the string order is the numeric order.
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "not strictly rising");
    }

    #[test]
    fn a_stored_id_ahead_of_the_clock_is_continued_after() {
        let ahead = format!("t-{:012x}", now_ticks() + 100_000 * 3600);
        continue_after(&ahead);
        assert!(new_task_id() > ahead);
        // An old random id far ahead, or something else, changes nothing.
        let before = new_task_id();
        continue_after("t-ffffffffffff");
        continue_after("t-12");
        continue_after("w-000000000000");
        let next = new_task_id();
        assert!(next > before);
        assert!(next.as_str() < "t-ffffffffff00");
    }
}

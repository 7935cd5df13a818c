//! Reading task history a page at a time: the [`TaskQuery`] every backend
//! answers (newest first, by submission time then id), the [`TaskCursor`]
//! that says where the next page starts, and the in-memory evaluation the
//! test store and [`ResilientStore`](super::ResilientStore) share.

use super::{TaskRecord, TaskState};
use std::cmp::Reverse;
use std::fmt;

/// Most tasks one page may hold.
pub const MAX_PAGE: usize = 10_000;

/// Which tasks to read, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskQuery {
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only tasks requested on or placed on this worker.
    pub worker_id: Option<String>,
    /// Only tasks this user submitted.
    pub owner: Option<String>,
    /// Only tasks of this image (as submitted).
    pub image: Option<String>,
    /// Only tasks submitted at or after this time (Unix ms).
    pub since: Option<i64>,
    /// Only tasks submitted before this time (Unix ms).
    pub until: Option<i64>,
    /// Only tasks older than this one (the previous page's `next`).
    pub before: Option<TaskCursor>,
    /// At most this many (clamped to 1..=[`MAX_PAGE`]).
    pub limit: usize,
}

/// One page of history and where the next one starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskPage {
    /// Newest first.
    pub tasks: Vec<TaskRecord>,
    /// Set when older matching tasks may remain: pass it as `before`. A page
    /// may hold fewer than `limit` tasks and still have a next one (a backend
    /// bounds the work of one page).
    pub next: Option<TaskCursor>,
}

/// A position in history: a task's submission time and id. Its text form,
/// `<created_at>.<id>`, is what the API hands out.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskCursor {
    /// Submission time (Unix ms).
    pub created_at: i64,
    /// Task id.
    pub id: String,
}

/// A cursor that is not `<created_at>.<id>`.
#[derive(Debug, thiserror::Error)]
#[error("cursor '{0}' is not one a task listing returned (<time>.<task id>)")]
pub struct BadCursor(String);

impl TaskCursor {
    /// The position of `task`.
    pub fn of(task: &TaskRecord) -> Self {
        Self {
            created_at: task.created_at,
            id: task.id.clone(),
        }
    }

    /// Parses the text form.
    pub fn parse(text: &str) -> Result<Self, BadCursor> {
        let bad = || BadCursor(text.chars().take(80).collect());
        let (time, id) = text.split_once('.').ok_or_else(bad)?;
        let created_at = time.parse().map_err(|_| bad())?;
        if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad());
        }
        Ok(Self {
            created_at,
            id: id.to_string(),
        })
    }

    /// The sort key that puts the newest first.
    fn newest_first(&self) -> (Reverse<i64>, Reverse<&str>) {
        (Reverse(self.created_at), Reverse(self.id.as_str()))
    }
}

impl fmt::Display for TaskCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.created_at, self.id)
    }
}

/// Whether `task` comes after (is older than) the position `than`.
pub fn is_older(task: &TaskRecord, than: &TaskCursor) -> bool {
    TaskCursor::of(task).newest_first() > than.newest_first()
}

/// Newest-first order of tasks (submission time, then id, both descending).
pub fn newest_first(a: &TaskRecord, b: &TaskRecord) -> std::cmp::Ordering {
    (b.created_at, &b.id).cmp(&(a.created_at, &a.id))
}

impl TaskQuery {
    /// The page size asked for, within 1..=[`MAX_PAGE`].
    pub fn page_size(&self) -> usize {
        self.limit.clamp(1, MAX_PAGE)
    }

    /// Whether `task` passes every filter except the cursor.
    pub fn matches(&self, task: &TaskRecord) -> bool {
        self.state.is_none_or(|s| task.state == s)
            && self
                .worker_id
                .as_deref()
                .is_none_or(|w| task.worker_id.as_deref() == Some(w))
            && self.owner.as_deref().is_none_or(|o| task.owner == o)
            && self.image.as_deref().is_none_or(|i| task.image == i)
            && self.in_time_range(task.created_at)
    }

    /// Whether a submission time is within `since..until`.
    pub fn in_time_range(&self, created_at: i64) -> bool {
        self.since.is_none_or(|s| created_at >= s) && self.until.is_none_or(|u| created_at < u)
    }

    /// Whether the task at `position` is older than the cursor (or there is none).
    pub fn beyond_cursor(&self, position: &TaskCursor) -> bool {
        self.before
            .as_ref()
            .is_none_or(|c| position.newest_first() > c.newest_first())
    }

    /// The page of `tasks` (any order, any filter state) this query selects.
    pub fn page(&self, tasks: impl IntoIterator<Item = TaskRecord>) -> TaskPage {
        let mut matching: Vec<TaskRecord> = tasks
            .into_iter()
            .filter(|t| self.matches(t) && self.beyond_cursor(&TaskCursor::of(t)))
            .collect();
        matching.sort_by(newest_first);
        let size = self.page_size();
        let next = (matching.len() > size).then(|| TaskCursor::of(&matching[size - 1]));
        matching.truncate(size);
        TaskPage {
            tasks: matching,
            next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = TaskCursor {
            created_at: 1_700_000_000_123,
            id: "t-9f".into(),
        };
        assert_eq!(TaskCursor::parse(&cursor.to_string()).unwrap(), cursor);
        for bad in ["", "t-9f", "x.t-9f", "12.", "12.a b"] {
            assert!(TaskCursor::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_page_is_newest_first_and_continues_after_its_cursor() {
        let tasks: Vec<TaskRecord> = (0..5)
            .map(|n| TaskRecord::queued(&format!("t{n}"), "busybox", 100 + (n / 2)))
            .collect();
        let mut query = TaskQuery {
            limit: 2,
            ..TaskQuery::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = query.page(tasks.clone());
            seen.extend(page.tasks.iter().map(|t| t.id.clone()));
            match page.next {
                Some(next) => query.before = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, ["t4", "t3", "t2", "t1", "t0"]);
    }
}

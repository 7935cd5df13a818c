//! Worker and task ids as their own types: checked once where they enter
//! (a request, a REPL line, a URL) by [`crate::validate::id`]'s rules, and
//! trusted from then on.

use crate::validate::{self, ValidationError};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Checks `text` as the id given in `field` (named in the error).
            pub fn parse(field: &'static str, text: &str) -> Result<Self, ValidationError> {
                validate::id(field, text)?;
                Ok(Self(text.to_string()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as an owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

id_type!(
    /// A worker's id, as registered (`gpu-3`).
    WorkerId
);

id_type!(
    /// A task's id (`t-0123456789ab`).
    TaskId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_once_and_read_as_text() {
        let id = WorkerId::parse("worker id", "gpu-3").unwrap();
        assert_eq!(id, "gpu-3");
        assert_eq!(id.len(), 5);
        assert_eq!(id.to_string(), "gpu-3");
        let error = TaskId::parse("task id", "../etc").unwrap_err();
        assert!(error.to_string().starts_with("task id"), "{error}");
        assert!(TaskId::parse("task id", "").is_err());
    }
}

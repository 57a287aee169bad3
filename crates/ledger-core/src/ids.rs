//! Validated identifiers: a backend name, a task id and a run id.
//!
//! They end up in redb keys, log lines and Plane comments, so they are checked
//! once, at the edge, and carried as types afterwards.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// The longest identifier accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// Why a string was refused as an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The string was empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which identifier was being built (`backend`, `task id`, `run id`).
        kind: &'static str,
    },
    /// The string was longer than [`MAX_ID_BYTES`].
    #[error("{kind} is {len} bytes long; at most {MAX_ID_BYTES} are allowed")]
    TooLong {
        /// Which identifier was being built.
        kind: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The string held a control character (a newline, a NUL, an escape…).
    #[error("{kind} {excerpt:?} contains a control character at byte {at}")]
    ControlCharacter {
        /// Which identifier was being built.
        kind: &'static str,
        /// The beginning of the offending value, for the message.
        excerpt: String,
        /// Byte offset of the first control character.
        at: usize,
    },
}

fn validate(kind: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > MAX_ID_BYTES {
        return Err(IdError::TooLong {
            kind,
            len: value.len(),
        });
    }
    if let Some((at, _)) = value.char_indices().find(|(_, c)| c.is_control()) {
        let excerpt: String = value.chars().take(40).collect();
        return Err(IdError::ControlCharacter { kind, excerpt, at });
    }
    Ok(())
}

macro_rules! validated_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Checks `value` and wraps it.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate($kind, &value)?;
                Ok(Self(value))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        // Deserialising re-validates, so a value read back from a file can
        // never bypass the rules the constructor enforces.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                Self::new(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

validated_id!(
    /// The name of an executor backend (`local`, `claude`, …): the unit a
    /// concurrency cap applies to.
    Backend,
    "backend"
);
validated_id!(
    /// The id of a task, as the task source knows it (a Plane work-item UUID).
    TaskId,
    "task id"
);
validated_id!(
    /// The id of one dispatch of a task. A task that is retried gets a new run
    /// id each time, which is what lets a finish be conditional on the run.
    RunId,
    "run id"
);

impl RunId {
    /// A fresh run id that is unique across processes and hosts for all
    /// practical purposes: time, pid and a per-process counter, without
    /// needing a random number generator.
    pub fn generate(now: crate::Timestamp) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Self(format!(
            "r{:x}-{:x}-{:x}-{:x}",
            now.as_unix_millis(),
            std::process::id(),
            nanos,
            n
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_values() {
        assert_eq!(Backend::new("local").unwrap().as_str(), "local");
        assert!(TaskId::new("16aa1bb4-a453-47f0-8d02-635a0e02f9ad").is_ok());
        assert!(RunId::new("x".repeat(MAX_ID_BYTES)).is_ok());
    }

    #[test]
    fn refuses_bad_values_with_a_typed_error() {
        assert_eq!(Backend::new(""), Err(IdError::Empty { kind: "backend" }));
        assert_eq!(
            TaskId::new("x".repeat(MAX_ID_BYTES + 1)),
            Err(IdError::TooLong {
                kind: "task id",
                len: MAX_ID_BYTES + 1
            })
        );
        match RunId::new("ab\ncd") {
            Err(IdError::ControlCharacter { at: 2, .. }) => {}
            other => panic!("expected a control-character error, got {other:?}"),
        }
        assert!(Backend::new("a\u{0}").is_err());
    }

    #[test]
    fn deserialising_validates() {
        let err = serde_json::from_str::<TaskId>("\"\"").unwrap_err();
        assert!(err.to_string().contains("must not be empty"), "{err}");
        let ok: TaskId = serde_json::from_str("\"T-1\"").unwrap();
        assert_eq!(ok.as_str(), "T-1");
    }

    #[test]
    fn generated_run_ids_are_distinct_and_valid() {
        let now = crate::Timestamp::from_unix_millis(1_700_000_000_000);
        let a = RunId::generate(now);
        let b = RunId::generate(now);
        assert_ne!(a, b);
        assert!(RunId::new(a.as_str()).is_ok());
    }
}

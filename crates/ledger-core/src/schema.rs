//! Every redb table of the ledger, in one place, and the schema version.
//!
//! Keys are chosen so that each hot query is a range scan over exactly the
//! rows it needs: counting a backend's open slots never touches history, and
//! a rate-window check touches only that backend's starts inside the window.
//! An admission writes three tables (`open_slots`, `events`, `starts`) and a
//! finish three (`open_slots`, `events`, `attempts`): every table a commit
//! touches adds pages to write and fsync, so nothing else is indexed.
//! Values are JSON so a record stays readable (and forward-compatible with
//! added fields) without a schema tool.

use redb::TableDefinition;

/// The schema this build writes. Bump it on any incompatible change, and add
/// a file of the old schema to `tests/data/` with a test that opens it.
pub const SCHEMA_VERSION: u64 = 1;

/// Value of [`META_FORMAT`]: tells an inflight ledger from any other redb file.
pub(crate) const FORMAT_NAME: &str = "inflight-ledger";

/// `meta`: `"format"` → [`FORMAT_NAME`], `"schema_version"` → decimal string.
pub(crate) const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
pub(crate) const META_FORMAT: &str = "format";
pub(crate) const META_SCHEMA_VERSION: &str = "schema_version";

/// `open_slots`: (backend, task id) → JSON [`crate::Slot`]. Only open slots;
/// a finish deletes the row.
pub(crate) const OPEN_SLOTS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("open_slots");

/// `events`: sequence → JSON [`crate::Event`]. Append-only; retention removes
/// a prefix, so the retained sequence never has holes.
pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

/// `starts`: (backend, started at in ms, sequence) → (). The rate-window
/// index: a window check is one range scan of this backend's recent starts.
pub(crate) const STARTS: TableDefinition<(&str, i64, u64), ()> = TableDefinition::new("starts");

/// `task_events`: (task id, sequence) → (). A task's history (`explain`)
/// without reading the whole log: every event that names a task. Added
/// without a version change (an older build neither reads nor writes it),
/// so events an older build appended while sharing the file are taken in
/// later: [`META_TASK_INDEX_UPTO`] says how far the index is complete, and
/// a reader scans the log after it.
pub(crate) const TASK_EVENTS: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("task_events");

/// `meta` key: every event up to this sequence (decimal) is in
/// [`TASK_EVENTS`]. Moved to the end of the log by a read-write open and
/// by each prune (the watchdog's every scan), and by an append once it is
/// [`TASK_INDEX_STRIDE`] behind, so that a reader scans at most that much
/// of the log; the appends in between leave `meta` alone, which keeps an
/// admission's commit small.
pub(crate) const META_TASK_INDEX_UPTO: &str = "task_index_upto";

/// How far behind the log [`META_TASK_INDEX_UPTO`] may fall before an
/// append moves it.
pub(crate) const TASK_INDEX_STRIDE: u64 = 512;

/// `attempts`: task id → JSON [`crate::TaskAttempts`] of its *finished*
/// dispatches (the running ones are its open slots). Never pruned.
pub(crate) const ATTEMPTS: TableDefinition<&str, &[u8]> = TableDefinition::new("attempts");

/// `imported`: fingerprint of one `usage.json` entry → sequence of the event
/// it became. Makes re-importing a file (or a longer copy of it) a no-op for
/// what was already taken in.
pub(crate) const IMPORTED: TableDefinition<u64, u64> = TableDefinition::new("imported");

/// `plane_budget`: a Plane API key's fingerprint → JSON
/// [`crate::store::BudgetRecord`]: the times of its takes still in the
/// window and a 429's pause. Shared by every process of the host. Added
/// after schema version 1 was released without a version change: a build
/// that does not know the table never opens it.
pub(crate) const PLANE_BUDGET: TableDefinition<&str, &[u8]> = TableDefinition::new("plane_budget");

/// `boards`: a board key → JSON [`crate::store::BoardRecord`]: when its
/// snapshot was listed, a listing in progress, its hints' numbering.
/// Added, like `plane_budget`, without a version change.
pub(crate) const BOARDS: TableDefinition<&str, &[u8]> = TableDefinition::new("boards");

/// `board_bodies`: a board key → its snapshot's bytes, apart from
/// `boards` so that a look that is not served reads no body.
pub(crate) const BOARD_BODIES: TableDefinition<&str, &[u8]> = TableDefinition::new("board_bodies");

/// `board_hints`: (board key, number) → JSON [`crate::store::HintRecord`].
pub(crate) const BOARD_HINTS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("board_hints");

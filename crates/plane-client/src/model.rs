//! Plane's objects, decoded leniently: unknown keys are ignored (fields are
//! added between releases) and both forms of `state` and `labels` are
//! accepted (a bare id, or the expanded object).

use std::time::SystemTime;

use serde::{Deserialize, Deserializer};

/// A state group. Plane has six; `triage` is hidden from the v1 API but
/// decoded all the same, and anything newer is kept as `Other`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateGroup {
    /// `backlog`
    Backlog,
    /// `unstarted`
    Unstarted,
    /// `started`
    Started,
    /// `completed`
    Completed,
    /// `cancelled`
    Cancelled,
    /// `triage`
    Triage,
    /// A group this client does not know.
    Other(String),
}

impl StateGroup {
    /// The group's name as Plane spells it.
    pub fn as_str(&self) -> &str {
        match self {
            StateGroup::Backlog => "backlog",
            StateGroup::Unstarted => "unstarted",
            StateGroup::Started => "started",
            StateGroup::Completed => "completed",
            StateGroup::Cancelled => "cancelled",
            StateGroup::Triage => "triage",
            StateGroup::Other(other) => other,
        }
    }
}

impl<'de> Deserialize<'de> for StateGroup {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Ok(match raw.as_str() {
            "backlog" => StateGroup::Backlog,
            "unstarted" => StateGroup::Unstarted,
            "started" => StateGroup::Started,
            "completed" => StateGroup::Completed,
            "cancelled" => StateGroup::Cancelled,
            "triage" => StateGroup::Triage,
            _ => StateGroup::Other(raw),
        })
    }
}

/// A project state, as the state list returns it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct State {
    /// UUID.
    pub id: String,
    /// Display name, unique within the project.
    pub name: String,
    /// Group.
    pub group: StateGroup,
    /// Ordering key.
    #[serde(default)]
    pub sequence: f64,
    /// Whether new items get this state.
    #[serde(default)]
    pub default: bool,
}

/// The four-key state object of `?expand=state`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StateLite {
    /// UUID.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Group.
    pub group: StateGroup,
}

/// A work item's `state`: a bare UUID, or the object `expand=state` gives.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum StateRef {
    /// `expand=state` was honoured.
    Expanded(StateLite),
    /// The default: the state's UUID.
    Id(String),
}

impl StateRef {
    /// The state's UUID, whichever form it came in.
    pub fn id(&self) -> &str {
        match self {
            StateRef::Expanded(state) => &state.id,
            StateRef::Id(id) => id,
        }
    }
}

/// A work item's label: a bare UUID, or the object `expand=labels` gives.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum LabelRef {
    /// `expand=labels` was honoured.
    Expanded {
        /// UUID.
        id: String,
        /// Name.
        name: String,
    },
    /// The default: the label's UUID.
    Id(String),
}

impl LabelRef {
    /// The label's UUID, whichever form it came in.
    pub fn id(&self) -> &str {
        match self {
            LabelRef::Expanded { id, .. } | LabelRef::Id(id) => id,
        }
    }
}

/// A project label.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Label {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: String,
}

/// A work item (Plane's "issue").
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WorkItem {
    /// UUID.
    pub id: String,
    /// Title.
    pub name: String,
    /// Number within the project (`ROCK-12` is sequence 12).
    #[serde(default)]
    pub sequence_id: Option<u64>,
    /// The project's id (absent when a list asked for other `fields`).
    #[serde(default)]
    pub project: Option<String>,
    /// State.
    pub state: StateRef,
    /// Labels.
    #[serde(default)]
    pub labels: Vec<LabelRef>,
    /// When it was created. Plane renders timestamps in the API key owner's
    /// time zone, so any UTC offset is accepted.
    #[serde(deserialize_with = "rfc3339")]
    pub created_at: SystemTime,
    /// When it last changed (any PATCH, and any comment, moves it). Absent
    /// when a list asked for other `fields`.
    #[serde(default, deserialize_with = "rfc3339_opt")]
    pub updated_at: Option<SystemTime>,
    /// Priority: `urgent`, `high`, `medium`, `low` or `none`.
    #[serde(default)]
    pub priority: Option<String>,
}

/// A project.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Project {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: String,
    /// The short key work items are numbered under (`ROCK`).
    pub identifier: String,
}

/// A comment on a work item.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Comment {
    /// UUID.
    pub id: String,
    /// The comment's HTML.
    pub comment_html: String,
}

/// One page of a list.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Page<T> {
    pub(crate) results: Vec<T>,
    #[serde(default)]
    pub(crate) next_cursor: Option<String>,
    #[serde(default)]
    pub(crate) next_page_results: bool,
    #[serde(default)]
    pub(crate) total_count: u64,
}

/// Parses RFC 3339 with any offset (`Z`, `+05:30`, …) into a `SystemTime`.
pub fn parse_timestamp(text: &str) -> Result<SystemTime, String> {
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{text:?} is not an RFC 3339 timestamp: {e}"))?;
    let nanos = parsed.unix_timestamp_nanos();
    let since_epoch =
        std::time::Duration::from_nanos(u64::try_from(nanos.unsigned_abs()).unwrap_or(u64::MAX));
    Ok(if nanos >= 0 {
        SystemTime::UNIX_EPOCH + since_epoch
    } else {
        SystemTime::UNIX_EPOCH - since_epoch
    })
}

fn rfc3339<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
    let raw = String::deserialize(d)?;
    parse_timestamp(&raw).map_err(serde::de::Error::custom)
}

fn rfc3339_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
    match Option::<String>::deserialize(d)? {
        Some(raw) => parse_timestamp(&raw)
            .map(Some)
            .map_err(serde::de::Error::custom),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_other_than_z_name_the_same_instant() {
        let utc = parse_timestamp("2026-11-28T18:07:01.324491Z").unwrap();
        let kolkata = parse_timestamp("2026-11-28T23:37:01.324491+05:30").unwrap();
        let new_york = parse_timestamp("2026-11-28T13:07:01.324491-05:00").unwrap();
        assert_eq!(utc, kolkata);
        assert_eq!(utc, new_york);
        assert!(parse_timestamp("2026-11-28").is_err());
    }

    #[test]
    fn state_decodes_in_both_forms() {
        let bare: StateRef = serde_json::from_str(r#""86ac""#).unwrap();
        assert_eq!(bare.id(), "86ac");
        let expanded: StateRef = serde_json::from_str(
            r##"{"id":"86ac","name":"Done","color":"#46A758","group":"completed"}"##,
        )
        .unwrap();
        assert_eq!(expanded.id(), "86ac");
        assert!(matches!(
            expanded,
            StateRef::Expanded(StateLite {
                group: StateGroup::Completed,
                ..
            })
        ));
        let odd: StateGroup = serde_json::from_str(r#""someday""#).unwrap();
        assert_eq!(odd, StateGroup::Other("someday".into()));
    }
}

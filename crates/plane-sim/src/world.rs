//! The simulator's data and how Plane renders it.
//!
//! Shapes follow the recorded responses of a real Plane server
//! (`crates/plane-client/tests/fixtures/`): the same keys with the same JSON
//! types, timestamps with microseconds, `state` as a bare id unless
//! `expand=state` asks for the four-key object.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::webhooks::{Change, Outgoing, SimWebhook, payload, sign};

/// One state of the project.
#[derive(Debug, Clone, PartialEq)]
pub struct SimState {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Group: backlog, unstarted, started, completed, cancelled.
    pub group: String,
    /// Colour.
    pub color: String,
    /// Ordering.
    pub sequence: f64,
    /// Whether new items get it.
    pub default: bool,
    /// URL slug: empty for the states project creation inserts, the
    /// slugified name for states created later (as Plane does).
    pub slug: String,
}

/// One label of the project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimLabel {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Colour.
    pub color: String,
}

/// One work item.
#[derive(Debug, Clone, PartialEq)]
pub struct SimWorkItem {
    /// UUID.
    pub id: String,
    /// Title.
    pub name: String,
    /// Number within the project.
    pub sequence_id: u64,
    /// Current state's id.
    pub state_id: String,
    /// Label ids.
    pub labels: Vec<String>,
    /// Priority.
    pub priority: String,
    /// Creation time.
    pub created_at: SystemTime,
    /// Last change.
    pub updated_at: SystemTime,
    /// Soft-deleted: every read answers 404.
    pub deleted: bool,
    /// Archived: reads answer 404, PATCH still works.
    pub archived: bool,
}

/// One comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimComment {
    /// UUID.
    pub id: String,
    /// The work item's id.
    pub item_id: String,
    /// HTML.
    pub html: String,
    /// Creation time.
    pub created_at: SystemTime,
}

/// Everything the simulator serves.
#[derive(Debug, Clone)]
pub(crate) struct World {
    pub(crate) workspace_slug: String,
    pub(crate) workspace_id: String,
    pub(crate) user_id: String,
    pub(crate) project_id: String,
    pub(crate) project_name: String,
    pub(crate) project_identifier: String,
    pub(crate) created_at: SystemTime,
    pub(crate) states: Vec<SimState>,
    pub(crate) labels: Vec<SimLabel>,
    pub(crate) items: Vec<SimWorkItem>,
    pub(crate) comments: Vec<SimComment>,
    /// Other projects of the workspace, with no work items.
    pub(crate) other_projects: Vec<String>,
    /// Registered webhooks.
    pub(crate) webhooks: Vec<SimWebhook>,
    /// Deliveries of changes made under the lock, sent once it is released.
    pub(crate) outbox: Vec<Outgoing>,
    next_id: u64,
    id_salt: u64,
}

/// A v4-shaped UUID from a counter and a per-simulator salt: unique within a
/// run, and shaped like what Plane's `uuid` route converter accepts.
fn make_uuid(salt: u64, n: u64) -> String {
    let a = salt ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        (a >> 32) as u32,
        (a >> 16) as u16,
        (n & 0xfff) as u16,
        0x8000 | ((n >> 12) & 0x3fff) as u16,
        (a ^ (n << 20)) & 0xffff_ffff_ffff
    )
}

/// Whether `s` has the 8-4-4-4-12 hex shape Django's `uuid` converter
/// matches.
pub(crate) fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl World {
    pub(crate) fn new(
        workspace_slug: &str,
        project_id: Option<&str>,
        identifier: &str,
        salt: u64,
    ) -> Self {
        let mut world = World {
            workspace_slug: workspace_slug.to_owned(),
            workspace_id: String::new(),
            user_id: String::new(),
            project_id: String::new(),
            project_name: "Rocket".into(),
            project_identifier: identifier.to_owned(),
            created_at: SystemTime::now(),
            states: Vec::new(),
            labels: Vec::new(),
            items: Vec::new(),
            comments: Vec::new(),
            other_projects: Vec::new(),
            webhooks: Vec::new(),
            outbox: Vec::new(),
            next_id: 1,
            id_salt: salt,
        };
        world.workspace_id = world.new_id();
        world.user_id = world.new_id();
        world.project_id = project_id
            .map(str::to_owned)
            .unwrap_or_else(|| world.new_id());
        // The states project creation inserts (Plane's DEFAULT_STATES), plus
        // the ones an inflight board typically adds.
        for (name, group, color, sequence, default) in [
            ("Backlog", "backlog", "#60646C", 15000.0, true),
            ("Todo", "unstarted", "#60646C", 25000.0, false),
            ("In Progress", "started", "#F59E0B", 35000.0, false),
            ("Done", "completed", "#46A758", 45000.0, false),
            ("Cancelled", "cancelled", "#9AA4BC", 55000.0, false),
        ] {
            let id = world.new_id();
            world.states.push(SimState {
                id,
                name: name.into(),
                group: group.into(),
                color: color.into(),
                sequence,
                default,
                slug: String::new(),
            });
        }
        world
    }

    pub(crate) fn new_id(&mut self) -> String {
        let n = self.next_id;
        self.next_id += 1;
        make_uuid(self.id_salt, n)
    }

    pub(crate) fn state_by_name(&self, name: &str) -> Option<&SimState> {
        self.states
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name.trim()))
    }

    /// Queues the deliveries of a change to a work item (none when
    /// nothing changed or no webhook is registered): one per changed field
    /// and registered webhook, in the order Plane reports the fields.
    pub(crate) fn changed(&mut self, before: &SimWorkItem, after: &SimWorkItem) {
        let mut changes: Vec<Change> = Vec::new();
        if before.state_id != after.state_id {
            changes.push(("state", json!(before.state_id), json!(after.state_id)));
        }
        if before.priority != after.priority {
            changes.push(("priority", json!(before.priority), json!(after.priority)));
        }
        if before.name != after.name {
            changes.push(("name", json!(before.name), json!(after.name)));
        }
        for hook in self.webhooks.clone() {
            if !hook.active {
                continue;
            }
            for change in &changes {
                let data = self.render_item(after, &["state", "labels"]);
                let body = payload(&hook, &self.workspace_id, &self.user_id, data, change);
                let outgoing = Outgoing {
                    hook_id: hook.id.clone(),
                    attempt: 0,
                    url: hook.url.clone(),
                    delivery_id: self.new_id(),
                    item_id: after.id.clone(),
                    field: change.0.to_owned(),
                    signature: sign(&hook.secret, &body),
                    body,
                };
                self.outbox.push(outgoing);
            }
        }
    }

    pub(crate) fn state(&self, id: &str) -> Option<&SimState> {
        self.states.iter().find(|s| s.id == id)
    }

    /// Adds a state as `POST /states/` does: a fresh id, the slugified
    /// name, and a sequence 15000 above the last.
    pub(crate) fn create_state(&mut self, name: &str, group: &str, color: &str) -> SimState {
        let sequence = self.states.iter().map(|s| s.sequence).fold(0.0, f64::max) + 15_000.0;
        let state = SimState {
            id: self.new_id(),
            name: name.to_owned(),
            group: group.to_owned(),
            color: color.to_owned(),
            sequence,
            default: false,
            slug: slugify(name),
        };
        self.states.push(state.clone());
        self.states
            .sort_by(|a, b| a.sequence.total_cmp(&b.sequence));
        state
    }

    /// Deletes a state as `DELETE /states/{id}/` does, refusing the
    /// default state and a state that still holds work items with Plane's
    /// words.
    pub(crate) fn delete_state(&mut self, id: &str) -> Result<(), StateRefusal> {
        let Some(state) = self.state(id) else {
            return Err(StateRefusal::Missing);
        };
        if state.default {
            return Err(StateRefusal::Refused("Default state cannot be deleted"));
        }
        if self.items.iter().any(|i| i.state_id == id && !i.deleted) {
            return Err(StateRefusal::Refused(
                "The state is not empty, only empty states can be deleted",
            ));
        }
        self.states.retain(|s| s.id != id);
        Ok(())
    }

    /// Deletes a label; work items lose it. Whether it existed.
    pub(crate) fn delete_label(&mut self, id: &str) -> bool {
        let existed = self.labels.iter().any(|l| l.id == id);
        self.labels.retain(|l| l.id != id);
        for item in &mut self.items {
            item.labels.retain(|l| l != id);
        }
        existed
    }

    pub(crate) fn default_state_id(&self) -> String {
        self.states
            .iter()
            .find(|s| s.default)
            .or(self.states.first())
            .map(|s| s.id.clone())
            .unwrap_or_default()
    }

    /// The items the list and GET show: not deleted, not archived.
    pub(crate) fn visible(&self, id: &str) -> Option<&SimWorkItem> {
        self.items
            .iter()
            .find(|i| i.id == id && !i.deleted && !i.archived)
    }

    pub(crate) fn render_item(&self, item: &SimWorkItem, expand: &[&str]) -> Value {
        let state = if expand.contains(&"state") {
            self.state(&item.state_id)
                .map(|s| json!({"id": s.id, "name": s.name, "color": s.color, "group": s.group}))
                .unwrap_or(Value::Null)
        } else {
            Value::String(item.state_id.clone())
        };
        let labels: Vec<Value> = if expand.contains(&"labels") {
            item.labels
                .iter()
                .filter_map(|id| self.labels.iter().find(|l| &l.id == id))
                .map(|l| self.render_label(l))
                .collect()
        } else {
            item.labels
                .iter()
                .map(|id| Value::String(id.clone()))
                .collect()
        };
        let completed = self
            .state(&item.state_id)
            .is_some_and(|s| s.group == "completed");
        json!({
            "id": item.id,
            "type_id": null,
            "created_at": timestamp(item.created_at),
            "updated_at": timestamp(item.updated_at),
            "deleted_at": null,
            "point": null,
            "name": item.name,
            "description_html": "<p></p>",
            "description_binary": null,
            "priority": item.priority,
            "start_date": null,
            "target_date": null,
            "sequence_id": item.sequence_id,
            "sort_order": 65535.0 + 10000.0 * (item.sequence_id as f64 - 1.0),
            "completed_at": if completed { Value::String(timestamp(item.updated_at)) } else { Value::Null },
            "archived_at": null,
            "is_draft": false,
            "external_source": null,
            "external_id": null,
            "created_by": self.user_id,
            "updated_by": null,
            "project": self.project_id,
            "workspace": self.workspace_id,
            "parent": null,
            "state": state,
            "estimate_point": null,
            "type": null,
            "assignees": [],
            "labels": labels,
        })
    }

    pub(crate) fn render_state(&self, s: &SimState) -> Value {
        json!({
            "id": s.id,
            "created_at": timestamp(self.created_at),
            "updated_at": timestamp(self.created_at),
            "deleted_at": null,
            "name": s.name,
            "description": "",
            "color": s.color,
            "slug": s.slug,
            "sequence": s.sequence,
            "group": s.group,
            "is_triage": false,
            "default": s.default,
            "external_source": null,
            "external_id": null,
            "created_by": self.user_id,
            "updated_by": null,
            "project": self.project_id,
            "workspace": self.workspace_id,
        })
    }

    pub(crate) fn render_label(&self, l: &SimLabel) -> Value {
        // Plane gives each new label a sort order 10000 above the last.
        let position = self.labels.iter().position(|x| x.id == l.id).unwrap_or(0);
        json!({
            "id": l.id,
            "created_at": timestamp(self.created_at),
            "updated_at": timestamp(self.created_at),
            "deleted_at": null,
            "name": l.name,
            "description": "",
            "color": l.color,
            "sort_order": 65535.0 + 10_000.0 * position as f64,
            "external_source": null,
            "external_id": null,
            "created_by": self.user_id,
            "updated_by": null,
            "workspace": self.workspace_id,
            "project": self.project_id,
            "parent": null,
        })
    }

    pub(crate) fn render_comment(&self, c: &SimComment, in_list: bool) -> Value {
        let mut value = json!({
            "id": c.id,
            "created_at": timestamp(c.created_at),
            "updated_at": timestamp(c.created_at),
            "deleted_at": null,
            "comment_html": c.html,
            "attachments": [],
            "access": "INTERNAL",
            "external_source": null,
            "external_id": null,
            "edited_at": null,
            "created_by": self.user_id,
            "updated_by": self.user_id,
            "project": self.project_id,
            "workspace": self.workspace_id,
            "description": c.id,
            "issue": c.item_id,
            "actor": self.user_id,
            "parent": null,
        });
        if in_list && let Some(obj) = value.as_object_mut() {
            obj.insert("is_member".into(), Value::Bool(true));
        }
        value
    }

    pub(crate) fn render_project(&self) -> Value {
        json!({
            "id": self.project_id,
            "total_members": 1,
            "total_cycles": 0,
            "total_modules": 0,
            "is_member": true,
            "member_role": 20,
            "is_deployed": false,
            "cover_image_url": null,
            "created_at": timestamp(self.created_at),
            "updated_at": timestamp(self.created_at),
            "deleted_at": null,
            "name": self.project_name,
            "description": "",
            "description_text": null,
            "description_html": null,
            "network": 2,
            "identifier": self.project_identifier,
            "emoji": null,
            "icon_prop": null,
            "module_view": false,
            "cycle_view": false,
            "issue_views_view": false,
            "page_view": true,
            "intake_view": false,
            "is_time_tracking_enabled": false,
            "is_issue_type_enabled": false,
            "guest_view_all_features": false,
            "cover_image": null,
            "archive_in": 0,
            "close_in": 0,
            "logo_props": {},
            "archived_at": null,
            "timezone": "UTC",
            "external_source": null,
            "external_id": null,
            "created_by": self.user_id,
            "updated_by": null,
            "workspace": self.workspace_id,
            "default_assignee": null,
            "project_lead": null,
            "cover_image_asset": null,
            "estimate": null,
            "default_state": self.default_state_id(),
        })
    }
}

/// Why a state could not be deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StateRefusal {
    /// No state has that id.
    Missing,
    /// Plane's 400, with its message.
    Refused(&'static str),
}

/// Django's `slugify`: lower case, runs of anything but letters, digits and
/// `-` become one `-`.
fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.trim().chars() {
        if c.is_alphanumeric() || c == '_' {
            slug.extend(c.to_lowercase());
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.trim_matches('-').to_owned()
}

/// `2026-11-28T18:02:28.015451Z`: Plane's format, microseconds and `Z`.
pub(crate) fn timestamp(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs() as i64;
    let micros = since.subsec_micros();
    let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        of_day / 3600,
        (of_day / 60) % 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuid_shaped_and_distinct() {
        let a = make_uuid(42, 1);
        let b = make_uuid(42, 2);
        assert!(is_uuid(&a), "{a}");
        assert_ne!(a, b);
        assert!(!is_uuid("not-a-uuid"));
        assert!(is_uuid("16aa1bb4-a453-47f0-8d02-635a0e02f9ad"));
    }

    #[test]
    fn slugs_are_django_s() {
        assert_eq!(slugify("Ready for AI"), "ready-for-ai");
        assert_eq!(slugify("Review"), "review");
        assert_eq!(slugify("  In  Progress! "), "in-progress");
    }

    #[test]
    fn timestamps_look_like_plane_s() {
        let at = UNIX_EPOCH + Duration::from_micros(1_795_888_948_015_451);
        assert_eq!(timestamp(at), "2026-11-28T18:02:28.015451Z");
    }
}

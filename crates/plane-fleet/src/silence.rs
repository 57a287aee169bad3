//! Whether webhook deliveries still arrive, judged from the board.
//!
//! Plane sends a failed delivery again after a random delay of up to ten
//! minutes and, after five failures in a row (a receiver down during a
//! deploy, a proxy refusing), sets the webhook inactive and sends nothing
//! more until someone enables it. Nothing tells the receiver. What shows
//! it is the board: a task that entered a watched state (a role's claim
//! state) since the last look, and that no delivery named within a grace
//! period after that look, was missed. [`Silence`] keeps that judgement
//! for a runner (which then polls at the normal interval instead of the
//! webhook one) and for the watchdog (which says so in its log and its
//! metrics).

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::Instant;

/// How long after a look a delivery may still name a task the look found
/// (Plane sends its deliveries a fraction of a second after the change; a
/// listing can see the change first).
pub const DELIVERY_GRACE: Duration = Duration::from_secs(5);

/// The judgement on deliveries: see the module's documentation.
#[derive(Debug, Default)]
pub struct Silence {
    /// The watched tasks at the last look (`None`: no look yet).
    previous: Option<HashSet<String>>,
    /// Tasks a delivery named since the last look.
    heard: HashSet<String>,
    /// Tasks that entered a watched state unannounced, and when the look
    /// that found them was.
    suspects: Vec<(String, Instant)>,
    /// While silent: the tasks whose deliveries were missed.
    missed: Option<Vec<String>>,
}

impl Silence {
    /// A look at the board at `now` found `watched` (the ids of the tasks
    /// in a watched state). Those that entered since the last look and
    /// that no delivery named become suspects, judged once the grace is
    /// over ([`Silence::judge`]).
    pub fn looked(&mut self, watched: impl IntoIterator<Item = String>, now: Instant) {
        let watched: HashSet<String> = watched.into_iter().collect();
        if let Some(previous) = &self.previous {
            for task in watched.difference(previous) {
                if !self.heard.contains(task) {
                    self.suspects.push((task.clone(), now));
                }
            }
        }
        self.previous = Some(watched);
        self.heard.clear();
    }

    /// Deliveries named `tasks`. Any delivery at all means they arrive:
    /// true when that ends a silence.
    pub fn heard(&mut self, tasks: impl IntoIterator<Item = String>) -> bool {
        let mut any = false;
        for task in tasks {
            any = true;
            self.suspects.retain(|(suspect, _)| *suspect != task);
            self.heard.insert(task);
        }
        any && self.missed.take().is_some()
    }

    /// Suspects past the grace with no delivery: deliveries are being
    /// missed. The missed tasks when this starts a silence, else `None`.
    pub fn judge(&mut self, now: Instant) -> Option<Vec<String>> {
        let (late, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.suspects)
            .into_iter()
            .partition(|(_, at)| now.duration_since(*at) >= DELIVERY_GRACE);
        self.suspects = waiting;
        if late.is_empty() {
            return None;
        }
        let late: Vec<String> = late.into_iter().map(|(task, _)| task).collect();
        match &mut self.missed {
            Some(missed) => {
                missed.extend(late);
                None
            }
            None => {
                self.missed = Some(late.clone());
                Some(late)
            }
        }
    }

    /// Whether deliveries are being missed (until one arrives).
    pub fn is_silent(&self) -> bool {
        self.missed.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn a_task_entering_unannounced_means_deliveries_are_missed() {
        let t0 = Instant::now();
        let mut silence = Silence::default();
        // The first look only learns what is there.
        silence.looked(ids(&["a"]), t0);
        assert_eq!(silence.judge(t0 + DELIVERY_GRACE), None);
        // b arrives announced, c not.
        silence.heard(ids(&["b"]));
        silence.looked(ids(&["a", "b", "c"]), t0 + Duration::from_secs(300));
        // A late delivery within the grace still counts.
        assert_eq!(silence.judge(t0 + Duration::from_secs(301)), None);
        assert_eq!(
            silence.judge(t0 + Duration::from_secs(305)),
            Some(ids(&["c"]))
        );
        assert!(silence.is_silent());
        // Said once; more missed tasks extend it quietly.
        silence.looked(ids(&["a", "b", "c", "d"]), t0 + Duration::from_secs(330));
        assert_eq!(silence.judge(t0 + Duration::from_secs(340)), None);
        assert!(silence.is_silent());
        // Any delivery ends it.
        assert!(silence.heard(ids(&["z"])));
        assert!(!silence.is_silent());
        assert!(!silence.heard(ids(&["z"])));
    }

    #[test]
    fn a_delivery_within_the_grace_clears_its_suspect() {
        let t0 = Instant::now();
        let looked = |silence: &mut Silence| {
            silence.looked(ids(&[]), t0);
            silence.looked(ids(&["x"]), t0 + Duration::from_secs(30));
        };
        // Unheard, x is judged once its grace is over, not before.
        let mut unheard = Silence::default();
        looked(&mut unheard);
        let grace_ends = t0 + Duration::from_secs(30) + DELIVERY_GRACE;
        assert_eq!(unheard.judge(grace_ends - Duration::from_millis(1)), None);
        assert_eq!(unheard.judge(grace_ends), Some(ids(&["x"])));
        // Heard within the grace, it is no suspect any more.
        let mut silence = Silence::default();
        looked(&mut silence);
        silence.heard(ids(&["x"]));
        assert_eq!(silence.judge(t0 + Duration::from_secs(60)), None);
        assert!(!silence.is_silent());
    }
}

//! The bad-update guard every trainer uses: an update whose loss is NaN or infinite is skipped
//! with a warning, and the run stops once `max_bad_updates` of them came in a row (a diverged
//! run should fail, not burn its budget on skipped updates).

use anyhow::Result;
use serde::{Deserialize, Serialize};

/// Consecutive updates with a non-finite loss. Saved in a method's checkpoint state as a plain
/// count (`bad_updates: 0`), so checkpoints keep their format.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(transparent)]
pub struct BadUpdateGuard(u64);

impl BadUpdateGuard {
    /// Records one update: `skipped` is None when its loss was finite (the count resets), else
    /// what was skipped, printed as a warning. Fails once `max` bad updates came in a row;
    /// `unit` names what is counted in that message ("updates", "steps").
    pub fn record(&mut self, skipped: Option<String>, unit: &str, max: usize) -> Result<()> {
        let Some(what) = skipped else {
            self.0 = 0;
            return Ok(());
        };
        self.0 += 1;
        eprintln!("warning: {what}");
        anyhow::ensure!(
            self.0 < max as u64,
            "stopping: {} consecutive {unit} with non-finite losses (max_bad_updates = {max})",
            self.0
        );
        Ok(())
    }

    /// Records PPO update number `update`, of whose `minibatches` minibatches `skipped` had a
    /// non-finite loss (and were skipped); an update with any skipped minibatch counts as bad.
    pub fn record_update(
        &mut self,
        update: u64,
        skipped: usize,
        minibatches: usize,
        max: usize,
    ) -> Result<()> {
        let message = (skipped > 0).then(|| {
            format!(
                "update {update}: {skipped} of {minibatches} minibatches had a non-finite loss \
                 and were skipped"
            )
        });
        self.record(message, "updates", max)
    }

    /// Records one supervised optimiser step (`loss` None: its loss was not finite and the
    /// step was skipped), named by its index `step` in the warning.
    pub fn record_step(&mut self, loss: Option<f64>, step: u64, max: usize) -> Result<()> {
        let skipped = loss
            .is_none()
            .then(|| format!("step {step}: non-finite loss, update skipped"));
        self.record(skipped, "steps", max)
    }

    /// Bad updates in a row so far.
    pub fn count(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_after_max_bad_updates_in_a_row_and_resets_on_a_good_one() {
        let mut g = BadUpdateGuard::default();
        g.record(Some("update 1".into()), "updates", 3).unwrap();
        g.record(Some("update 2".into()), "updates", 3).unwrap();
        assert_eq!(g.count(), 2);
        g.record(None, "updates", 3).unwrap();
        assert_eq!(g.count(), 0);
        g.record(Some("a".into()), "steps", 2).unwrap();
        let err = g.record(Some("b".into()), "steps", 2).unwrap_err();
        assert!(
            format!("{err}").contains("2 consecutive steps with non-finite losses"),
            "{err}"
        );
    }

    #[test]
    fn serialises_as_the_plain_count_of_older_checkpoints() {
        #[derive(Serialize, Deserialize)]
        struct State {
            bad_updates: BadUpdateGuard,
        }
        let s: State = serde_json::from_str(r#"{"bad_updates": 2}"#).unwrap();
        assert_eq!(s.bad_updates.count(), 2);
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"{"bad_updates":2}"#);
    }
}

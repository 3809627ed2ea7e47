//! Retrying an external service and reporting its outage: one policy for the Kafka source
//! and every sink.
//!
//! A failed attempt is retried after [`backoff`] (0.1 s doubling to 5 s). Each failure goes
//! to the shared [`Health`] at once (so `/readyz` answers 503 while it lasts); the log says
//! it once per outage: one `warn` line when the outage has lasted
//! [`Outages::report_after`] (what fails, what is retried, what to check), one `info` line
//! when it ends (how long, how many attempts), `debug` for every other attempt and for an
//! outage too short to be reported. Once an outage has lasted
//! [`Outages::give_up_after`], [`Outages::failed`] says to give up (one `error` line) and
//! the caller stops the run with its error.

use std::time::Duration;

use crate::health::Health;

/// The first pause after a failed attempt.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The longest pause between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The pause after failed attempt `attempt` (0-based): [`FIRST_BACKOFF`] doubling to
/// [`MAX_BACKOFF`].
pub fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << attempt.min(16))
        .min(MAX_BACKOFF)
}

/// What the caller of [`Outages::failed`] does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Pause for [`backoff`] and try again.
    Retry,
    /// The outage has lasted [`Outages::give_up_after`]: stop with the error.
    GiveUp {
        /// How long the component has been failing.
        lasted: Duration,
    },
}

/// How one member (a source worker, the sink writer) reports its attempts at one component
/// of the shared [`Health`], and the words its log lines use.
#[derive(Clone, Debug)]
pub struct Outages<'a> {
    /// The shared failure state.
    pub health: &'a Health,
    /// The [`Health`] component (`kafka`, `redis`, …).
    pub component: &'a str,
    /// This member of the component (the source's workers are 0, 1, …).
    pub member: usize,
    /// What fails, as log lines name it: `Kafka`, `sink redis`.
    pub name: &'a str,
    /// What it was doing, said after "is failing": ` (reading)`, ` (writing alerts)`, or empty.
    pub doing: &'a str,
    /// What happens meanwhile, said right after how long attempts are retried (so it starts
    /// with a space or a semicolon).
    pub meanwhile: &'a str,
    /// What an operator should check is running and reachable: `the broker`, `Redis`.
    pub service: &'a str,
    /// What resumes when it recovers: `reading resumes`, `writing resumes`.
    pub resumes: &'a str,
    /// How long an outage lasts before it is logged (0: at the first failure). Shorter ones
    /// count and make `/readyz` answer 503, but are logged at `debug` only.
    pub report_after: Duration,
    /// How long an outage may last before the caller gives up; `None` retries forever.
    pub give_up_after: Option<Duration>,
}

impl Outages<'_> {
    /// Records failed attempt `attempt` (counted from 0 within the outage) with `error`;
    /// logs as the module docs say and tells whether to retry or give up.
    pub fn failed(&self, attempt: u32, error: &str) -> Next {
        let Outages { name, doing, .. } = *self;
        self.health.failed(self.component, self.member, error);
        let lasted = self.health.failing_for(self.component).unwrap_or_default();
        if lasted >= self.report_after && self.health.announce(self.component) {
            tracing::warn!(
                error = %error,
                "{name} is failing{doing}: retried with backoff ({:.1} s doubling to {:.0} s) for {}{}. \
                 Check that {} is running and reachable",
                FIRST_BACKOFF.as_secs_f64(),
                MAX_BACKOFF.as_secs_f64(),
                self.limit(),
                self.meanwhile,
                self.service,
            );
        } else {
            tracing::debug!(member = self.member, attempt, error = %error, "{name} failed{doing}; retrying");
        }
        match self.give_up_after {
            Some(limit) if lasted >= limit => {
                tracing::error!(
                    error = %error,
                    "{name} has failed{doing} for {:.0} s: giving up; the run stops",
                    lasted.as_secs_f64()
                );
                Next::GiveUp { lasted }
            }
            _ => Next::Retry,
        }
    }

    /// Records a successful attempt: logs the end of the outage when this member was the
    /// last one failing (at `debug` if the outage was too short to be reported).
    pub fn succeeded(&self) {
        let Some(outage) = self.health.recovered(self.component, self.member) else {
            return;
        };
        let name = self.name;
        if outage.announced {
            tracing::info!(
                down_s = outage.lasted.as_secs_f64(),
                failed_attempts = outage.attempts,
                "{name} recovered after {:.1} s ({} failed attempts); {}",
                outage.lasted.as_secs_f64(),
                outage.attempts,
                self.resumes,
            );
        } else {
            tracing::debug!(
                down_s = outage.lasted.as_secs_f64(),
                failed_attempts = outage.attempts,
                "{name} works again after a brief failure"
            );
        }
    }

    /// How long attempts are retried, in words.
    fn limit(&self) -> String {
        match self.give_up_after {
            Some(d) => format!("up to {} s", d.as_secs()),
            None => "ever".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outages<'a>(health: &'a Health, member: usize, give_up: Option<Duration>) -> Outages<'a> {
        Outages {
            health,
            component: "kafka",
            member,
            name: "Kafka",
            doing: " (reading)",
            meanwhile: " while the pipeline waits",
            service: "the broker",
            resumes: "reading resumes",
            report_after: Duration::ZERO,
            give_up_after: give_up,
        }
    }

    #[test]
    fn backoff_doubles_from_a_tenth_of_a_second_to_five_seconds() {
        let pauses: Vec<u64> = (0..9).map(|a| backoff(a).as_millis() as u64).collect();
        assert_eq!(
            pauses,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000],
            "pauses after attempts 0..9"
        );
        assert_eq!(
            backoff(u32::MAX),
            MAX_BACKOFF,
            "no overflow however many attempts"
        );
    }

    #[test]
    fn failures_go_to_the_shared_health_and_recover_with_the_last_member() {
        let health = Health::new();
        let (a, b) = (outages(&health, 0, None), outages(&health, 1, None));
        assert_eq!(a.failed(0, "refused"), Next::Retry);
        assert_eq!(b.failed(0, "refused"), Next::Retry);
        assert!(!health.is_healthy());
        assert!(
            !health.announce("kafka"),
            "the first failure was announced already (report_after 0)"
        );
        a.succeeded();
        assert!(!health.is_healthy(), "member 1 still fails");
        b.succeeded();
        assert!(health.is_healthy());
    }

    #[test]
    fn an_outage_longer_than_the_limit_gives_up_and_a_shorter_one_does_not() {
        let health = Health::new();
        let patient = outages(&health, 0, Some(Duration::from_secs(3600)));
        assert_eq!(patient.failed(0, "down"), Next::Retry);
        let impatient = outages(&health, 1, Some(Duration::ZERO));
        match impatient.failed(0, "down") {
            Next::GiveUp { lasted } => assert!(lasted < Duration::from_secs(3600), "{lasted:?}"),
            Next::Retry => panic!("a zero limit gives up at the first failure"),
        }
    }

    #[test]
    fn an_outage_shorter_than_report_after_is_not_announced() {
        let health = Health::new();
        let source = Outages {
            report_after: Duration::from_secs(3600),
            ..outages(&health, 0, None)
        };
        assert_eq!(source.failed(0, "timed out"), Next::Retry);
        assert!(
            health.announce("kafka"),
            "not announced by the failure: the caller may still"
        );
        source.succeeded();
        assert!(health.is_healthy());
    }
}

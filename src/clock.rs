//! The clock: "now" for planning, expiry and rotation. Owns the test-only override
//! `KEYWARD_NOW` (RFC 3339), documented as such; must not be used to fake time in production.

use chrono::{DateTime, Utc};

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock, unless `KEYWARD_NOW` is set (tests and demos only).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        match std::env::var("KEYWARD_NOW") {
            Ok(v) => DateTime::parse_from_rfc3339(v.trim())
                .map(|d| d.with_timezone(&Utc))
                .unwrap_or_else(|_| Utc::now()),
            Err(_) => Utc::now(),
        }
    }
}

/// The instant `KEYWARD_NOW` names, if it is set; an error saying what is wrong (never
/// ignored: a test clock that silently falls back to the system clock misleads).
pub fn env_override() -> Result<Option<DateTime<Utc>>, String> {
    let Ok(v) = std::env::var("KEYWARD_NOW") else {
        return Ok(None);
    };
    DateTime::parse_from_rfc3339(v.trim())
        .map(|d| Some(d.with_timezone(&Utc)))
        .map_err(|_| {
            let shown: String = v.chars().take(40).collect();
            format!(
                "KEYWARD_NOW=`{shown}` is not an RFC 3339 time (e.g. 2027-01-10T12:00:00Z); set a valid one or unset it to use the system clock"
            )
        })
}

/// A fixed instant, for tests.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

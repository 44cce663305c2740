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

/// A fixed instant, for tests.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

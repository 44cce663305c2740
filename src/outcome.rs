//! The outcome of a command as the documented process exit code (0 success or no changes,
//! 1 error, 2 changes, 3 refused by a guard). Owns only the meaning of the four codes; must
//! not print, decide or exit.

/// What a command came to; `code()` is its exit code (Terraform-like).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Success; with --detailed-exitcode: no changes.
    Ok,
    /// An error, including an invalid spec.
    Error,
    /// With --detailed-exitcode: there are changes.
    Changes,
    /// Refused by a guard: lock held, stale plan, safety threshold, policy, dirty tree.
    Refused,
}

impl Outcome {
    /// The process exit code.
    pub const fn code(self) -> i32 {
        match self {
            Outcome::Ok => 0,
            Outcome::Error => 1,
            Outcome::Changes => 2,
            Outcome::Refused => 3,
        }
    }

    /// `Ok` when `ok`, else `Error`.
    pub const fn ok_if(ok: bool) -> Outcome {
        if ok { Outcome::Ok } else { Outcome::Error }
    }
}

#[cfg(test)]
mod tests {
    use super::Outcome;

    #[test]
    fn codes_are_the_documented_ones() {
        let codes: Vec<i32> = [
            Outcome::Ok,
            Outcome::Error,
            Outcome::Changes,
            Outcome::Refused,
        ]
        .iter()
        .map(|o| o.code())
        .collect();
        assert_eq!(codes, [0, 1, 2, 3]);
        assert_eq!(Outcome::ok_if(false), Outcome::Error);
        assert_eq!(Outcome::ok_if(true), Outcome::Ok);
    }
}

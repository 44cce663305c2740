//! Names of environment variables in keyward.yaml (`token_env`, `url_env`, `password_env`,
//! an exec store's `env`): what a valid name is, and the diagnostic for one that is not.
//! Must not read the environment.

use super::pos::YPath;
use super::yaml::Ctx;
use crate::diag::codes;
use serde_yaml::Value;

pub(super) fn valid_env_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The variable name at `p`, or a diagnostic.
pub(super) fn env_name(ctx: &mut Ctx, v: &Value, p: &YPath) -> Option<String> {
    let s = ctx.string(v, p)?;
    if valid_env_name(&s) {
        return Some(s);
    }
    ctx.err(
        codes::INVALID_VALUE,
        p,
        format!("`{s}` is not an environment variable name"),
        "name the variable that holds the value (e.g. `KEYWARD_SMTP_PASSWORD`), never the value itself",
    );
    None
}

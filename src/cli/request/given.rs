//! The values `keyward request` was given as flags, checked for form as they are read (the
//! policy is checked on the whole file), and which required ones are missing. Must not
//! prompt.

use super::args::RequestArgs;
use super::prompt::words;
use anyhow::{Result, bail};
use keyward::request::{self, ExpiryAnswer};
use keyward::spec::Spec;

/// Values given as flags, checked for form (the policy is checked on the whole file).
pub struct Given {
    pub name: Option<String>,
    pub purpose: Option<String>,
    pub stores: Option<Vec<String>>,
    pub owner: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub expiry: Option<ExpiryAnswer>,
    pub recipients: Option<Vec<String>>,
    pub ticket: Option<String>,
}

/// Read the flags and check each for form.
pub fn from_flags(
    spec: &Spec,
    a: &RequestArgs,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Given> {
    let store_words: Vec<String> = words(&a.stores).into_iter().chain(words(&a.envs)).collect();
    let stores = if store_words.is_empty() {
        None
    } else {
        Some(
            request::parse_stores(spec, &store_words)
                .map_err(|e| anyhow::anyhow!("--store/--env: {e}"))?,
        )
    };
    if let Some(n) = &a.name {
        request::check_name(spec, n, stores.as_deref().unwrap_or(&[]))
            .map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    }
    if let Some(o) = &a.owner {
        request::check_owner(spec, o).map_err(|e| anyhow::anyhow!("--owner: {e}"))?;
    }
    let scopes = if a.scopes.is_empty() {
        None
    } else {
        let s = request::parse_scopes(spec, &words(&a.scopes))
            .map_err(|e| anyhow::anyhow!("--scope: {}", e.join("; ")))?;
        Some(s.iter().map(ToString::to_string).collect())
    };
    let expiry = match (&a.expires, &a.lifetime) {
        (Some(e), _) => {
            let (ans, _) =
                request::parse_expiry(e, now).map_err(|e| anyhow::anyhow!("--expires: {e}"))?;
            if !matches!(ans, ExpiryAnswer::Expires(_)) {
                bail!(
                    "--expires: `{e}` is not a date (YYYY-MM-DD) or `never`; for a lifetime use --lifetime"
                );
            }
            Some(ans)
        }
        (None, Some(l)) => {
            let (ans, _) =
                request::parse_expiry(l, now).map_err(|e| anyhow::anyhow!("--lifetime: {e}"))?;
            if !matches!(ans, ExpiryAnswer::Lifetime(_)) {
                bail!("--lifetime: `{l}` is not a lifetime (e.g. 90d); for a date use --expires");
            }
            Some(ans)
        }
        (None, None) => None,
    };
    let recipients = if a.recipients.is_empty() {
        None
    } else {
        // The owner is dropped later, once known.
        Some(
            request::parse_recipients(spec, &words(&a.recipients), "")
                .map_err(|e| anyhow::anyhow!("--recipient: {e}"))?,
        )
    };
    let text = |s: &Option<String>| {
        s.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    Ok(Given {
        name: a.name.clone(),
        purpose: text(&a.purpose),
        stores,
        owner: a.owner.clone(),
        scopes,
        expiry,
        recipients,
        ticket: text(&a.ticket),
    })
}

/// The flags of the required values that are missing.
pub fn missing(spec: &Spec, g: &Given) -> Vec<&'static str> {
    let mut out = Vec::new();
    if g.name.is_none() {
        out.push("--name");
    }
    if g.purpose.is_none() && spec.policy.required_fields.iter().any(|f| f == "purpose") {
        out.push("--purpose");
    }
    if g.stores.is_none() {
        out.push("--store (or --env)");
    }
    if g.owner.is_none() {
        out.push("--owner");
    }
    if g.scopes.is_none() {
        out.push("--scope");
    }
    if g.ticket.is_none() && spec.policy.required_labels.iter().any(|l| l == "ticket") {
        out.push("--ticket");
    }
    out
}

//! The settings of a `kind: console` store in keyward.yaml (vendor, ledger, console_url,
//! secret_pattern, the console's own limits). Owns checking those fields only; must not
//! know the vendors' presets (src/console does) nor do I/O.

use super::model::{CONSOLE_VENDORS, ConsoleStoreConfig};
use super::pos::YPath;
use super::yaml::{Ctx, did_you_mean, field, http_url};
use crate::diag::codes;
use serde_yaml::Value;
use std::path::{Path, PathBuf};

/// Longest `secret_pattern` accepted (a hostile spec cannot hand the regex engine a novel).
pub const MAX_PATTERN_LEN: usize = 512;

/// Parse the console fields of store `name` (`fields` are its entries).
pub fn parse(
    ctx: &mut Ctx,
    fields: &[(String, &Value)],
    sp: &YPath,
    root: &Path,
    name: &str,
) -> Option<ConsoleStoreConfig> {
    let get = |n: &str| field(fields, n);
    let (here, hint) = (
        "a console store",
        "a console store's state is its `ledger`; remove the field",
    );
    let kinds = ["path", "url", "token_env"];
    ctx.not_applicable(codes::INVALID_STORE, fields, sp, &kinds, here, hint);
    let vendor = match get("vendor") {
        None => {
            ctx.missing(
                sp,
                "vendor",
                format!("add `vendor:` ({})", CONSOLE_VENDORS.join(", ")),
            );
            None
        }
        Some(v) => ctx.string(v, &sp.key("vendor")).and_then(|v| {
            if CONSOLE_VENDORS.contains(&v.as_str()) {
                Some(v)
            } else {
                let hint = did_you_mean(&v, CONSOLE_VENDORS, "vendors");
                ctx.err(
                    codes::INVALID_VALUE,
                    &sp.key("vendor"),
                    format!("unknown console vendor `{v}`"),
                    hint,
                );
                None
            }
        }),
    };
    let ledger_rel = match get("ledger") {
        None => Some(PathBuf::from("ledger").join(format!("{name}.yaml"))),
        Some(v) => ctx
            .string(v, &sp.key("ledger"))
            .and_then(|s| relative_path(ctx, &s, &sp.key("ledger"))),
    };
    let console_url = get("console_url").and_then(|v| {
        let hint = "write the console's address, e.g. `https://developers.exlibrisgroup.com`";
        http_url(ctx, v, &sp.key("console_url"), codes::INVALID_STORE, hint)
    });
    let secret_pattern = secret_pattern(ctx, get("secret_pattern"), sp, vendor.as_deref());
    let max_keys_per_owner = get("max_keys_per_owner")
        .and_then(|v| ctx.uint(v, &sp.key("max_keys_per_owner")))
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let max_lifetime =
        get("max_lifetime").and_then(|v| ctx.positive_span(v, &sp.key("max_lifetime")));
    let vendor = vendor?;
    let ledger_rel = ledger_rel?;
    if vendor == "generic" && secret_pattern.is_none() && get("secret_pattern").is_none() {
        ctx.missing(
            sp,
            "secret_pattern",
            "a generic console needs the shape of its secrets, e.g. `secret_pattern: \"[A-Za-z0-9]{40}\"`",
        );
        return None;
    }
    Some(ConsoleStoreConfig {
        vendor,
        ledger: root.join(&ledger_rel),
        ledger_rel,
        console_url,
        secret_pattern,
        max_keys_per_owner,
        max_lifetime,
    })
}

/// A path inside the repository: relative, no `..`.
fn relative_path(ctx: &mut Ctx, s: &str, p: &YPath) -> Option<PathBuf> {
    let path = Path::new(s.trim());
    let inside = !s.trim().is_empty()
        && path.is_relative()
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if inside {
        Some(path.to_path_buf())
    } else {
        ctx.err(
            codes::INVALID_STORE,
            p,
            format!("`{s}` is not a path inside the repository"),
            "write a relative path such as `ledger/alma-production.yaml`",
        );
        None
    }
}

fn secret_pattern(
    ctx: &mut Ctx,
    v: Option<&Value>,
    sp: &YPath,
    vendor: Option<&str>,
) -> Option<String> {
    let v = v?;
    let p = sp.key("secret_pattern");
    let pattern = ctx.string(v, &p)?;
    if vendor.is_some_and(|v| v != "generic") {
        ctx.err(
            codes::INVALID_STORE,
            &p,
            "`secret_pattern` applies only to `vendor: generic`",
            "the vendor's preset already knows the shape of its secrets; remove the field",
        );
        return None;
    }
    if pattern.len() > MAX_PATTERN_LEN {
        ctx.err(
            codes::INVALID_STORE,
            &p,
            format!("the pattern is longer than {MAX_PATTERN_LEN} characters"),
            "describe the shape, e.g. `[A-Za-z0-9]{40}`",
        );
        return None;
    }
    match regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
    {
        Ok(_) => Some(pattern),
        Err(_) => {
            ctx.err(
                codes::INVALID_STORE,
                &p,
                "`secret_pattern` is not a valid regular expression",
                "use Rust regex syntax, e.g. `[A-Za-z0-9]{40}`",
            );
            None
        }
    }
}

//! Composing notification messages: the subject and text of a notice, the email (who gets
//! it) and the webhook's JSON body and HMAC signature. Pure: no I/O, no clock, no
//! environment; must never put a secret into a message (a notice holds none, and
//! `contains_secret` is checked once more before anything is sent).

use super::Notice;
use crate::spec::{EmailNotify, NoticeKind, Spec};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// Version of the webhook JSON body.
pub const WEBHOOK_FORMAT_VERSION: u32 = 1;

/// Standard Webhooks headers: the message id (the same on every retry), the send time
/// (Unix seconds) and the signature over both and the body.
pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";
/// Prefix of a Standard Webhooks secret; the key is the base64 after it.
pub const STANDARD_SECRET_PREFIX: &str = "whsec_";

/// One email, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub from: String,
    /// Plain addresses, owner first; empty when nobody has an address.
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    /// Stable per notice, so a retried message threads/deduplicates in mail clients.
    pub message_id: String,
}

/// One webhook call, ready to sign and send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookCall {
    /// The JSON body (bytes as signed).
    pub body: Vec<u8>,
    /// `key.created`, `key.reminder`, ... (`X-Keyward-Event`).
    pub event: String,
    /// The notice id (`X-Keyward-Delivery`): the same on every retry.
    pub id: String,
}

/// A composed message for one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Email(Email),
    Webhook(WebhookCall),
}

fn date(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The subject line (also the webhook's `subject`).
pub fn subject(n: &Notice) -> String {
    let key = format!("{}/{}", n.store, n.key);
    match n.kind {
        NoticeKind::Reminder => match n.days_left {
            Some(d) if d <= 0 => format!("[keyward] {key} expires today"),
            Some(d) => format!("[keyward] {key} expires in {d} day(s)"),
            None => format!("[keyward] {key} expires soon"),
        },
        NoticeKind::Unused => match n.days_left {
            Some(d) if d > 0 => {
                format!("[keyward] {key} is unused: disabled in {d} day(s) unless used")
            }
            _ => format!("[keyward] {key} is unused: the next apply disables it"),
        },
        NoticeKind::Created => format!("[keyward] New key {key}: your encrypted secret is ready"),
        NoticeKind::Rotated => format!("[keyward] {key} was rotated: fetch the new secret"),
        NoticeKind::Replaced => format!("[keyward] {key} was replaced by a new key"),
        NoticeKind::Revoked => format!("[keyward] {key} was revoked"),
        NoticeKind::Disabled => format!("[keyward] {key} was disabled"),
        NoticeKind::Deleted => format!("[keyward] {key} was deleted"),
    }
}

/// The plain-text body. `owner_name` is the owner's display name, when known.
pub fn text(n: &Notice, owner_name: Option<&str>) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "Hello {},\n", owner_name.unwrap_or(&n.owner));
    let key = format!("`{}` in store {} ({})", n.key, n.store, n.environment);
    let id = n
        .key_id
        .as_deref()
        .map(|i| format!(", key id {i}"))
        .unwrap_or_default();
    match n.kind {
        NoticeKind::Reminder => {
            let when = match (n.expires_at, n.days_left) {
                (Some(at), Some(d)) if d > 0 => format!("expires in {d} day(s), on {}", date(&at)),
                (Some(at), _) => format!("expires on {}", date(&at)),
                _ => "expires soon".to_string(),
            };
            let _ = writeln!(t, "The key {key}{id}, owned by {}, {when}.", n.owner);
            if let Some(off) = &n.offset {
                let _ = writeln!(
                    t,
                    "(This is the {off} reminder; the policy's `reminders` set when they are sent.)"
                );
            }
            if let Some(todo) = &n.todo {
                let _ = writeln!(t, "\nWhat to do: {todo}.");
            }
            if let Some(at) = &n.defined_at {
                let _ = writeln!(t, "The key is defined at {at}.");
            }
        }
        NoticeKind::Unused => unused_text(&mut t, n, &key, &id),
        NoticeKind::Created | NoticeKind::Rotated | NoticeKind::Replaced => {
            let what = match n.kind {
                NoticeKind::Created => "created",
                NoticeKind::Rotated => "rotated (same key id, new secret)",
                _ => "replaced by a new key",
            };
            let _ = writeln!(t, "keyward {what}: {key}{id}, owned by {}.", n.owner);
            if let Some(g) = n.generation {
                let _ = writeln!(t, "Generation: {g}.");
            }
            if !n.reasons.is_empty() {
                let _ = writeln!(t, "Why: {}.", n.reasons.join("; "));
            }
            match n.expires_at {
                Some(at) => {
                    let _ = writeln!(t, "The new secret expires on {}.", date(&at));
                }
                None => {
                    let _ = writeln!(t, "The new secret does not expire.");
                }
            }
            if let Some(until) = n.previous_valid_until {
                let _ = writeln!(
                    t,
                    "The previous secret keeps working until {}: switch your application before then.",
                    date(&until)
                );
            }
            t.push_str(
                "\nThe secret is NOT in this message. It was sealed with age to each recipient's\n\
                 public key",
            );
            if n.recipients.is_empty() {
                t.push_str(".\n");
            } else {
                let _ = writeln!(t, " ({}).", n.recipients.join(", "));
            }
            if let Some(dir) = &n.delivery {
                let _ = writeln!(t, "Encrypted envelopes: {dir}/<your id>.age");
                if let Some(c) = &n.commit {
                    let _ = writeln!(t, "(spec commit {})", super::short(c));
                }
                let _ = writeln!(
                    t,
                    "\nTo read it, pull the repository, then run one of:\n  \
                     keyward secret {} --store {}\n  \
                     keyward decrypt {dir}/<your id>.age\n  \
                     age -d -i ~/.config/keyward/identities.txt {dir}/<your id>.age | jq -r .secret",
                    n.key, n.store
                );
            }
        }
        NoticeKind::Revoked | NoticeKind::Deleted | NoticeKind::Disabled => {
            let (what, effect) = match n.kind {
                NoticeKind::Revoked => (
                    "revoked",
                    "Its secret no longer verifies; the key stays in the store for the audit trail.",
                ),
                NoticeKind::Deleted => (
                    "deleted",
                    "Its secret no longer verifies and the key is gone from the store.",
                ),
                _ => (
                    "disabled",
                    "Its secret fails verification until the key is set back to `state: active`.",
                ),
            };
            let _ = writeln!(t, "keyward {what} {key}{id}, owned by {}.", n.owner);
            if !n.reasons.is_empty() {
                let _ = writeln!(t, "Why: {}.", n.reasons.join("; "));
            }
            let _ = writeln!(t, "{effect}");
            if let Some(c) = &n.commit {
                let _ = writeln!(t, "Applied from spec commit {}.", super::short(c));
            }
            t.push_str(
                "If this is unexpected, check the key's history in the spec repository and tell an admin.\n",
            );
        }
    }
    t.push_str("\n-- \nkeyward - this message never contains a secret\n");
    t
}

/// The body of a notice ahead of a disable for disuse.
fn unused_text(t: &mut String, n: &Notice, key: &str, id: &str) {
    let _ = writeln!(
        t,
        "The key {key}{id}, owned by {}, {}.",
        n.owner,
        n.reasons.join("; ")
    );
    let when = match (n.due_at, n.days_left) {
        (Some(at), Some(d)) if d > 0 => format!("on {}, in {d} day(s),", date(&at)),
        _ => "at the next apply".to_string(),
    };
    let _ = writeln!(
        t,
        "The policy's `unused_after` has keyward disable it {when} unless it is used before then."
    );
    if let Some(off) = &n.offset {
        let _ = writeln!(
            t,
            "(This is the {off} notice; the policy's `reminders` set when they are sent.)"
        );
    }
    if let Some(todo) = &n.todo {
        let _ = writeln!(t, "\nWhat to do: {todo}.");
    }
    if let Some(at) = &n.defined_at {
        let _ = writeln!(t, "The key is defined at {at}.");
    }
}

/// Who gets the email for `n`: the owner's address (when `owners` and people.yaml has
/// one), then the fixed `to:` addresses, without duplicates.
pub fn email_recipients(n: &Notice, cfg: &EmailNotify, spec: &Spec) -> Vec<String> {
    let mut to: Vec<String> = Vec::new();
    if cfg.owners
        && let Some(e) = spec.principals.get(&n.owner).and_then(|p| p.email.clone())
    {
        to.push(e);
    }
    for a in &cfg.to {
        if !to.iter().any(|t| t.eq_ignore_ascii_case(a)) {
            to.push(a.clone());
        }
    }
    to
}

/// The domain of an address or mailbox (`Name <a@b.c>` -> `b.c`).
pub(crate) fn domain_of(mailbox: &str) -> &str {
    mailbox
        .trim()
        .trim_end_matches('>')
        .rsplit('@')
        .next()
        .filter(|d| !d.is_empty())
        .unwrap_or("keyward.invalid")
}

/// The email for `n`.
pub fn email(n: &Notice, cfg: &EmailNotify, spec: &Spec) -> Email {
    let owner_name = spec
        .principals
        .get(&n.owner)
        .and_then(|p| p.name.as_deref());
    let digest = hex::encode(&Sha256::digest(n.id.as_bytes())[..12]);
    Email {
        from: cfg.from.clone(),
        to: email_recipients(n, cfg, spec),
        subject: subject(n),
        text: text(n, owner_name),
        message_id: format!("<{digest}.{}@{}>", n.kind, domain_of(&cfg.from)),
    }
}

/// The webhook body: the notice's fields plus `format_version`, `event`, `subject` and
/// `text` (the same words the email has).
pub fn webhook(n: &Notice, spec: &Spec) -> WebhookCall {
    let owner_name = spec
        .principals
        .get(&n.owner)
        .and_then(|p| p.name.as_deref());
    let mut v = serde_json::to_value(n).unwrap_or_else(|_| serde_json::json!({}));
    let event = format!("key.{}", n.kind);
    if let Some(o) = v.as_object_mut() {
        o.insert("format_version".into(), WEBHOOK_FORMAT_VERSION.into());
        o.insert("event".into(), event.clone().into());
        o.insert("subject".into(), subject(n).into());
        o.insert("text".into(), text(n, owner_name).into());
        if let Some(dir) = &n.delivery {
            o.insert(
                "decrypt".into(),
                format!(
                    "keyward secret {} --store {}  (or: keyward decrypt {dir}/<your id>.age)",
                    n.key, n.store
                )
                .into(),
            );
        }
    }
    WebhookCall {
        body: serde_json::to_vec(&v).unwrap_or_default(),
        event,
        id: n.id.clone(),
    }
}

/// The HMAC key of a configured secret: a Standard Webhooks secret (`whsec_<base64>`) is
/// its decoded bytes, anything else its bytes as given.
pub fn signing_key(secret: &str) -> Vec<u8> {
    use base64::Engine as _;
    secret
        .strip_prefix(STANDARD_SECRET_PREFIX)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// The `webhook-signature` value: `v1,<base64 of HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`
/// (Standard Webhooks). The timestamp is inside the signature, so a receiver that refuses
/// old timestamps (5 minutes is usual) cannot be fed a recorded call again.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    use base64::Engine as _;
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// Does the composed message hold anything secret-shaped ([`crate::leak`])?
pub fn leaks_secret(out: &Outgoing) -> bool {
    let s = match out {
        Outgoing::Email(e) => format!("{}\n{}\n{}", e.subject, e.text, e.to.join(",")),
        Outgoing::Webhook(w) => String::from_utf8_lossy(&w.body).into_owned(),
    };
    crate::leak::contains(&s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::tests::{now, spec};

    fn notice(kind: NoticeKind) -> Notice {
        Notice {
            id: format!("{kind}/prod/ill/ID1/2/1800000000"),
            kind,
            at: now(),
            store: "prod".into(),
            environment: "production".into(),
            key: "ill".into(),
            key_id: Some("ID1".into()),
            owner: "jdoe".into(),
            generation: Some(2),
            expires_at: Some(now() + chrono::Duration::days(7)),
            previous_valid_until: (kind == NoticeKind::Rotated)
                .then(|| now() + chrono::Duration::days(3)),
            days_left: (kind == NoticeKind::Reminder).then_some(7),
            offset: (kind == NoticeKind::Reminder).then(|| "7d".into()),
            reasons: vec!["generation 1 -> 2".into()],
            delivery: (kind != NoticeKind::Reminder).then(|| "deliveries/prod/ill/g2".into()),
            recipients: vec!["jdoe".into(), "asmith".into()],
            commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            defined_at: Some("keys/ill.yaml:2".into()),
            todo: (kind == NoticeKind::Reminder).then(|| "bump `rotation.generation`".into()),
            due_at: None,
        }
    }

    fn email_cfg(owners: bool, to: &[&str]) -> EmailNotify {
        EmailNotify {
            host: "127.0.0.1".into(),
            port: 25,
            tls: crate::spec::SmtpTls::None,
            username: None,
            password_env: None,
            from: "keyward <keyward@example.edu>".into(),
            to: to.iter().map(|s| s.to_string()).collect(),
            owners,
            connections: EmailNotify::DEFAULT_CONNECTIONS,
            location: None,
        }
    }

    fn with_email(mut s: Spec) -> Spec {
        if let Some(p) = s.principals.get_mut("jdoe") {
            p.email = Some("jdoe@example.edu".into());
            p.name = Some("Jane Doe".into());
        }
        s
    }

    #[test]
    fn a_rotation_notice_says_where_the_envelope_is_and_how_to_decrypt_it() {
        let s = with_email(spec(vec![]));
        let n = notice(NoticeKind::Rotated);
        let e = email(&n, &email_cfg(true, &["sec@example.edu"]), &s);
        assert_eq!(e.to, ["jdoe@example.edu", "sec@example.edu"]);
        assert_eq!(
            e.subject,
            "[keyward] prod/ill was rotated: fetch the new secret"
        );
        assert!(e.text.starts_with("Hello Jane Doe,"), "{}", e.text);
        for want in [
            "deliveries/prod/ill/g2/<your id>.age",
            "keyward secret ill --store prod",
            "keyward decrypt deliveries/prod/ill/g2/<your id>.age",
            "age -d -i",
            "The previous secret keeps working until",
            "The secret is NOT in this message",
            "(jdoe, asmith)",
            "generation 1 -> 2",
            "spec commit 0123456",
        ] {
            assert!(e.text.contains(want), "missing {want:?} in:\n{}", e.text);
        }
        assert!(
            e.message_id.ends_with(".rotated@example.edu>"),
            "{}",
            e.message_id
        );
        assert!(!leaks_secret(&Outgoing::Email(e)));
    }

    #[test]
    fn reminders_revocations_and_disables_read_as_what_happened() {
        let s = spec(vec![]);
        let r = text(&notice(NoticeKind::Reminder), None);
        assert!(r.contains("expires in 7 day(s)"), "{r}");
        assert!(r.contains("the 7d reminder"), "{r}");
        assert!(r.contains("What to do: bump `rotation.generation`."), "{r}");
        assert!(r.contains("keys/ill.yaml:2"), "{r}");
        assert!(!r.contains("keyward secret"), "{r}");
        let v = text(&notice(NoticeKind::Revoked), None);
        assert!(
            v.contains("keyward revoked `ill` in store prod (production), key id ID1"),
            "{v}"
        );
        assert!(v.contains("no longer verifies"), "{v}");
        let d = text(&notice(NoticeKind::Disabled), None);
        assert!(d.contains("`state: active`"), "{d}");
        assert_eq!(
            subject(&notice(NoticeKind::Reminder)),
            "[keyward] prod/ill expires in 7 day(s)"
        );
        // Without an owner address and no fixed ones, nobody is mailed.
        let e = email(&notice(NoticeKind::Revoked), &email_cfg(true, &[]), &s);
        assert!(e.to.is_empty());
        // owners: false sends only to the fixed addresses.
        let s = with_email(s);
        let e = email(
            &notice(NoticeKind::Revoked),
            &email_cfg(false, &["a@x.org"]),
            &s,
        );
        assert_eq!(e.to, ["a@x.org"]);
    }

    #[test]
    fn the_webhook_body_carries_the_notice_and_a_verifiable_signature() {
        let s = spec(vec![]);
        let n = notice(NoticeKind::Created);
        let w = webhook(&n, &s);
        let v: serde_json::Value = serde_json::from_slice(&w.body).unwrap();
        assert_eq!(v["format_version"], 1);
        assert_eq!(v["event"], "key.created");
        assert_eq!(v["kind"], "created");
        assert_eq!(v["key"], "ill");
        assert_eq!(v["id"], n.id);
        assert_eq!(v["delivery"], "deliveries/prod/ill/g2");
        assert!(
            v["decrypt"]
                .as_str()
                .unwrap()
                .contains("keyward secret ill --store prod")
        );
        assert_eq!(w.event, "key.created");
        // Signature: HMAC-SHA256 over `id.timestamp.body` (RFC 4231 test case 2 first: the
        // message "what do ya want for nothing?" split at two dots).
        use base64::Engine as _;
        let b64 =
            |h: &str| base64::engine::general_purpose::STANDARD.encode(hex::decode(h).unwrap());
        let hmac_of = |key: &[u8], msg: &[u8]| {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
            mac.update(msg);
            hex::encode(mac.finalize().into_bytes())
        };
        assert_eq!(
            hmac_of(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let at = 1_700_000_000;
        let sig = sign(b"s3cret", &w.id, at, &w.body);
        let mut msg = format!("{}.{at}.", w.id).into_bytes();
        msg.extend_from_slice(&w.body);
        assert_eq!(sig, format!("v1,{}", b64(&hmac_of(b"s3cret", &msg))));
        // Another secret, another time or another id: another signature (no replay with a
        // fresh timestamp).
        assert_ne!(sign(b"other", &w.id, at, &w.body), sig);
        assert_ne!(sign(b"s3cret", &w.id, at + 1, &w.body), sig);
        assert_ne!(sign(b"s3cret", "other-id", at, &w.body), sig);
        // A Standard Webhooks secret is used by its decoded bytes.
        let std_secret = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(b"s3cret")
        );
        assert_eq!(signing_key(&std_secret), b"s3cret");
        assert_eq!(signing_key("plain"), b"plain");
    }

    #[test]
    fn a_message_holding_a_secret_is_caught() {
        let s = spec(vec![]);
        let mut n = notice(NoticeKind::Created);
        let secret = crate::secret::generate("production", &crate::secret::new_key_id());
        n.reasons = vec![format!("oops {}", secret.expose())];
        assert!(leaks_secret(&Outgoing::Webhook(webhook(&n, &s))));
        assert!(leaks_secret(&Outgoing::Email(email(
            &n,
            &email_cfg(false, &["a@x.org"]),
            &s
        ))));
    }
}

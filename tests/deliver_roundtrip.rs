//! Property: whatever the key name, store, id, generation and secret text, an envelope
//! sealed with keyward opens to exactly the same values, and its JSON/env renderings hold
//! the secret exactly.

use keyward::deliver::{EnvelopeMeta, Identities, OutputFormat, decrypt_bytes, render, seal};
use keyward::secret::Secret;
use keyward::spec::model::RecipientKey;
use proptest::prelude::*;

fn identities() -> (Identities, RecipientKey) {
    let id = age::x25519::Identity::generate();
    let public = RecipientKey::new(&id.to_public().to_string());
    let mut ids = Identities::default();
    ids.push_x25519("test", id);
    (ids, public)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sealed_envelopes_open_to_the_same_values(
        key in "[a-z][a-z0-9._-]{0,40}",
        store in "[a-z][a-z0-9-]{0,20}",
        id in "[a-z2-7]{16}",
        generation in 1u32..10_000,
        secret in "\\PC{1,120}",
        expires in proptest::option::of(0i64..4_000_000_000),
    ) {
        let (ids, public) = identities();
        let meta = EnvelopeMeta {
            key,
            store,
            id,
            generation,
            expires_at: expires.and_then(|s| chrono::DateTime::from_timestamp(s, 0)),
            previous_valid_until: None,
            client_id: None,
        };
        let armored = seal(&meta, &Secret::from_string(secret.clone()), &[public]).expect("seal");
        prop_assert!(!armored.contains(&secret) || secret.chars().count() < 8);
        let opened = decrypt_bytes(armored.as_bytes(), &ids, "p.age").expect("open");
        prop_assert_eq!(&opened.meta, &meta);
        prop_assert_eq!(opened.secret.expose(), secret.as_str());

        let json: serde_json::Value = serde_json::from_str(&render(&opened, OutputFormat::Json)).expect("json");
        prop_assert_eq!(json["secret"].as_str(), Some(secret.as_str()));
        let raw = render(&opened, OutputFormat::Raw);
        prop_assert_eq!(raw.as_str(), format!("{secret}\n"));
        let env = render(&opened, OutputFormat::Env);
        let first = env.lines().next().unwrap_or_default().to_string();
        let (name, _) = first.split_once('=').expect("NAME=value");
        prop_assert!(name.starts_with("KEYWARD_") && name.ends_with("_SECRET"));
        prop_assert!(name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'), "{}", name);
    }
}

//! Delivery: sealing new secrets to their recipients with age, the durable outbox of
//! encrypted envelopes + manifests, finding a recipient's identities, and decrypting.
//!
//! Owns everything under `deliveries/` and the envelope format. Must not talk to a store,
//! read the spec, or decide *when* to deliver (apply does); must never write a plaintext
//! secret to disk (except `write_secret_file`, which a user asks for with `-o`), into an
//! error, a `Debug` string or a log line.
//!
//! # How apply uses it ("never valid before delivered")
//!
//! ```text
//! let meta = EnvelopeMeta { key, store, id, generation, expires_at, previous_valid_until };
//! let sealed = seal_for_principals(&meta, &secret, &principals)?;      // in memory only
//! let manifest = Manifest::pending(&meta, environment, now, commit, &sealed);
//! let outbox = Outbox::new(spec.delivery.outbox.clone());
//! let dir = outbox.write_pending(&manifest, &sealed)?;                 // durable, status pending
//! store.create(..secret.hash()..).await?;                              // only now does it verify
//! outbox.mark(&dir, DeliveryStatus::Active)?;
//! ```
//!
//! Recovery at the start of an apply: for each `(dir, manifest)` in `outbox.pending()?`, look
//! the key up in the store: if it exists at that generation, `mark(&dir, Active)`, otherwise
//! `void(&dir)` (deletes the envelopes, which were never valid). After a successful apply,
//! `prune(retain, now)` marks generations replaced by a newer active one `superseded` and
//! deletes their envelopes once `retain` has passed since the newer one was created.
//!
//! # How a recipient reads a secret
//!
//! ```text
//! let ids = find_identities(&IdentitySources::from_process_env(), &explicit_i_files)?;
//! let opened = decrypt_file(path, &ids)?;                 // or outbox.open_latest(store, name, &ids)
//! let text = render(&opened, OutputFormat::Env);          // Zeroizing<String>
//! write_secret_file(out_path, text.as_bytes())?;          // -o: mode 0600, atomic
//! ```
//!
//! Layout: `deliveries/<store>/<key-name>/g<generation>/<principal-id>.age` (ASCII-armored
//! age, one file per principal holding all of that principal's keys) and `manifest.json`
//! (see [`Manifest`]); an older key of the same name found in the same directory is kept as
//! `superseded-<old-id>.json`. The envelope plaintext is a small JSON document, see
//! [`Envelope`], so `age -d -i KEY FILE | jq -r .secret` works without keyward.

mod envelope;
mod error;
mod fsio;
mod identity;
mod outbox;
mod seal;

pub use envelope::{
    ENVELOPE_VERSION, Envelope, EnvelopeMeta, EnvelopeSecret, Opened, OutputFormat, env_var_prefix,
    render,
};
pub use error::DeliverError;
pub use fsio::write_secret_file;
pub use identity::{
    Identities, IdentityOrigin, IdentitySources, find_identities, keygen, ssh_public_key_text,
};
pub use outbox::{
    DeliveryStatus, MANIFEST_FILE, MANIFEST_VERSION, Manifest, ManifestRecipient, Outbox,
    RecipientKind, check_opened, decrypt_delivery, sha256_hex, verify_envelope,
};
pub use seal::{SealedFile, decrypt_bytes, decrypt_file, seal, seal_bytes, seal_for_principals};

/// Result type of this module.
pub type Result<T, E = DeliverError> = std::result::Result<T, E>;

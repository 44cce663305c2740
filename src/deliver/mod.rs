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
//! let meta = EnvelopeMeta { key, store, id, generation, expires_at, previous_valid_until, client_id };
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
//! let (manifest, opened) = decrypt_delivery(path, &ids)?; // or outbox.open_latest(store, name, &ids)
//! let text = render(&opened, OutputFormat::Env);          // Zeroizing<String>
//! write_secret_file(out_path, text.as_bytes())?;          // -o: mode 0600, atomic
//! ```
//!
//! # Public API
//!
//! Sealing (pure, in memory):
//! - `seal_for_principals(&EnvelopeMeta, &Secret, &[&Principal]) -> Result<Vec<SealedFile>>`:
//!   one armored age file per principal, sealed to all of that principal's keys.
//! - `seal(&EnvelopeMeta, &Secret, &[RecipientKey]) -> Result<String>` and
//!   `seal_bytes(&[u8], &[RecipientKey]) -> Result<String>`: one ASCII-armored age file.
//!
//! Outbox (durable; every write is temp + fsync + rename + directory fsync):
//! - `Manifest::pending(&EnvelopeMeta, environment, created_at, commit: Option<String>, &[SealedFile]) -> Manifest`
//! - `Outbox::new(root: PathBuf)`, `Outbox::dir_for(store, name, generation) -> Result<PathBuf>`
//! - `Outbox::write_pending(&Manifest, &[SealedFile]) -> Result<PathBuf /*g<N> dir*/>`
//! - `Outbox::mark(&dir, DeliveryStatus) -> Result<Manifest>` (pending->active checks every
//!   envelope's sha256), `Outbox::void(&dir) -> Result<Manifest>`, `Outbox::verify(&dir)`
//! - `Outbox::pending()`, `Outbox::list()`, `Outbox::generations(store, name)`
//!   `-> Result<Vec<(PathBuf, Manifest)>>`; `Outbox::latest(store, name) -> Result<Option<(PathBuf, Manifest)>>`
//! - `Outbox::prune(retain: chrono::Duration, now) -> Result<Vec<PathBuf /*deleted envelopes*/>>`
//! - `Outbox::open(&dir, principal_id, &Identities) -> Result<Opened>` and
//!   `Outbox::open_latest(store, name, &Identities) -> Result<(PathBuf, Manifest, Opened)>`
//!   (sha256 checked before decrypting, payload checked against the manifest after)
//! - `verify_envelope(&Manifest, &path)`, `check_opened(&Manifest, &Opened, &path)`
//!
//! Recipients' side:
//! - `IdentitySources::from_process_env()` (or `IdentitySources::new(home).with_var(..)` in
//!   tests); `.with_passphrase_prompt(Arc::new(|what| ask_tty(what)))` lets protected SSH
//!   keys be used (asked once, only for a file with a stanza for that key)
//! - `find_identities(&IdentitySources, explicit: &[PathBuf]) -> Result<Identities>`
//! - `decrypt_file(&path, &Identities) -> Result<Opened>` (any age file holding an envelope),
//!   `decrypt_delivery(&path, &Identities) -> Result<(Option<Manifest>, Opened)>` (also checks
//!   the manifest beside the file, if any), `decrypt_bytes(&[u8], &Identities, label)`
//! - `render(&Opened, OutputFormat::{Raw, Env, Json}) -> Zeroizing<String>`,
//!   `write_secret_file(&path, bytes)` (0600, atomic), `keygen(&path) -> Result<String /*age1...*/>`
//!
//! Every error is a [`DeliverError`] naming the file and what to do; none contains a secret.
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
mod manifest;
mod outbox;
mod seal;

pub use envelope::{
    ENVELOPE_VERSION, Envelope, EnvelopeMeta, EnvelopeSecret, Opened, OutputFormat, env_var_prefix,
    envelope_schema, render,
};
pub use error::DeliverError;
pub use fsio::{write_committed_file, write_secret_file};
pub use identity::{
    Identities, IdentityOrigin, IdentitySources, PassphrasePrompt, find_identities, keygen,
    ssh_public_key_text,
};
pub use manifest::{
    DeliveryStatus, MANIFEST_FILE, MANIFEST_VERSION, Manifest, ManifestRecipient, RecipientKind,
    manifest_schema, sha256_hex,
};
pub use outbox::{Outbox, Staged, check_opened, decrypt_delivery, verify_envelope};
pub use seal::{SealedFile, decrypt_bytes, decrypt_file, seal, seal_bytes, seal_for_principals};

/// Result type of this module.
pub type Result<T, E = DeliverError> = std::result::Result<T, E>;

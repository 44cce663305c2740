//! Benchmark generator (bench-only, not part of the CLI): writes a realistic key repository
//! with N keys spread over several stores and files, ~50 people with real age recipients
//! (made with the `age` crate), teams, services, various scopes, lifetimes, rotation,
//! quotas, labels and states. Then it loads the result with `keyward::spec::load` and
//! `keyward::policy::check` so a generated repo is known to be valid.
//!
//!   cargo run --release --example gen_repo -- --keys 10000 --stores 3 --files 50 OUT_DIR
//!
//! Options: `--keys N` (default 1000), `--stores N` (1..=6, default 3), `--files N` (default
//! 50), `--people N` (default 50), `--seed N` (default 1), `--two-recipients` (every key is
//! delivered to exactly two people: its owner and one other person; for the apply
//! benchmark), `--prefix P` (key-name prefix, default `k`), `--force` (write into a
//! non-empty directory, replacing keyward.yaml, people.yaml and keys/).
//!
//! The structure (names, owners, scopes...) is a function of the seed; the age identities
//! are fresh on every run (their private halves are written to `identities/` so a
//! benchmark can decrypt what apply delivered).

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const AREAS: [&str; 9] = [
    "acquisitions",
    "analytics",
    "bibs",
    "configuration",
    "courses",
    "electronic",
    "resource-sharing",
    "task-lists",
    "users",
];
const STORES: [(&str, &str); 6] = [
    ("alma-production", "production"),
    ("alma-sandbox", "sandbox"),
    ("primo-production", "production"),
    ("leganto-production", "production"),
    ("alma-staging", "staging"),
    ("esploro-sandbox", "sandbox"),
];
const SYSTEMS: [&str; 16] = [
    "illiad",
    "rapido",
    "leganto",
    "primo",
    "analytics",
    "canvas",
    "moodle",
    "oclc",
    "ebsco",
    "proquest",
    "bursar",
    "sis",
    "idm",
    "openathens",
    "libguides",
    "warehouse",
];
const USES: [&str; 12] = [
    "barcode-lookup",
    "patron-sync",
    "course-sync",
    "report-export",
    "holdings-feed",
    "fines-export",
    "loan-renewal",
    "portfolio-load",
    "invoice-import",
    "user-load",
    "availability",
    "citation-lookup",
];
const FIRST: [&str; 20] = [
    "jane", "alex", "ravi", "maria", "chen", "fatima", "olu", "sven", "aiko", "lucas", "nina",
    "omar", "priya", "tom", "ines", "kofi", "lea", "ivan", "sara", "yusuf",
];
const LAST: [&str; 10] = [
    "doe", "smith", "kumar", "lopez", "wang", "haddad", "adeyemi", "berg", "sato", "silva",
];

struct Opts {
    keys: usize,
    stores: usize,
    files: usize,
    people: usize,
    seed: u64,
    two_recipients: bool,
    prefix: String,
    force: bool,
    out: PathBuf,
}

fn usage() -> &'static str {
    "usage: gen_repo [--keys N] [--stores N] [--files N] [--people N] [--seed N] \
     [--two-recipients] [--prefix P] [--force] OUT_DIR"
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        keys: 1000,
        stores: 3,
        files: 50,
        people: 50,
        seed: 1,
        two_recipients: false,
        prefix: "k".into(),
        force: false,
        out: PathBuf::new(),
    };
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> Result<usize, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number\n{}", usage()))
        };
        match a.as_str() {
            "--keys" => o.keys = num("--keys")?,
            "--stores" => o.stores = num("--stores")?,
            "--files" => o.files = num("--files")?,
            "--people" => o.people = num("--people")?,
            "--seed" => o.seed = num("--seed")? as u64,
            "--two-recipients" => o.two_recipients = true,
            "--force" => o.force = true,
            "--prefix" => {
                o.prefix = args
                    .next()
                    .ok_or_else(|| format!("--prefix needs a value\n{}", usage()))?
            }
            "-h" | "--help" => return Err(usage().into()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{}", usage())),
            s => out = Some(PathBuf::from(s)),
        }
    }
    o.out = out.ok_or_else(|| usage().to_string())?;
    if !(1..=STORES.len()).contains(&o.stores) {
        return Err(format!("--stores must be 1..={}", STORES.len()));
    }
    if o.files == 0 || o.people < 3 {
        return Err("--files must be >= 1 and --people >= 3".into());
    }
    Ok(o)
}

struct Person {
    id: String,
    /// Areas this person may grant, with the highest level (None: unbounded).
    grants: Option<Vec<(&'static str, &'static str)>>,
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).map_err(|e| format!("creating {}: {e}", p.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn config_yaml(o: &Opts) -> String {
    let mut s = String::from(
        "# yaml-language-server: $schema=../schemas/keyward.schema.json\n\
         # Generated by examples/gen_repo.rs for benchmarks.\nversion: 1\nstores:\n",
    );
    for (name, env) in STORES.iter().take(o.stores) {
        let _ = writeln!(
            s,
            "  {name}: {{ kind: sqlite, path: .keyward/{name}.db, environment: {env} }}"
        );
    }
    s.push_str(&format!(
        "scopes:\n  areas: [{}]\n  levels: [read, write]\n",
        AREAS.join(", ")
    ));
    s.push_str(
        "policy:\n  default_lifetime: 365d\n  max_lifetime: 730d\n\
         # A benchmark repo has thousands of keys per owner: no per-owner limit.\n\
         \x20 max_keys_per_owner: 0\n  min_recipients: 1\n  forbid:\n\
         \x20   - { scope: configuration:write, reason: \"Read/write access to the Configuration API is not granted.\" }\n\
         delivery:\n  outbox: deliveries\n  retain: 7d\n",
    );
    s
}

/// people.yaml's text, the people, the team names and the service names.
type People = (String, Vec<Person>, Vec<String>, Vec<String>);

fn people(o: &Opts, rng: &mut StdRng) -> Result<People, String> {
    use secrecy::ExposeSecret;
    let mut yaml = String::from(
        "# yaml-language-server: $schema=../schemas/people.schema.json\n\
         # Generated by examples/gen_repo.rs; private halves are in identities/.\npeople:\n",
    );
    let mut identities = String::new();
    let mut persons = Vec::new();
    let new_recipient = |identities: &mut String, id: &str| {
        let key = age::x25519::Identity::generate();
        let _ = writeln!(identities, "# {id}\n{}", key.to_string().expose_secret());
        key.to_public().to_string()
    };
    for i in 0..o.people {
        let first = FIRST[i % FIRST.len()];
        let last = LAST[(i / FIRST.len()) % LAST.len()];
        let id = format!("{first}-{last}{}", i / (FIRST.len() * LAST.len()) + 1);
        let r1 = new_recipient(&mut identities, &id);
        let mut recips = format!("\"{r1}\"");
        // A few people have a second device (both keys get the envelope). Not with
        // --two-recipients, so each envelope there holds exactly one key.
        if !o.two_recipients && rng.gen_bool(0.15) {
            let r2 = new_recipient(&mut identities, &id);
            recips.push_str(&format!(", \"{r2}\""));
        }
        let grants = if i % 10 == 0 {
            None
        } else {
            let mut areas: Vec<&'static str> = AREAS
                .iter()
                .copied()
                .filter(|a| *a != "configuration")
                .collect();
            areas.shuffle(rng);
            let n = rng.gen_range(3..=6);
            Some(
                areas
                    .into_iter()
                    .take(n)
                    .map(|a| (a, if rng.gen_bool(0.4) { "write" } else { "read" }))
                    .collect::<Vec<_>>(),
            )
        };
        let _ = writeln!(
            yaml,
            "  {id}:\n    name: {} {}\n    email: {id}@example.edu\n    recipients: [{recips}]",
            capital(first),
            capital(last)
        );
        match &grants {
            Some(g) => {
                let list: Vec<String> = g.iter().map(|(a, l)| format!("{a}:{l}")).collect();
                let _ = writeln!(yaml, "    may_grant: [{}]", list.join(", "));
            }
            None => yaml.push_str("    # head of systems: no may_grant, so unbounded\n"),
        }
        persons.push(Person { id, grants });
    }
    // Teams of 3-6 people.
    let mut teams = Vec::new();
    yaml.push_str("teams:\n");
    for (t, name) in [
        "ill-staff",
        "systems",
        "acquisitions",
        "reserves",
        "assessment",
    ]
    .iter()
    .enumerate()
    {
        let n = rng.gen_range(3..=6).min(persons.len());
        let members: Vec<&str> = (0..n)
            .map(|j| persons[(t * 7 + j * 3) % persons.len()].id.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let _ = writeln!(yaml, "  {name}: {{ members: [{}] }}", members.join(", "));
        teams.push(name.to_string());
    }
    let mut services = Vec::new();
    yaml.push_str("services:\n");
    for name in ["illiad-server", "warehouse-etl", "canvas-lti", "primo-ve"] {
        let r = new_recipient(&mut identities, name);
        let _ = writeln!(
            yaml,
            "  {name}:\n    name: {name}\n    recipients: [\"{r}\"]"
        );
        services.push(name.to_string());
    }
    write(&o.out.join("identities/all.txt"), &identities)?;
    Ok((yaml, persons, teams, services))
}

fn capital(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn key_entry(
    o: &Opts,
    rng: &mut StdRng,
    i: usize,
    persons: &[Person],
    teams: &[String],
    services: &[String],
    today: chrono::NaiveDate,
) -> String {
    let (store, env) = STORES[i % o.stores];
    let system = SYSTEMS[rng.gen_range(0..SYSTEMS.len())];
    let use_ = USES[rng.gen_range(0..USES.len())];
    let name = format!("{}{i:06}-{system}-{use_}", o.prefix);
    let oi = rng.gen_range(0..persons.len());
    let owner = &persons[oi];
    // Scopes: 1-3 of what the owner may grant (never configuration:write).
    let scopes: Vec<String> = match &owner.grants {
        Some(g) => {
            let n = rng.gen_range(1..=3.min(g.len()));
            g.choose_multiple(rng, n)
                .map(|(a, l)| {
                    let level = if *l == "write" && rng.gen_bool(0.5) {
                        "write"
                    } else {
                        "read"
                    };
                    format!("{a}:{level}")
                })
                .collect()
        }
        None => {
            let n = rng.gen_range(1..=3);
            AREAS
                .choose_multiple(rng, n)
                .map(|a| {
                    let level = if *a != "configuration" && rng.gen_bool(0.3) {
                        "write"
                    } else {
                        "read"
                    };
                    format!("{a}:{level}")
                })
                .collect()
        }
    };
    let mut s = String::new();
    let _ = writeln!(s, "  - name: {name}");
    let _ = writeln!(s, "    store: {store}");
    let _ = writeln!(s, "    owner: {}", owner.id);
    let _ = writeln!(
        s,
        "    purpose: {} {} integration ({env}), ticket LSIS-{}",
        capital(system),
        use_.replace('-', " "),
        1000 + i % 9000
    );
    if rng.gen_bool(0.5) {
        let _ = writeln!(s, "    scopes: [{}]", scopes.join(", "));
    } else {
        s.push_str("    scopes:\n");
        for sc in &scopes {
            let _ = writeln!(s, "      - {sc}");
        }
    }
    match rng.gen_range(0..10) {
        0..=5 => {
            let _ = writeln!(
                s,
                "    lifetime: {}",
                ["90d", "180d", "365d", "730d"][rng.gen_range(0..4)]
            );
        }
        6..=8 => {
            let d = today + chrono::Duration::days(rng.gen_range(120..700));
            let _ = writeln!(s, "    expires: {}", d.format("%Y-%m-%d"));
        }
        _ => {} // default_lifetime
    }
    if o.two_recipients {
        let mut other = rng.gen_range(0..persons.len());
        if other == oi {
            other = (other + 1) % persons.len();
        }
        let _ = writeln!(s, "    recipients: [{}]", persons[other].id);
    } else {
        match rng.gen_range(0..10) {
            0..=4 => {
                let other = &persons[rng.gen_range(0..persons.len())];
                let _ = writeln!(s, "    recipients: [{}]", other.id);
            }
            5 | 6 => {
                let _ = writeln!(
                    s,
                    "    recipients: [team:{}]",
                    teams[rng.gen_range(0..teams.len())]
                );
            }
            7 | 8 => {
                let _ = writeln!(
                    s,
                    "    recipients: [{}]",
                    services[rng.gen_range(0..services.len())]
                );
            }
            _ => {} // the owner only
        }
    }
    if rng.gen_bool(0.3) {
        let _ = writeln!(
            s,
            "    rotation: {{ every: {}, grace: {}, generation: 1 }}",
            ["180d", "365d"][rng.gen_range(0..2)],
            ["3d", "7d", "14d"][rng.gen_range(0..3)]
        );
    }
    if rng.gen_bool(0.4) {
        let _ = writeln!(
            s,
            "    quota: {}/day",
            [1000, 5000, 20000, 100000][rng.gen_range(0..4)]
        );
    }
    match rng.gen_range(0..3) {
        0 => {
            let _ = writeln!(
                s,
                "    labels: {{ ticket: LSIS-{}, system: {system} }}",
                1000 + i % 9000
            );
        }
        1 => {
            let _ = writeln!(
                s,
                "    labels:\n      ticket: LSIS-{}\n      cost-center: \"{}\"",
                1000 + i % 9000,
                4000 + i % 50
            );
        }
        _ => {}
    }
    if rng.gen_bool(0.04) {
        s.push_str("    state: disabled\n");
    }
    if rng.gen_bool(0.02) {
        s.push_str("    protected: true\n");
    }
    s
}

fn run(o: &Opts) -> Result<(), String> {
    if o.out.exists() && !o.force {
        let non_empty = std::fs::read_dir(&o.out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if non_empty {
            return Err(format!(
                "{} is not empty (pass --force to regenerate the spec files in it)",
                o.out.display()
            ));
        }
    }
    let keys_dir = o.out.join("keys");
    if keys_dir.exists() {
        std::fs::remove_dir_all(&keys_dir)
            .map_err(|e| format!("removing {}: {e}", keys_dir.display()))?;
    }
    let mut rng = StdRng::seed_from_u64(o.seed);
    write(&o.out.join("keyward.yaml"), &config_yaml(o))?;
    let (people_yaml, persons, teams, services) = people(o, &mut rng)?;
    write(&o.out.join("people.yaml"), &people_yaml)?;
    write(&o.out.join(".gitignore"), ".keyward/\nidentities/\n")?;

    let today = chrono::Utc::now().date_naive();
    let mut files: Vec<String> = (0..o.files)
        .map(|_| {
            String::from("# yaml-language-server: $schema=../../schemas/keys.schema.json\nkeys:\n")
        })
        .collect();
    for i in 0..o.keys {
        let entry = key_entry(o, &mut rng, i, &persons, &teams, &services, today);
        let f = &mut files[i % o.files];
        f.push_str(&entry);
        f.push('\n');
    }
    let groups = [
        "circulation",
        "discovery",
        "reporting",
        "resource-sharing",
        "systems",
    ];
    for (n, text) in files.iter().enumerate() {
        let group = groups[n % groups.len()];
        write(
            &keys_dir.join(group).join(format!("keys-{n:03}.yaml")),
            text,
        )?;
    }

    // Prove the repo is valid with the library itself.
    let loaded = keyward::spec::load(&o.out).map_err(|d| {
        format!(
            "the generated spec is invalid ({} errors); first: {}",
            d.error_count(),
            d.iter()
                .next()
                .map(|x| x.message.clone())
                .unwrap_or_default()
        )
    })?;
    let policy = keyward::policy::check(&loaded.spec, chrono::Utc::now());
    if policy.has_errors() {
        return Err(format!(
            "the generated spec breaks policy; first: {}",
            policy
                .iter()
                .next()
                .map(|x| x.message.clone())
                .unwrap_or_default()
        ));
    }
    eprintln!(
        "wrote {}: {} keys in {} files, {} stores, {} principals",
        o.out.display(),
        loaded.spec.keys.len(),
        o.files,
        loaded.spec.stores.len(),
        loaded.spec.principals.len()
    );
    Ok(())
}

fn main() -> ExitCode {
    match parse_args().and_then(|o| run(&o)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen_repo: {e}");
            ExitCode::FAILURE
        }
    }
}

//! The `plan` and `apply` flows end to end, as people and CI run them, reading top to
//! bottom as the data flows: load → policy → observe → diff → plan → guards → apply →
//! deliver → notify. Takes plain option structs (never clap types), prints the plan on
//! stdout and progress on stderr, and returns an `Outcome`. Orchestration only: must not
//! decide what changes (the diff) nor how keys change (`apply`).

mod base;
mod capabilities;
mod consoles;
mod execute;
pub mod load;
pub mod options;
mod pinned;
mod planning;
mod saved;
mod settings;
mod stores;

pub use load::{Desired, load_desired, load_or_report, policy_refuses};
pub use options::{ApplyRunOptions, Colors, PlanFormat, PlanOptions, Step, actor};

use crate::apply::Context;
use crate::clock::{Clock, SystemClock};
use crate::deliver::Outbox;
use crate::lease::Leases;
use crate::notify::Notice;
use crate::observe;
use crate::outcome::Outcome;
use crate::plan::{Plan, saved as saved_file};
use crate::store::Actor;
use anyhow::{Result, bail};
use planning::{Stores, make_plan, print_plan};
use std::path::Path;

/// `keyward plan`: load → policy → observe → diff → plan (→ saved file).
pub async fn plan(dir: &Path, opts: &PlanOptions, color: Colors) -> Result<Outcome> {
    let Some(desired) = load_desired(dir, opts.rev.as_deref(), color.err)? else {
        return Ok(Outcome::Error);
    };
    let now = SystemClock.now();
    if policy_refuses(&desired.loaded, now, color.err) {
        return Ok(Outcome::Refused);
    }
    // With --base, stores are opened with the base's connection settings (item 12 of
    // issue 15): the change under review cannot choose where the token goes, and a store
    // it adds is not contacted (observed as empty).
    let pinned = match &opts.base {
        Some(base) => Some(pinned::pin_to_base(&desired, base)?),
        None => None,
    };
    let opened = match &pinned {
        Some(p) => {
            let configs: Vec<_> = p.open.iter().collect();
            stores::open_configs(&desired, &configs, &opts.recreate_store, false)?
        }
        None => stores::open_stores(&desired, &opts.recreate_store, false)?,
    };
    let mut opened = match opened {
        Ok(o) => o,
        Err(stop) => return Ok(stop),
    };
    if let Some(p) = &pinned {
        let added = p.changes.iter().filter(|c| c.new_store);
        opened.absent.extend(added.map(|c| c.store.clone()));
    }
    let mut plan = make_plan(&desired, &opened.stores, &opened.absent, opts, now).await?;
    if let (Some(p), Some(b)) = (pinned, plan.base.as_mut()) {
        b.connection_changes = p.changes;
    }
    if opts.drift_only && plan.is_empty() && opts.format == PlanFormat::Text {
        println!("No drift: the live stores hold what keyward left in them.");
        return Ok(Outcome::Ok);
    }
    print_plan(&plan, opts.format, color.out);
    if let Some(out) = &opts.out {
        saved_file::write(out, &plan)?;
        eprintln!(
            "Saved the plan to {}. Apply exactly this plan with `keyward apply {}`.",
            out.display(),
            out.display()
        );
    }
    let changes = (opts.detailed_exitcode || opts.drift_only) && !plan.is_empty();
    drop_aside((desired, plan));
    Ok(if changes {
        Outcome::Changes
    } else {
        Outcome::Ok
    })
}

/// Free a large value (the loaded spec, the plan) on a thread of its own. The command
/// usually ends right after, and freeing 10,000 keys' allocations one by one was ~2.3% of
/// a plan's instructions, spent after the plan was printed; the process exiting ends the
/// thread, and in a longer-lived caller it finishes the job. Inline if no thread starts.
fn drop_aside<T: Send + 'static>(value: T) {
    let _ = std::thread::Builder::new()
        .name("drop".into())
        .spawn(move || drop(value));
}

/// `keyward apply` (a fresh plan) and `keyward apply FILE` (a saved plan): load → policy →
/// dirty check → lock → (plan → guards → apply → deliver) → unlock → notify.
pub async fn apply(dir: &Path, opts: &ApplyRunOptions, color: Colors) -> Result<Outcome> {
    let saved_plan = match saved::read(opts)? {
        Ok(p) => p,
        Err(stop) => return Ok(stop),
    };
    if opts.plan.out.is_some() {
        bail!("--out belongs to `keyward plan`; apply a saved plan with `keyward apply FILE`");
    }
    let rev = saved::revision_to_load(saved_plan.as_ref(), opts);
    let Some(desired) = load_desired(dir, rev.as_deref(), color.err)? else {
        return Ok(Outcome::Error);
    };
    if let Some(p) = &saved_plan
        && let Err(stop) = saved::check_spec(p, &desired)
    {
        return Ok(stop);
    }
    if let Some(store) = &opts.store
        && !desired.loaded.spec.stores.contains_key(store)
    {
        let known: Vec<&str> = desired
            .loaded
            .spec
            .stores
            .keys()
            .map(String::as_str)
            .collect();
        bail!(
            "--store {store}: keyward.yaml has no store `{store}` (its stores: {})",
            known.join(", ")
        );
    }
    let clock = SystemClock;
    if policy_refuses(&desired.loaded, clock.now(), color.err) {
        return Ok(Outcome::Refused);
    }
    if !execute::dirty_check(&desired, opts.allow_dirty, opts.commit_deliveries)? {
        return Ok(Outcome::Refused);
    }
    if opts.commit_deliveries && desired.git.is_none() {
        bail!(
            "--commit-deliveries needs a git repository, and {} is not in one",
            dir.display()
        );
    }
    let stores = match stores::open_stores(&desired, &opts.plan.recreate_store, true)? {
        Ok(o) => o.stores,
        Err(stop) => return Ok(stop),
    };
    let mut actor = actor();
    actor.commit = execute::recorded_commit(&desired);
    let ttl = crate::lease::ttl().map_err(anyhow::Error::msg)?;
    let locked = Locked {
        desired: &desired,
        stores: &stores,
        opts,
        clock: &clock,
        ttl,
    };
    // At a prompt the leases are taken only once the operator says yes; without one
    // (--auto-approve, a saved plan) before planning, as nothing waits in between.
    let result = if execute::asks_confirmation(opts, saved_plan.is_some()) {
        locked.apply_confirmed(color.out, actor.clone()).await
    } else {
        locked
            .apply_now(saved_plan.as_ref(), color.out, actor.clone())
            .await
    };
    let (outcome, notices) = result?;
    notify(&desired, &stores, notices, &actor, clock.now()).await;
    Ok(outcome)
}

/// Notifications go out after the locks are released, and whatever happens to them, the
/// apply's outcome stays what the apply earned (failures are retried next run). `None`:
/// the apply stopped before it could say anything.
async fn notify(
    desired: &Desired,
    stores: &Stores,
    notices: Option<Vec<Notice>>,
    actor: &Actor,
    now: chrono::DateTime<chrono::Utc>,
) {
    if let (Some(fresh), Some(_)) = (notices, &desired.loaded.spec.notify) {
        crate::notify::run_and_report(&desired.loaded.spec, stores, fresh, actor, now).await;
    }
}

/// What an apply works with; it holds the store leases while it changes anything.
struct Locked<'a> {
    desired: &'a Desired,
    stores: &'a Stores,
    opts: &'a ApplyRunOptions,
    clock: &'a dyn Clock,
    /// How long a lease lasts unless renewed (renewed every third of it while held).
    ttl: chrono::Duration,
}

/// An apply's outcome and the notices it owes (None: it stopped before changing anything).
type Applied = (Outcome, Option<Vec<Notice>>);

impl Locked<'_> {
    fn context<'c>(&'c self, leases: &'c Leases) -> Context<'c> {
        let spec = &self.desired.loaded.spec;
        Context {
            spec,
            stores: self.stores,
            outbox: Outbox::new(spec.delivery.outbox.clone()),
            clock: self.clock,
            leases,
        }
    }

    /// Take every store's lease (exit 3 when another apply holds one), renewed until
    /// released.
    async fn take(&self, actor: &Actor) -> Step<Leases> {
        Ok(match execute::lock(self.stores, actor, self.ttl).await? {
            Ok(taken) => Ok(Leases::hold(self.stores, taken, self.ttl)),
            Err(stop) => Err(stop),
        })
    }

    /// Under the leases: stores with emulated expiry or a grace to end are brought up to
    /// date (also when the plan turns out empty), then interrupted deliveries settled.
    async fn prepare(&self, cx: &Context<'_>) -> Result<()> {
        for line in crate::apply::enforce_stores(self.stores, self.clock.now()).await {
            eprintln!("{line}");
        }
        execute::recover(cx).await
    }

    /// lock → recover → plan → guards → apply → deliver → unlock.
    async fn apply_now(
        &self,
        saved_plan: Option<&Plan>,
        color: bool,
        actor: Actor,
    ) -> Result<Applied> {
        self.leased(&actor, async |cx: &Context<'_>| {
            let plan = match self.plan(saved_plan).await? {
                Ok(p) => p,
                Err(stop) => return Ok((stop, None)),
            };
            print_plan(&plan, self.opts.plan.format, color);
            if !plan.is_empty() && !execute::guards_pass(&plan, self.opts.force) {
                return Ok((Outcome::Refused, None));
            }
            self.run(cx, &plan, actor.clone()).await
        })
        .await
    }

    /// Take the leases, prepare the stores (`prepare`), run `f`, give the leases back.
    async fn leased(
        &self,
        actor: &Actor,
        f: impl AsyncFnOnce(&Context<'_>) -> Result<Applied>,
    ) -> Result<Applied> {
        let leases = match self.take(actor).await? {
            Ok(l) => l,
            Err(stop) => return Ok((stop, None)),
        };
        let cx = self.context(&leases);
        let result = match self.prepare(&cx).await {
            Ok(()) => f(&cx).await,
            Err(e) => Err(e),
        };
        drop(cx);
        leases.release(self.stores).await;
        result
    }

    /// At a prompt: recover (under a lease held only for that) → plan → guards → confirm
    /// → lock → recover → the stores still hold what the plan was made from → apply →
    /// unlock. No lease is held while the prompt waits, so another apply can run meanwhile;
    /// if it changed a key the plan was made from, this one refuses (exit 3).
    async fn apply_confirmed(&self, color: bool, actor: Actor) -> Result<Applied> {
        let prepared = self
            .leased(&actor, async |_| Ok((Outcome::Ok, None)))
            .await?;
        if prepared.0 != Outcome::Ok {
            return Ok(prepared);
        }
        let plan = match self.plan(None).await? {
            Ok(p) => p,
            Err(stop) => return Ok((stop, None)),
        };
        print_plan(&plan, self.opts.plan.format, color);
        if !plan.is_empty() {
            if !execute::guards_pass(&plan, self.opts.force) {
                return Ok((Outcome::Refused, None));
            }
            if let Some(stop) = execute::confirmation(self.opts, false)? {
                return Ok((stop, None));
            }
        }
        self.leased(&actor, async |cx: &Context<'_>| {
            let observed = observe::list_stores(self.stores).await?;
            if let Err(stop) = saved::confirmed_still_holds(&plan, &observed) {
                return Ok((stop, None));
            }
            self.run(cx, &plan, actor.clone()).await
        })
        .await
    }

    /// Under the leases, with the plan printed and past its guards: apply → deliver
    /// (commit). An empty plan prunes and commits what earlier applies left.
    async fn run(&self, cx: &Context<'_>, plan: &Plan, actor: Actor) -> Result<Applied> {
        let spec = &self.desired.loaded.spec;
        if plan.is_empty() {
            // Nothing new to tell, but notices earlier runs could not send are retried.
            let outcome = execute::nothing_to_apply(cx, self.desired, self.opts, plan);
            return Ok((outcome, Some(Vec::new())));
        }
        let commit = actor.commit.clone();
        let (rest, console_changes) = crate::console::checklist::split(plan, spec);
        let mut report =
            execute::run_changes(cx, &rest, self.opts.concurrency, actor.clone()).await;
        let pending = match consoles::run(cx, &console_changes, self.opts, &actor).await? {
            Ok(c) => consoles::merge(&mut report, c),
            Err(stop) => return Ok((stop, None)),
        };
        execute::report_applied(&spec.root, plan, &report);
        consoles::remind_to_commit(spec, &report, self.opts);
        execute::report_lost_leases(cx.leases);
        let settings_ok = settings::apply(self.desired, self.stores, plan, &actor).await;
        let mut outcome = self.deliver(&report);
        if !settings_ok {
            outcome = Outcome::Error;
        }
        if outcome == Outcome::Ok && !pending.is_empty() {
            outcome = consoles::pending_outcome(&pending);
        }
        let notices = crate::notify::after_apply(
            spec,
            &plan.actions,
            &report,
            commit.as_deref(),
            self.clock.now(),
        );
        Ok((outcome, Some(notices)))
    }

    /// observe → diff → plan: a fresh plan, or the saved one checked against the live state.
    async fn plan(&self, saved_plan: Option<&Plan>) -> Step<Plan> {
        match saved_plan {
            None => Ok(Ok(make_plan(
                self.desired,
                self.stores,
                &[],
                &self.opts.plan,
                self.clock.now(),
            )
            .await?)),
            Some(saved_plan) => {
                let (observed, seen) =
                    planning::observe_stores(self.stores, &self.desired.loaded.spec).await?;
                let caps = planning::capabilities_of(self.stores);
                saved::replan(self.desired, &observed, &caps, &seen, saved_plan)
            }
        }
    }

    /// Delivered secrets are valid: their envelopes are committed even after a failure.
    fn deliver(&self, report: &crate::apply::ApplyReport) -> Outcome {
        let mut outcome = Outcome::ok_if(report.ok());
        if self.opts.commit_deliveries
            && let Err(e) =
                execute::commit_deliveries(self.desired, self.opts.branch.as_deref(), report)
        {
            eprintln!("error: committing the deliveries failed: {e:#}");
            outcome = Outcome::Error;
        }
        if !report.ok() {
            eprintln!("  hint: fix the cause and run `keyward apply` again; it resumes safely.");
        }
        outcome
    }
}

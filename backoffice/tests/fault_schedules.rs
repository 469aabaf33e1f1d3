//! Seeded fault schedules over the refill flow (issue 18 §2), its concurrency cases, and
//! stateful HTTP sequences (§3): real PSDs and hosts against the meter server, the KMS and
//! the recharging center running in process behind fault-injecting fronts (`sim/mod.rs`
//! says how messages are lost, duplicated, delayed and reordered, and how services crash
//! and restart).
//!
//! Each schedule: M hosts (one customer each) refill their devices at once, under faults
//! chosen from the schedule's seed; a host may also crash (stop mid-refill, finishing it
//! only in a later run, as `openpsd refill --txn` does) or cancel. Then the faults stop,
//! every restarted service is back, unfinished refills are finished, and the invariants
//! are checked: every refill terminal, no hold open, what each card holds = what the meter
//! completed for it = what the RC debited, every account balanced, no alarm raised on an
//! honest card, every message the KMS sealed made by the RC.
//!
//! `OPENPSD_FAULT_SCHEDULES=<n>` sets the number of schedules (default 1000),
//! `OPENPSD_FAULT_SEED=<seed>` runs the one schedule of that seed (the replay command a
//! failure prints), `OPENPSD_FAULT_BASE=<seed>` starts the sequence elsewhere,
//! `OPENPSD_FAULT_POWER=<per mille>` sets the share of schedules in which services also lose
//! their power (default 250; `sim/mod.rs`, § Power cuts).
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod sim;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{parties, Admin, Host, Psd, Refused};
use openpsd_core::Status;
use openpsd_protocol::{Deposit, RefillView};
use sim::{Net, Rates, Rng};

/// One refill a host runs.
#[derive(Clone, Debug)]
struct Job {
    txn: String,
    card: usize,
    set: u8,
    amount: u64,
    customer: String,
}

/// How a refill ended, as the meter said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Completed,
    Released,
    Refused,
}

/// What a host does with a refill besides finishing it.
#[derive(Clone, Copy, Debug, Default)]
struct Whims {
    /// The host crashes before its `n`-th step (the refill stays for a later run).
    crash_at: Option<u32>,
    /// The host cancels at its `n`-th step.
    cancel_at: Option<u32>,
    /// In `voiding`, apply the original message first (the race the void may lose).
    original_first: bool,
}

/// The back office, its host and operator, and the cards (each owned by one customer).
struct World {
    net: std::sync::Arc<Net>,
    host: Host,
    admin: Admin,
    cards: Vec<Rc<RefCell<Psd>>>,
    /// Per card: its owner, and the sum the meter completed for it.
    owners: Vec<String>,
    completed: RefCell<Vec<u64>>,
    /// How refills ended, and the faults injected, by kind (for the figures).
    tally: RefCell<std::collections::BTreeMap<String, u64>>,
}

const MAX_DRIVE: Duration = Duration::from_secs(30);

fn retryable(e: &Refused) -> bool {
    e.status == 0 || e.status >= 500
}

impl World {
    async fn new(cards: usize, customers: usize) -> Rc<World> {
        let net = Net::start().await;
        let [meter, kms, rc] = &net.urls;
        let (host, admin) = parties(meter, kms, rc, &net.pki);
        let mut psds = Vec::new();
        let mut owners = Vec::new();
        for n in 0..cards {
            let psd = Psd::new(u32::try_from(200 + n).unwrap(), 0, &net.kms_public_key);
            let owner = format!("host{}", n % customers);
            admin.register_to(&psd, &owner).await;
            psds.push(Rc::new(RefCell::new(psd)));
            owners.push(owner);
        }
        for c in 0..customers {
            admin.fund(&format!("host{c}"), 20_000).await;
        }
        Rc::new(World {
            net,
            host,
            admin,
            completed: RefCell::new(vec![0; cards]),
            tally: RefCell::default(),
            cards: psds,
            owners,
        })
    }

    /// Books `amount` on `customer`'s account under `reference` (once).
    async fn deposit(&self, customer: &str, amount: u64, reference: &str) {
        let account = self.admin.customers.account(customer);
        let _: openpsd_protocol::Account = self
            .admin
            .rc
            .post(
                &format!("/v1/accounts/{account}/deposits"),
                &Deposit {
                    amount,
                    reference: reference.into(),
                },
            )
            .await
            .expect("deposit");
    }

    /// Drives `job` until the meter says it ended, the host crashes (`Ok(None)`) or it is
    /// stuck (`Err`).
    async fn drive(&self, job: &Job, whims: Whims) -> Result<Option<Ending>, String> {
        let start = Instant::now();
        let card = &self.cards[job.card];
        let dev = card.borrow().device_id();
        let mut view: Option<RefillView> = None;
        let mut last_err: Option<Refused> = None;
        let mut errors = 0u32;
        let mut step = 0u32;
        loop {
            if start.elapsed() > MAX_DRIVE {
                return Err(format!(
                    "refill {} stuck for {MAX_DRIVE:?}: last view {view:?}, last error {last_err:?}",
                    job.txn
                ));
            }
            if errors > 0 {
                let ms = 1u64 << errors.min(6);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            step += 1;
            if whims.crash_at == Some(step) {
                return Ok(None);
            }
            let v = match view.take() {
                Some(v) => v,
                None => match self
                    .host
                    .request(&job.txn, &dev, job.set, &job.customer, job.amount)
                    .await
                {
                    Ok(v) => v,
                    Err(e) if e.code == "device_quarantined" => {
                        let alarms = self.admin.alarms().await;
                        return Err(format!(
                            "refill {}: an honest card was quarantined: {e:?}\n{alarms:?}",
                            job.txn
                        ));
                    }
                    Err(e) => {
                        errors += 1;
                        last_err = Some(e);
                        continue;
                    }
                },
            };
            let txn = &job.txn;
            let answer = match v.state.as_str() {
                "completed" => return Ok(Some(Ending::Completed)),
                "released" => return Ok(Some(Ending::Released)),
                "refused" => return Ok(Some(Ending::Refused)),
                _ if whims.cancel_at == Some(step) => self.host.cancel(txn).await,
                "awaiting_audit" | "audit_accepted" => {
                    let audit = card.borrow_mut().audit(v.set, &v.nonce);
                    self.host.audit(txn, &audit).await
                }
                "message_issued" | "voiding" => {
                    let message = v.refill_message.clone().expect("message");
                    let mut order = vec![message];
                    if let Some(void) = v.void_message.clone() {
                        if whims.original_first {
                            order.push(void);
                        } else {
                            order.insert(0, void);
                        }
                    }
                    let audit = {
                        let mut c = card.borrow_mut();
                        // The first that applies wins; the other is refused by the card.
                        for m in &order {
                            match c.refill(v.set, m) {
                                Ok(_) | Err(Status::RefillReplayed) => break,
                                Err(_) => {}
                            }
                        }
                        if let Some(r) = &v.receipt {
                            let _ = c.receipt(r);
                        }
                        c.audit(v.set, v.confirm_nonce.as_deref().expect("nonce"))
                    };
                    self.host.confirm(txn, &audit).await
                }
                other => return Err(format!("refill {txn} in unknown state {other}")),
            };
            match answer {
                Ok(v2) => {
                    errors = 0;
                    view = Some(v2);
                }
                Err(e) if e.code == "device_quarantined" => {
                    let alarms = self.admin.alarms().await;
                    return Err(format!(
                        "refill {txn}: an honest card was quarantined: {e:?}\n{alarms:?}"
                    ));
                }
                Err(e) => {
                    // Retryable or not, the host asks where the refill stands and goes on
                    // from there; a refusal that repeats without end is "stuck".
                    if !retryable(&e) && e.code != "not_applied" {
                        errors += 1;
                    }
                    errors += 1;
                    last_err = Some(e);
                }
            }
        }
    }

    /// Everything that must hold once every refill ended: `ctx` names the schedule.
    async fn check(&self, txns: &[Job], ctx: &str) {
        // Every refill in a terminal state at the meter.
        for j in txns {
            let v = self.host.status(&j.txn).await.expect("status");
            assert!(
                matches!(v.state.as_str(), "completed" | "released" | "refused"),
                "{ctx}: refill {} ends {}",
                j.txn,
                v.state
            );
        }
        let l = self.admin.ledger().await;
        assert_eq!(
            (l.held, l.combinations_held),
            (0, 0),
            "{ctx}: holds left open: {l:?}"
        );
        assert_eq!(
            l.deposited,
            l.available + l.held + l.debited,
            "{ctx}: {l:?}"
        );
        assert_eq!(l.applied_amount, l.debited, "{ctx}: {l:?}");
        let completed = self.completed.borrow().clone();
        let mut on_cards = 0;
        for (i, card) in self.cards.iter().enumerate() {
            // Baselines are zero: control sum − baseline is the control sum.
            let credited = card.borrow_mut().credited();
            assert_eq!(
                credited, completed[i],
                "{ctx}: card {i} holds {credited}, the meter completed {}",
                completed[i]
            );
            on_cards += credited;
        }
        assert_eq!(
            on_cards, l.applied_amount,
            "{ctx}: Σ applied vs cards: {l:?}"
        );
        let mut owners = self.owners.clone();
        owners.dedup();
        owners.sort();
        owners.dedup();
        for o in &owners {
            let a = self.admin.account(o).await;
            assert_eq!(
                a.deposited,
                a.available + a.held + a.debited,
                "{ctx}: {a:?}"
            );
        }
        let alarms = self.admin.alarms().await;
        assert_eq!(
            alarms.raised, 0,
            "{ctx}: alarms raised on honest cards: {alarms:?}"
        );
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        let v = v.trim();
        v.strip_prefix("0x")
            .map_or_else(|| v.parse(), |h| u64::from_str_radix(h, 16))
            .unwrap_or_else(|e| panic!("{name}={v}: {e}"))
    })
}

/// The schedules' shape: devices, hosts, and fault rates.
const CARDS: usize = 4;
const HOSTS: usize = 2;
const RATES: Rates = Rates {
    message: 120,
    crash: 15,
    failpoint: 60,
    max_crashes: 2,
    power: 0,
};

/// Per mille of the random schedules where services also lose power, not only their
/// process (`OPENPSD_FAULT_POWER` sets it): in those, this share of the crashes
/// ([`POWER_CRASHES`]) are power cuts of one service's machine while the others run.
const POWER_SCHEDULES: u64 = 250;
const POWER_CRASHES: u64 = 600;

/// One schedule of seed `seed`: the hosts' refills under faults, then recovery and checks.
async fn schedule(w: &Rc<World>, seed: u64, prefix: &str) -> Result<(), String> {
    let mut r = Rng(seed);
    // Deposits (faults off): some customers topped up, some not (refusals happen).
    for c in 0..HOSTS {
        if r.chance(700) {
            w.deposit(
                &format!("host{c}"),
                500 + r.below(4_000),
                &format!("s{seed:x}-{c}"),
            )
            .await;
        }
    }
    // Every host: one or two refills of its cards, one after the other.
    let mut plans: Vec<Vec<(Job, Whims)>> = vec![Vec::new(); HOSTS];
    let mut k = 0;
    for (h, plan) in plans.iter_mut().enumerate() {
        for _ in 0..1 + r.below(2) {
            let mine: Vec<usize> = (0..CARDS).filter(|c| c % HOSTS == h).collect();
            let card = *r.pick(&mine);
            k += 1;
            let job = Job {
                txn: format!("s{seed:x}-{k}"),
                card,
                set: u8::try_from(r.below(2)).unwrap(),
                amount: 1 + r.below(3_000),
                customer: w.owners[card].clone(),
            };
            let whims = Whims {
                crash_at: r
                    .chance(150)
                    .then(|| 1 + u32::try_from(r.below(6)).unwrap()),
                cancel_at: r
                    .chance(120)
                    .then(|| 1 + u32::try_from(r.below(5)).unwrap()),
                original_first: r.chance(500),
            };
            plan.push((job, whims));
        }
    }
    let all: Vec<Job> = plans.iter().flatten().map(|(j, _)| j.clone()).collect();
    // Drawn apart, so that the schedules without power cuts keep their plans.
    let power = Rng(seed ^ 0x0050_5745_5243_5554).chance(power_share());
    w.net.begin(
        seed,
        Rates {
            power: if power { POWER_CRASHES } else { 0 },
            ..RATES
        },
    );
    if power {
        w.count("schedules with power cuts");
    }
    let mut tasks = Vec::new();
    for plan in plans {
        let w = Rc::clone(w);
        tasks.push(tokio::task::spawn_local(async move {
            let mut left = Vec::new();
            // A host finishes a card's unfinished refill before it starts another on it.
            let mut unfinished: Vec<Job> = Vec::new();
            for (job, whims) in plan {
                if let Some(i) = unfinished.iter().position(|u| u.card == job.card) {
                    let u = unfinished.remove(i);
                    match w.drive(&u, Whims::default()).await? {
                        Some(e) => w.ended(&u, e),
                        None => unreachable!("no crash asked"),
                    }
                }
                if whims.cancel_at.is_some() {
                    w.count("host cancels (planned)");
                }
                match w.drive(&job, whims).await? {
                    Some(e) => w.ended(&job, e),
                    None => {
                        w.count("host crashes");
                        unfinished.push(job);
                    }
                }
            }
            left.extend(unfinished);
            Ok::<_, String>(left)
        }));
    }
    let mut left = Vec::new();
    let mut failure = None;
    for t in tasks {
        match t.await {
            Ok(Ok(l)) => left.extend(l),
            Ok(Err(e)) => failure = Some(e),
            Err(e) => failure = Some(format!("a host panicked: {e}")),
        }
    }
    let faults = w.net.quiesce().await;
    for f in &faults {
        let kind: String = f.split([' ', '(']).next().unwrap_or("").into();
        let kind = if f.starts_with("crash ") && f.contains("failpoint") {
            "CrashAtFailpoint".into()
        } else {
            kind
        };
        w.count(&kind);
        let words: Vec<&str> = f.split(' ').collect();
        match words.as_slice() {
            // "PowerRecovered Meter kept 1 dropped 2 torn 0": what the disk did with the
            // writes not synced at the cut.
            ["PowerRecovered", _, "kept", k, "dropped", d, "torn", t] => {
                for (what, n) in [("kept", k), ("dropped", d), ("torn", t)] {
                    let n: u64 = n.parse().unwrap_or(0);
                    *w.tally
                        .borrow_mut()
                        .entry(format!("unsynced writes {what}"))
                        .or_default() += n;
                }
            }
            // Which requests the crashes killed in flight (by route).
            ["KilledInFlight", svc, method, path] => {
                w.count(&format!("KilledInFlight {svc} {method} {}", route(path)));
            }
            _ => {}
        }
    }
    let replay = || {
        format!(
            "{prefix} cargo test -p openpsd-backoffice --test fault_schedules \
             random_fault_schedules -- --nocapture\n(the schedules before it ran on the same \
             devices; OPENPSD_FAULT_SEED={seed:#x}{} runs this one alone on fresh ones)\n\
             faults injected: {faults:?}",
            power_env()
        )
    };
    if let Some(e) = failure {
        return Err(format!("{e}\nreplay: {}\n{}", replay(), w.net.dump()));
    }
    // Recovery: the hosts that crashed run again and finish their refills.
    for job in &left {
        match w.drive(job, Whims::default()).await {
            Ok(Some(e)) => w.ended(job, e),
            Ok(None) => unreachable!("no crash asked"),
            Err(e) => return Err(format!("recovery: {e}\nreplay: {}", replay())),
        }
    }
    let ctx = format!("schedule {seed:#x}");
    let checked = futures_catch(w.check(&all, &ctx)).await;
    checked.map_err(|e| format!("{e}\nreplay: {}", replay()))
}

/// The per mille of schedules with power cuts.
fn power_share() -> u64 {
    env_u64("OPENPSD_FAULT_POWER").unwrap_or(POWER_SCHEDULES)
}

/// ` OPENPSD_FAULT_POWER=n` when the run's share of schedules with power cuts is not the
/// default, for the replay commands (a schedule's plan depends on it).
fn power_env() -> String {
    if power_share() == POWER_SCHEDULES {
        String::new()
    } else {
        format!(" OPENPSD_FAULT_POWER={}", power_share())
    }
}

/// A request path without its IDs (`/v1/refills/*/audit`): the third segment, where the
/// services and hosts name things, when it holds a digit (`/v1/audits/verify` stays).
fn route(path: &str) -> String {
    path.split('/')
        .enumerate()
        .map(|(i, seg)| {
            if i == 3 && seg.bytes().any(|b| b.is_ascii_digit()) {
                "*"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl World {
    fn count(&self, what: &str) {
        *self.tally.borrow_mut().entry(what.to_owned()).or_default() += 1;
    }

    fn ended(&self, job: &Job, e: Ending) {
        self.count(&format!("{e:?}"));
        if e == Ending::Completed {
            self.completed.borrow_mut()[job.card] += job.amount;
        }
    }
}

/// Runs `f`, turning a failed assertion into an error (so the seed can be printed).
async fn futures_catch<F: std::future::Future<Output = ()>>(f: F) -> Result<(), String> {
    // The checks run on this task; a panic would lose the replay line, so it is caught.
    let f = std::panic::AssertUnwindSafe(f);
    match CatchUnwind(Box::pin(f.0)).await {
        Ok(()) => Ok(()),
        Err(p) => Err(p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a check panicked".into())),
    }
}

/// A future that catches its inner future's panic.
struct CatchUnwind<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future<Output = ()>> std::future::Future for CatchUnwind<F> {
    type Output = Result<(), Box<dyn std::any::Any + Send>>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(())) => std::task::Poll::Ready(Ok(())),
            Err(p) => std::task::Poll::Ready(Err(p)),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn random_fault_schedules() {
    tokio::task::LocalSet::new()
        .run_until(async {
            let w = World::new(CARDS, HOSTS).await;
            let (base, n) = match env_u64("OPENPSD_FAULT_SEED") {
                Some(s) => (s, 1),
                None => (
                    env_u64("OPENPSD_FAULT_BASE").unwrap_or(0x5EED_0000),
                    env_u64("OPENPSD_FAULT_SCHEDULES").unwrap_or(1000),
                ),
            };
            let seeds: Vec<u64> = (0..n).map(|i| base.wrapping_add(i)).collect();
            let started = Instant::now();
            for (i, &seed) in seeds.iter().enumerate() {
                // What replays this run up to this schedule.
                let prefix = format!(
                    "OPENPSD_FAULT_BASE={base:#x} OPENPSD_FAULT_SCHEDULES={}{}",
                    i + 1,
                    power_env()
                );
                if let Err(e) = schedule(&w, seed, &prefix).await {
                    panic!("schedule {seed:#x} failed: {e}");
                }
                if (i + 1) % 50 == 0 || i + 1 == seeds.len() {
                    let sealed = w.net.assert_kms_sealed_only_rc_combinations();
                    let l = w.admin.ledger().await;
                    let power = *w.net.recovered.lock().unwrap();
                    eprintln!(
                        "{} schedules in {:.1} s: {} restarts, {sealed} messages sealed, \
                         {} applied ({}), {} released; power cuts recovered: {} unsynced \
                         writes kept, {} dropped, {} torn",
                        i + 1,
                        started.elapsed().as_secs_f64(),
                        w.net
                            .restarts_done
                            .load(std::sync::atomic::Ordering::SeqCst),
                        l.combinations_applied,
                        l.applied_amount,
                        l.combinations_released,
                        power.kept,
                        power.dropped,
                        power.torn
                    );
                }
            }
            eprintln!("tally: {:?}", w.tally.borrow());
            // A run of many schedules must have injected every kind of fault: were the
            // fronts or the crash hook to stop firing, the schedules would pass as plain
            // runs and prove nothing.
            if seeds.len() >= 100 {
                let tally = w.tally.borrow();
                for kind in [
                    "LoseRequest",
                    "LoseReply",
                    "Duplicate",
                    "DuplicateAtOnce",
                    "Delay",
                    "CrashBefore",
                    "CrashAfter",
                    "CrashMidway",
                    "CrashMidwayDropped",
                    "KilledInFlight",
                    "CrashAtFailpoint",
                    "host crashes",
                ] {
                    assert!(
                        tally.get(kind).copied().unwrap_or(0) > 0,
                        "no {kind} in {} schedules: {tally:?}",
                        seeds.len()
                    );
                }
                // The power cuts too, when the run has them: every way the power goes, a
                // disk recovered after it, and writes that were not synced at the cut
                // lost or torn (a disk that kept everything would test nothing).
                if power_share() > 0 {
                    for kind in [
                        "schedules with power cuts",
                        "PowerCutBefore",
                        "PowerCutMidway",
                        "PowerCutAtSyncReached",
                        "PowerCutAtFailpoint",
                        "PowerRecovered",
                        "unsynced writes dropped",
                        "unsynced writes torn",
                    ] {
                        assert!(
                            tally.get(kind).copied().unwrap_or(0) > 0,
                            "no {kind} in {} schedules: {tally:?}",
                            seeds.len()
                        );
                    }
                }
                assert!(
                    w.net
                        .restarts_done
                        .load(std::sync::atomic::Ordering::SeqCst)
                        > 0
                );
            }
            w.net.stop().await;
        })
        .await;
}

// ---------------------------------------------------------------------------------------
// Stateful HTTP sequences (issue 18 §3): random interleavings of the refill and settlement
// calls, money checked after every one.
// ---------------------------------------------------------------------------------------

/// What the sequence generator remembers: every refill it made and its last view, every
/// audit the cards gave, every message and void the meter handed out.
#[derive(Default)]
struct Seen {
    jobs: Vec<Job>,
    views: Vec<Option<RefillView>>,
    audits: Vec<String>,
    messages: Vec<(usize, u8, String)>,
}

impl Seen {
    fn learn(&mut self, i: usize, v: &RefillView) {
        if let Some(m) = &v.refill_message {
            self.messages.push((self.jobs[i].card, v.set, m.clone()));
        }
        if let Some(m) = &v.void_message {
            self.messages.push((self.jobs[i].card, v.set, m.clone()));
        }
        self.views[i] = Some(v.clone());
    }
}

/// Checks what holds between any two calls: every account and the ledger balance, the RC
/// debited no more than the cards hold, and the cards hold no more than the RC debited or
/// still holds (value on a card is paid or held for); no alarm on honest cards.
async fn money_between_steps(w: &World, ctx: &str) {
    let l = w.admin.ledger().await;
    assert_eq!(
        l.deposited,
        l.available + l.held + l.debited,
        "{ctx}: {l:?}"
    );
    assert_eq!(l.applied_amount, l.debited, "{ctx}: {l:?}");
    let on_cards: u64 = w.cards.iter().map(|c| c.borrow_mut().credited()).sum();
    assert!(
        l.debited <= on_cards && on_cards <= l.debited + l.held,
        "{ctx}: cards hold {on_cards}, the RC debited {} and holds {}",
        l.debited,
        l.held
    );
    let alarms = w.admin.alarms().await;
    assert_eq!(
        alarms.raised, 0,
        "{ctx}: alarms raised on honest cards: {alarms:?}"
    );
}

/// One random call (or card command) of the sequence.
async fn random_step(w: &World, r: &mut Rng, seen: &mut Seen, seq: u64, n: u64) -> String {
    let any_job = |r: &mut Rng, seen: &Seen| {
        (!seen.jobs.is_empty()).then(|| usize::try_from(r.below(seen.jobs.len() as u64)).unwrap())
    };
    match r.below(11) {
        // A new refill of a random card (refused while another is outstanding).
        0 | 1 => {
            let card = usize::try_from(r.below(w.cards.len() as u64)).unwrap();
            let job = Job {
                txn: format!("q{seq:x}-{n}"),
                card,
                set: u8::try_from(r.below(2)).unwrap(),
                amount: 1 + r.below(4_000),
                customer: w.owners[card].clone(),
            };
            let dev = w.cards[card].borrow().device_id();
            let a = w
                .host
                .request(&job.txn, &dev, job.set, &job.customer, job.amount)
                .await;
            seen.jobs.push(job);
            seen.views.push(None);
            if let Ok(v) = &a {
                seen.learn(seen.jobs.len() - 1, v);
            }
            format!("request {a:?}")
        }
        // The same request again, or under the same ID for another amount.
        2 => {
            let Some(i) = any_job(r, seen) else {
                return "-".into();
            };
            let j = seen.jobs[i].clone();
            let dev = w.cards[j.card].borrow().device_id();
            let amount = if r.chance(800) {
                j.amount
            } else {
                j.amount + 1
            };
            let a = w
                .host
                .request(&j.txn, &dev, j.set, &j.customer, amount)
                .await;
            if let Ok(v) = &a {
                // The first request may have been refused (another was outstanding): then
                // this one made the refill, for its amount.
                seen.jobs[i].amount = v.amount;
                seen.learn(i, v);
            }
            format!("request again {} {a:?}", j.txn)
        }
        // AUDIT for a refill's nonce, posted.
        3 | 4 => {
            let Some(i) = any_job(r, seen) else {
                return "-".into();
            };
            let Some(v) = seen.views[i].clone() else {
                return "-".into();
            };
            let audit = w.cards[seen.jobs[i].card]
                .borrow_mut()
                .audit(v.set, &v.nonce);
            seen.audits.push(audit.clone());
            let a = w.host.audit(&v.client_txn_id, &audit).await;
            if let Ok(v) = &a {
                seen.learn(i, v);
            }
            format!("audit {} {a:?}", v.client_txn_id)
        }
        // A stale audit (any the cards gave before) posted as an audit or a confirmation.
        5 => {
            let Some(i) = any_job(r, seen) else {
                return "-".into();
            };
            if seen.audits.is_empty() {
                return "-".into();
            }
            let audit = r.pick(&seen.audits).clone();
            let txn = seen.jobs[i].txn.clone();
            let a = if r.chance(500) {
                w.host.audit(&txn, &audit).await
            } else {
                w.host.confirm(&txn, &audit).await
            };
            format!("stale audit {txn} {a:?}")
        }
        // REFILL with any message ever handed out (old ones and voids too), on its card.
        6 | 7 => {
            if seen.messages.is_empty() {
                return "-".into();
            }
            let (card, set, m) = r.pick(&seen.messages).clone();
            let a = w.cards[card].borrow_mut().refill(set, &m);
            format!("REFILL card {card} {:?}", a.map(|_| ()))
        }
        // The confirming AUDIT, posted.
        8 => {
            let Some(i) = any_job(r, seen) else {
                return "-".into();
            };
            let Some(v) = seen.views[i].clone() else {
                return "-".into();
            };
            let Some(nonce) = v.confirm_nonce.clone() else {
                return "-".into();
            };
            let audit = {
                let mut c = w.cards[seen.jobs[i].card].borrow_mut();
                if let Some(rc) = &v.receipt {
                    let _ = c.receipt(rc);
                }
                c.audit(v.set, &nonce)
            };
            seen.audits.push(audit.clone());
            let a = w.host.confirm(&v.client_txn_id, &audit).await;
            if let Ok(v) = &a {
                seen.learn(i, v);
            }
            format!("confirm {} {a:?}", v.client_txn_id)
        }
        // Cancel.
        9 => {
            let Some(i) = any_job(r, seen) else {
                return "-".into();
            };
            let txn = seen.jobs[i].txn.clone();
            let a = w.host.cancel(&txn).await;
            if let Ok(v) = &a {
                seen.learn(i, v);
            }
            format!("cancel {txn} {a:?}")
        }
        // An inspection (a plain audit: settles what the card shows).
        _ => {
            let card = usize::try_from(r.below(w.cards.len() as u64)).unwrap();
            let set = u8::try_from(r.below(2)).unwrap();
            let meter = w.host.as_customer(&w.owners[card]);
            let dev = w.cards[card].borrow().device_id();
            let v: Result<openpsd_protocol::InspectionView, _> = meter
                .post(
                    "/v1/inspections",
                    &openpsd_protocol::InspectionRequest {
                        device_id: dev,
                        set,
                    },
                )
                .await;
            let Ok(v) = v else {
                return format!("inspection {v:?}");
            };
            let audit = w.cards[card].borrow_mut().audit(set, &v.nonce);
            seen.audits.push(audit.clone());
            let a: Result<openpsd_protocol::InspectionView, _> = meter
                .post(
                    &format!("/v1/inspections/{}/audit", v.inspection_id),
                    &serde_json::json!({ "audit": audit }),
                )
                .await;
            format!("inspection card {card} {:?}", a.map(|_| ()))
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stateful_http_sequences() {
    tokio::task::LocalSet::new()
        .run_until(async {
            let w = World::new(3, 2).await;
            let base = env_u64("OPENPSD_SEQ_SEED").unwrap_or(0x5E0_0000);
            let sequences = env_u64("OPENPSD_SEQ_COUNT").unwrap_or(20);
            let started = Instant::now();
            let mut steps = 0;
            for s in 0..sequences {
                let seq = base.wrapping_add(s);
                let mut r = Rng(seq);
                let mut seen = Seen::default();
                let mut trail = Vec::new();
                // Half the sequences run with lost, duplicated and delayed messages and
                // crashes around every call; the money is checked with the network quiet.
                let faulty = r.chance(500);
                for c in 0..2 {
                    w.deposit(&format!("host{c}"), 20_000, &format!("q{seq:x}-{c}"))
                        .await;
                }
                for n in 0..40u64 {
                    if faulty {
                        w.net.begin(seq ^ (n << 32), RATES);
                    }
                    trail.push(random_step(&w, &mut r, &mut seen, seq, n).await);
                    drop(w.net.quiesce().await);
                    steps += 1;
                    let ctx = format!(
                        "sequence {seq:#x} step {n} (replay: OPENPSD_SEQ_SEED={seq:#x} \
                         OPENPSD_SEQ_COUNT=1 cargo test -p openpsd-backoffice --test \
                         fault_schedules stateful_http_sequences)\ntrail: {trail:#?}"
                    );
                    if let Err(e) = futures_catch(money_between_steps(&w, &ctx)).await {
                        panic!("{e}");
                    }
                }
                // Then every refill is finished (those the meter knows first: the others
                // were refused while one was outstanding, and are made now), and the exact
                // checks hold.
                let mut known = Vec::new();
                let mut unknown = Vec::new();
                for job in &seen.jobs {
                    if w.host.status(&job.txn).await.is_ok() {
                        known.push(job);
                    } else {
                        unknown.push(job);
                    }
                }
                for job in known.into_iter().chain(unknown) {
                    match w.drive(job, Whims::default()).await {
                        Ok(Some(_)) => {}
                        Ok(None) => unreachable!("no crash asked"),
                        Err(e) => panic!("sequence {seq:#x}: {e}\ntrail: {trail:#?}"),
                    }
                }
                let mut completed = vec![0; w.cards.len()];
                for job in &seen.jobs {
                    let v = w.host.status(&job.txn).await;
                    if let Ok(v) = v {
                        if v.state.as_str() == "completed" {
                            completed[job.card] += job.amount;
                        }
                    }
                }
                {
                    let mut c = w.completed.borrow_mut();
                    for (i, x) in completed.iter().enumerate() {
                        c[i] += x;
                    }
                }
                let ctx = format!("sequence {seq:#x}\ntrail: {trail:#?}");
                if let Err(e) = futures_catch(w.check(&seen.jobs, &ctx)).await {
                    panic!("{e}");
                }
            }
            eprintln!(
                "{sequences} sequences, {steps} steps in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            w.net.stop().await;
        })
        .await;
}

// ---------------------------------------------------------------------------------------
// Concurrency (issue 18 §2).
// ---------------------------------------------------------------------------------------

/// Joins local tasks, in order.
async fn join_all<T: 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

/// Eight hosts (customers) refill their sixteen cards all at once, three rounds, on a
/// quiet network: every refill completes and the books are exact after each round.
#[tokio::test(flavor = "multi_thread")]
async fn many_hosts_refill_many_devices_at_once() {
    tokio::task::LocalSet::new()
        .run_until(async {
            let w = World::new(16, 8).await;
            for round in 0..3u64 {
                let mut tasks = Vec::new();
                for card in 0..16 {
                    let w = Rc::clone(&w);
                    tasks.push(tokio::task::spawn_local(async move {
                        let job = Job {
                            txn: format!("m{round}-{card}"),
                            card,
                            set: u8::try_from(card % 2).unwrap(),
                            amount: 100 + 10 * card as u64 + round,
                            customer: w.owners[card].clone(),
                        };
                        let e = w.drive(&job, Whims::default()).await.unwrap();
                        assert_eq!(e, Some(Ending::Completed), "{job:?}");
                        w.ended(&job, Ending::Completed);
                        job
                    }));
                }
                let jobs = join_all(tasks).await;
                w.check(&jobs, &format!("round {round}")).await;
            }
            let l = w.admin.ledger().await;
            assert_eq!(l.combinations_applied, 48);
            w.net.stop().await;
        })
        .await;
}

/// Two hosts run whole refills of the same card at once, under the schedules' faults: the
/// meter lets one through at a time (the other is told `refill_outstanding` and tries
/// again), both complete, each is charged once.
#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_refill_one_device_at_once() {
    tokio::task::LocalSet::new()
        .run_until(async {
            let w = World::new(1, 1).await;
            let mut jobs = Vec::new();
            for round in 0..10u64 {
                let seed = 0x2AB0_0000 + round;
                w.net.begin(seed, RATES);
                let mut tasks = Vec::new();
                for h in 0..2u64 {
                    let w = Rc::clone(&w);
                    tasks.push(tokio::task::spawn_local(async move {
                        let job = Job {
                            txn: format!("two{round}-{h}"),
                            card: 0,
                            set: 0,
                            amount: 500 + h,
                            customer: w.owners[0].clone(),
                        };
                        let e = w.drive(&job, Whims::default()).await;
                        (job, e)
                    }));
                }
                for (job, e) in join_all(tasks).await {
                    let e = e.unwrap_or_else(|e| panic!("seed {seed:#x}: {e}"));
                    assert_eq!(e, Some(Ending::Completed), "{job:?}");
                    w.ended(&job, Ending::Completed);
                    jobs.push(job);
                }
                drop(w.net.quiesce().await);
                w.check(&jobs, &format!("round {round} (seed {seed:#x})"))
                    .await;
            }
            w.net.stop().await;
        })
        .await;
}

/// Once the message is issued, its confirmation (twice), an inspection of the card and
/// the owner's cancel race each other (all four sent at once), with the message applied
/// on the card before, or not: the hold is settled exactly once, the way the card shows,
/// and no alarm is raised.
#[tokio::test(flavor = "multi_thread")]
async fn confirm_races_cancel_and_inspection() {
    tokio::task::LocalSet::new()
        .run_until(async {
            let w = World::new(1, 1).await;
            let customer = w.owners[0].clone();
            let dev = w.cards[0].borrow().device_id();
            let mut jobs = Vec::new();
            for round in 0..12u64 {
                let job = Job {
                    txn: format!("race{round}"),
                    card: 0,
                    set: 0,
                    amount: 300 + round,
                    customer: customer.clone(),
                };
                let v = w
                    .host
                    .request(&job.txn, &dev, 0, &customer, job.amount)
                    .await
                    .unwrap();
                let audit = w.cards[0].borrow_mut().audit(0, &v.nonce);
                let v = w.host.audit(&job.txn, &audit).await.unwrap();
                assert_eq!(v.state.as_str(), "message_issued");
                let applied = round % 2 == 0;
                if applied {
                    w.cards[0]
                        .borrow_mut()
                        .refill(0, v.refill_message.as_deref().unwrap())
                        .unwrap();
                }
                let meter = w.host.as_customer(&customer);
                let insp: openpsd_protocol::InspectionView = meter
                    .post(
                        "/v1/inspections",
                        &openpsd_protocol::InspectionRequest {
                            device_id: dev.clone(),
                            set: 0,
                        },
                    )
                    .await
                    .unwrap();
                let (a1, a2, a3) = {
                    let mut c = w.cards[0].borrow_mut();
                    let cn = v.confirm_nonce.clone().unwrap();
                    (c.audit(0, &cn), c.audit(0, &insp.nonce), c.audit(0, &cn))
                };
                let insp_path = format!("/v1/inspections/{}/audit", insp.inspection_id);
                let insp_body = serde_json::json!({ "audit": a2 });
                let (c1, i, c2, x) = tokio::join!(
                    w.host.confirm(&job.txn, &a1),
                    meter.post::<_, serde_json::Value>(&insp_path, &insp_body),
                    w.host.confirm(&job.txn, &a3),
                    w.host.cancel(&job.txn),
                );
                // A confirmation may lose: not applied yet, or the cancel came first and
                // named a new confirm nonce (the audit after the void), which the audit
                // taken before does not answer. The drive below goes on from there.
                for r in [&c1, &c2, &x] {
                    if let Err(e) = r {
                        assert!(
                            matches!(
                                e.code.as_str(),
                                "not_applied" | "wrong_state" | "audit_nonce_mismatch"
                            ),
                            "round {round}: {e:?}"
                        );
                    }
                }
                if let Err(e) = &i {
                    panic!("round {round}: inspection refused: {e:?}");
                }
                let end = w
                    .drive(
                        &job,
                        Whims {
                            original_first: round % 4 == 1,
                            ..Whims::default()
                        },
                    )
                    .await
                    .unwrap()
                    .unwrap();
                if applied {
                    assert_eq!(end, Ending::Completed, "round {round}");
                }
                w.ended(&job, end);
                jobs.push(job);
                w.check(&jobs, &format!("round {round}")).await;
            }
            w.net.stop().await;
        })
        .await;
}

// ---------------------------------------------------------------------------------------
// What the schedules found, pinned with scripted faults.
// ---------------------------------------------------------------------------------------

/// Found by schedule 0x5eed0280: the KMS's receipt answer is lost (the refill stays
/// `audit_accepted`, its hold held); the owner cancels and the RC releases the hold, but
/// that answer is lost too; the host posts the audit again. The meter asked the RC for the
/// hold of the same request, got the released combination back as if it were held, had it
/// sealed and issued the message: the card took 11.09 that no hold paid for (and the
/// confirmation raised `settle_refused`). The RC now refuses a settled hold (`409
/// wrong_state`), so the refill ends with nothing on the card and nothing charged.
#[tokio::test(flavor = "multi_thread")]
async fn a_released_hold_is_never_sealed_into_a_message() {
    use sim::{Fault, Svc};
    tokio::task::LocalSet::new()
        .run_until(async {
            let w = World::new(1, 1).await;
            let customer = w.owners[0].clone();
            let dev = w.cards[0].borrow().device_id();
            let job = Job {
                txn: "released-1".into(),
                card: 0,
                set: 1,
                amount: 1_109,
                customer: customer.clone(),
            };
            w.net.script(&[
                (Svc::Kms, "POST /v1/receipts", Fault::LoseReply),
                (Svc::Rc, "POST /v1/combinations/*/settle", Fault::LoseReply),
            ]);
            let v = w
                .host
                .request(&job.txn, &dev, 1, &customer, job.amount)
                .await
                .unwrap();
            let audit = w.cards[0].borrow_mut().audit(1, &v.nonce);
            let e = w.host.audit(&job.txn, &audit).await.unwrap_err();
            assert_eq!(e.status, 503, "{e:?}");
            assert_eq!(w.admin.ledger().await.held, 1_109);
            let e = w.host.cancel(&job.txn).await.unwrap_err();
            assert_eq!(e.status, 503, "{e:?}");
            // The RC released the hold; the meter does not know it yet.
            assert_eq!(w.admin.ledger().await.held, 0);
            drop(w.net.quiesce().await);
            // The audit again: no message for a hold that is no longer held.
            let r = w.host.audit(&job.txn, &audit).await;
            assert!(
                r.as_ref().map_or(true, |v| v.refill_message.is_none()),
                "a message was issued for a released hold: {r:?}"
            );
            let end = w.drive(&job, Whims::default()).await.unwrap().unwrap();
            assert_ne!(end, Ending::Completed);
            assert_eq!(w.cards[0].borrow_mut().credited(), 0);
            w.check(&[job], "released hold").await;
            w.net.stop().await;
        })
        .await;
}

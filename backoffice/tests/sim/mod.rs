//! A fault-injecting back office for seeded simulation tests (issue 18 §2): the meter
//! server, the KMS and the recharging center run in this process on loopback (mutual TLS,
//! their SQLite files in a temporary directory), each behind a **fault-injecting front**
//! that a seeded RNG steers, and each can crash and restart from its database.
//!
//! # Why a front in each service's router, not `turmoil` or a TCP proxy
//!
//! `turmoil` simulates the network and the clock of tasks written against its own
//! sockets; the services bind tokio sockets, speak rustls and call each other with
//! reqwest, so using it would mean rewriting the kit's listener and upstream client. A
//! TCP proxy sees only TLS records: it cannot tell one request from the next on a
//! kept-alive connection, so "the request was applied but its reply lost" would be a
//! guess. The front here is an axum fallback wrapped around each service's own router
//! (the router the service program serves, with its access rules, behind the kit's real
//! TLS listener), so it acts per HTTP request, after TLS and the caller's certificate:
//!
//! | fault | what the front does | what the caller sees |
//! |---|---|---|
//! | request lost | cuts the connection before the service sees the request | transport error |
//! | reply lost | passes the request, waits for the answer, then cuts the connection | transport error; the service applied it |
//! | duplicated | passes the request twice, one after the other, answers the second | the retransmission's answer |
//! | duplicated at once | passes the request twice concurrently, answers the first | two copies racing inside the service |
//! | delayed | sleeps 1-20 ms before passing it | with several hosts, messages reordered |
//! | crash before / after | as request / reply lost, and the service is restarted | transport errors until it is back |
//!
//! The links covered are host → meter (the meter's front), meter → KMS and meter → RC
//! (their fronts): every message of the refill flow. "Cutting the connection" is a panic
//! in the request's connection task (message [`CUT`]; the test's panic hook keeps them
//! quiet), which closes the socket without an answer, exactly as a lost link or a dead
//! process would.
//!
//! # Crashes
//!
//! A crash restarts the service: the requests in flight in it are dropped, its listener
//! stops, its state (the meter's per-device locks, upstream connection pools,
//! credential cache) is dropped, and it is opened again from its data directory on the same
//! port, as `backoffice serve` would after a `kill -9`. Crashes happen between messages
//! (the fronts' crash faults) and **inside** a request at the kit's named failpoints
//! (`meter_audit_after_accept`, `meter_audit_after_hold`, `meter_audit_before_reply`,
//! `meter_confirm_after_settle`, `meter_cancel_before_reply`, `kms_seal_before_reply`,
//! `rc_hold_before_reply`, `rc_void_before_reply`, `rc_settle_before_reply`), armed in
//! process through [`openpsd_service_kit::failpoint::set_crash_hook`], and **at an
//! arbitrary await point** of a request ([`Fault::CrashMidway`]: the front drops the
//! request's handler future after a random 0-4 ms, wherever it is, then restarts the
//! service; a database step already on a blocking thread still ends, as if the crash came
//! just after it). Every crash also kills the other requests in flight in that service:
//! its front drops them where they stand (the instance's "died" signal, sent when the
//! crash is decided) before the listener stops.
//!
//! # Power cuts
//!
//! Each service's data directory is one machine's disk on the crash VFS
//! (`openpsd_sqlite::crash_vfs`, as in `power_loss.rs`): what was not synced is lost when
//! that machine's power goes. With [`Rates::power`], that share of the crashes decided above
//! are power cuts of the service's machine instead of its process's death, while the other
//! two services keep running and their messages keep being faulted: before a request
//! reaches it ([`Fault::PowerCutBefore`]), at a random point of a request
//! ([`Fault::PowerCutMidway`]: the disk goes off first, so a database step still running
//! on a blocking thread fails at its next write or sync), at one of its next syncs,
//! whichever request makes it ([`Fault::PowerCutAtSync`]: that fsync fails, a watcher sees
//! the disk off and restarts the service), and at a named failpoint. A machine without
//! power answers nothing (an answer made after the cut is cut). The service restarts once
//! its dead instance's connections have closed, from its files at their last synced content
//! plus a seeded part of the writes since (kept, dropped or torn at 512-byte sectors).
//! Not modelled: the key files and PKI the services write with plain `std::fs` at setup
//! (never during a schedule), directory entries, and PostgreSQL (the post office's
//! registry, not in the refill flow).
//!
//! # Determinism
//!
//! Each fault decision is a hash of the schedule's seed, the service, the request's path
//! (the IDs the services draw at random replaced by `*`; the hosts' transaction IDs kept)
//! and how many times that path was seen before in the schedule, and each failpoint crash
//! likewise of its name: the same messages in the same order get the same faults. With
//! several hosts at once the order in which their messages reach a shared path
//! (`/v1/combinations`, `/v1/audits/verify`) is the scheduler's, so a replay gets the same
//! plan but not always the same interleaving. Crashes midway (a timer racing the handler)
//! and the kill of the requests in flight at a crash depend on timing too: a replay has
//! the same plan, but which requests were in flight when a service died (the
//! `KilledInFlight <service> <request>` notes), how far a handler got before a midway crash
//! or power cut, and which sync an armed cut meets may differ; so may then the writes a
//! recovery keeps, which are seeded by the schedule, the service and the recovery's rank,
//! but drawn over whatever writes were pending.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use openpsd_service_kit::access::RateLimit;
use openpsd_service_kit::failpoint;
use openpsd_service_kit::pki::Pki;
use openpsd_service_kit::server::{bind, Service};
use openpsd_service_kit::tls::{server_config, ClientAuth, Role};
use openpsd_sqlite::crash_vfs::{self, Disk};
use tower::ServiceExt as _;

/// The panic message that cuts a connection (a lost message).
pub const CUT: &str = "simulated fault: connection cut";

/// A small deterministic RNG (splitmix64).
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// True with probability `per_mille` / 1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
    /// A uniformly chosen element.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let i = usize::try_from(self.below(items.len() as u64)).unwrap_or(0);
        &items[i]
    }
}

/// One of the three refill services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Svc {
    Meter,
    Kms,
    Rc,
}

impl Svc {
    fn index(self) -> usize {
        match self {
            Svc::Meter => 0,
            Svc::Kms => 1,
            Svc::Rc => 2,
        }
    }
    /// The service whose failpoint this is (by its name's prefix).
    fn of_failpoint(name: &str) -> Option<Svc> {
        if name.starts_with("meter_") {
            Some(Svc::Meter)
        } else if name.starts_with("kms_") {
            Some(Svc::Kms)
        } else if name.starts_with("rc_") {
            Some(Svc::Rc)
        } else {
            None
        }
    }
}

/// A fault the front applies to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    LoseRequest,
    LoseReply,
    Duplicate,
    DuplicateAtOnce,
    Delay(u64),
    CrashBefore,
    CrashAfter,
    /// A crash while the request is being handled: its handler is dropped at whatever
    /// await point it has reached after this many microseconds (if it has not answered
    /// yet), then the service restarts.
    CrashMidway(u64),
    /// The service's machine loses its power before the request reaches it: as
    /// [`Fault::CrashBefore`], and its disk keeps only what was synced (plus a seeded part
    /// of the rest) when it restarts.
    PowerCutBefore,
    /// The power goes while the request is being handled, after this many microseconds
    /// (if it has not answered yet): every write after that fails, the handler is dropped.
    PowerCutMidway(u64),
    /// The power goes at this many syncs from now of the service's disk (0: the next one),
    /// whichever request of the service makes it (this one, or one of those after it):
    /// that sync fails, its writes are left to the seeded recovery.
    PowerCutAtSync(u64),
}

/// How often faults happen in a schedule (per mille of requests or points reached).
#[derive(Clone, Copy, Debug)]
pub struct Rates {
    /// A message fault on a request.
    pub message: u64,
    /// A crash of the receiving service, between messages.
    pub crash: u64,
    /// A crash at a named failpoint reached.
    pub failpoint: u64,
    /// Crashes (restarts) allowed per schedule.
    pub max_crashes: u32,
    /// Of the crashes (between messages, midway or at a failpoint), those that are power
    /// cuts of the service's machine rather than the death of its process.
    pub power: u64,
}

/// The current schedule's plan, shared by the fronts and the failpoint hook.
pub struct Plan {
    seed: u64,
    rates: Rates,
    on: AtomicBool,
    crashes: AtomicU32,
    seen: Mutex<HashMap<(Svc, String), u64>>,
    log: Mutex<Vec<String>>,
    /// Faults a test scripted: the next request at that service and path gets it.
    script: Mutex<Vec<(Svc, String, Fault)>>,
}

impl Plan {
    fn new() -> Self {
        Plan {
            seed: 0,
            rates: Rates {
                message: 0,
                crash: 0,
                failpoint: 0,
                max_crashes: 0,
                power: 0,
            },
            on: AtomicBool::new(false),
            crashes: AtomicU32::new(0),
            seen: Mutex::default(),
            log: Mutex::default(),
            script: Mutex::default(),
        }
    }

    /// The RNG for the `n`-th time `key` is seen at `svc` in this schedule.
    fn rng(&self, svc: Svc, key: &str) -> Rng {
        let mut seen = self.seen.lock().unwrap();
        let n = seen.entry((svc, key.to_owned())).or_insert(0);
        *n += 1;
        let mut h = self.seed ^ (svc.index() as u64).wrapping_mul(0x1000_0000_01B3);
        for b in key.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
        }
        let mut r = Rng(h ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        r.next();
        r
    }

    fn take_crash(&self) -> bool {
        self.crashes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                (c < self.rates.max_crashes).then_some(c + 1)
            })
            .is_ok()
    }

    fn decide(&self, svc: Svc, key: &str) -> Option<Fault> {
        if !self.on.load(Ordering::SeqCst) {
            return None;
        }
        {
            let mut script = self.script.lock().unwrap();
            if let Some(i) = script.iter().position(|(s, k, _)| *s == svc && k == key) {
                return Some(script.remove(i).2);
            }
        }
        let mut r = self.rng(svc, key);
        if r.chance(self.rates.crash) && self.take_crash() {
            // Drawn only when the schedule has power cuts: without, the draws (and so the
            // faults) of a seed are those it had before power cuts existed.
            let power = self.rates.power > 0 && r.chance(self.rates.power);
            return Some(match (power, r.below(3)) {
                (false, 0) => Fault::CrashBefore,
                (false, 1) => Fault::CrashAfter,
                // Up to 4 ms: a refill's handler awaits its database and its upstream
                // services within that (a few hundred µs to a few ms each).
                (false, _) => Fault::CrashMidway(r.below(4_000)),
                (true, 0) => Fault::PowerCutBefore,
                // A refill step syncs once or twice per commit (WAL frames, then a
                // checkpoint now and then): within the next few of the service's syncs.
                (true, 1) => Fault::PowerCutAtSync(r.below(4)),
                (true, _) => Fault::PowerCutMidway(r.below(4_000)),
            });
        }
        if !r.chance(self.rates.message) {
            return None;
        }
        Some(match r.below(5) {
            0 => Fault::LoseRequest,
            1 => Fault::LoseReply,
            2 => Fault::Duplicate,
            3 => Fault::DuplicateAtOnce,
            _ => Fault::Delay(1 + r.below(20)),
        })
    }

    fn note(&self, what: String) {
        self.log.lock().unwrap().push(what);
    }
}

/// The three services, their fronts and their data.
pub struct Net {
    dir: tempfile::TempDir,
    pub pki: Pki,
    pub kms_public_key: [u8; 65],
    recharge_public_key: [u8; 65],
    addrs: [SocketAddr; 3],
    /// `https://…` of the meter, the KMS and the RC.
    pub urls: [String; 3],
    services: [tokio::sync::Mutex<Option<Service>>; 3],
    plan: Mutex<Arc<Plan>>,
    restarts: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Restarts done since the start.
    pub restarts_done: AtomicU32,
    /// Per service, the running instance's "process died" signal: every request in flight
    /// in its front is dropped when it is set (a crash kills them all, not only the one
    /// that met the fault).
    killed: [Mutex<tokio::sync::watch::Sender<bool>>; 3],
    /// Per service, its machine's disk: every SQLite file in its data directory is on the
    /// crash VFS, which forgets what was not synced when the power is cut.
    disks: [Arc<Disk>; 3],
    /// What the recoveries after power cuts did with the unsynced writes, summed.
    pub recovered: Mutex<crash_vfs::Recovered>,
}

/// Rate limits out of the way: the schedules make thousands of requests a second.
const RATE: u32 = 1_000_000;

impl Net {
    /// Starts the RC, the KMS and the meter behind their fronts (no fault until a
    /// schedule begins), and installs the failpoint crash hook.
    pub async fn start() -> Arc<Net> {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = openpsd_backoffice::server::local_pki(dir.path()).expect("PKI");
        let mut listeners = Vec::new();
        for _ in 0..3 {
            listeners.push(bind("127.0.0.1:0", None).await.expect("bind"));
        }
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr().expect("addr"))
            .collect();
        drop(listeners);
        let addrs: [SocketAddr; 3] = addrs.try_into().expect("3");
        // Each service's machine has its own disk (and power supply), made before any of
        // its databases is opened so that every connection's files are tracked.
        let disks = [Svc::Meter, Svc::Kms, Svc::Rc].map(|svc| {
            let d = dir.path().join(data_dir(svc));
            std::fs::create_dir_all(&d).expect("data directory");
            Disk::new(&d).expect("the crash VFS")
        });
        let rc_dir = dir.path().join("recharge");
        // Opening the RC makes its key; the KMS is configured with its public half.
        drop(openpsd_recharge::Recharge::open(&rc_dir).expect("RC opens"));
        let recharge_public_key =
            openpsd_kms::read_public_key(&openpsd_recharge::Recharge::public_key_path(&rc_dir))
                .expect("RC public key");
        let kms = openpsd_backoffice::server::open_kms(
            &dir.path().join("kms"),
            recharge_public_key,
            None,
        )
        .expect("KMS opens");
        let kms_public_key = kms.public_key();
        drop(kms);
        let net = Arc::new(Net {
            urls: addrs.map(|a| format!("https://{a}")),
            dir,
            pki,
            kms_public_key,
            recharge_public_key,
            addrs,
            services: Default::default(),
            plan: Mutex::new(Arc::new(Plan::new())),
            restarts: Mutex::default(),
            restarts_done: AtomicU32::new(0),
            killed: std::array::from_fn(|_| Mutex::new(tokio::sync::watch::channel(false).0)),
            disks,
            recovered: Mutex::default(),
        });
        for svc in [Svc::Rc, Svc::Kms, Svc::Meter] {
            let s = net.open(svc).await;
            *net.services[svc.index()].lock().await = Some(s);
        }
        install_crash_hook();
        quiet_simulated_panics();
        net
    }

    /// The data directory of a service (its SQLite file is inside).
    pub fn data(&self, svc: Svc) -> PathBuf {
        self.dir.path().join(data_dir(svc))
    }

    fn current(&self) -> Arc<Plan> {
        Arc::clone(&self.plan.lock().unwrap())
    }

    /// Begins a schedule: faults from now on as `rates` say, decided from `seed`.
    pub fn begin(&self, seed: u64, rates: Rates) {
        let plan = Plan {
            seed,
            rates,
            on: AtomicBool::new(true),
            ..Plan::new()
        };
        *self.plan.lock().unwrap() = Arc::new(plan);
    }

    /// Begins a scripted run: no random fault, only these, each once, at the next request
    /// to that service and path (`"POST /v1/receipts"`; random IDs written `*`).
    pub fn script(&self, faults: &[(Svc, &str, Fault)]) {
        let plan = Plan {
            on: AtomicBool::new(true),
            script: Mutex::new(
                faults
                    .iter()
                    .map(|(s, k, f)| (*s, (*k).to_owned(), *f))
                    .collect(),
            ),
            ..Plan::new()
        };
        *self.plan.lock().unwrap() = Arc::new(plan);
    }

    /// Ends the schedule's faults and waits until every restarted service is back: the
    /// recovery that follows runs on a quiet network. Answers the faults injected.
    pub async fn quiesce(&self) -> Vec<String> {
        let plan = self.current();
        plan.on.store(false, Ordering::SeqCst);
        loop {
            let pending: Vec<_> = std::mem::take(&mut *self.restarts.lock().unwrap());
            if pending.is_empty() {
                break;
            }
            for h in pending {
                h.await.expect("restart task");
            }
        }
        let log = plan.log.lock().unwrap().clone();
        log
    }

    /// The running instance of `svc` dies now and is restarted in the background.
    fn restart_later(self: &Arc<Self>, svc: Svc) {
        // The requests in flight in it die now, with the crash decision, not when the
        // restart task first runs: none of them may take another step (or answer) after.
        self.die(svc);
        let net = Arc::clone(self);
        let h = tokio::spawn(async move { net.restart(svc).await });
        self.restarts.lock().unwrap().push(h);
    }

    /// The running instance's "died" signal: every request in flight in it is dropped.
    fn die(&self, svc: Svc) {
        self.killed[svc.index()].lock().unwrap().send_replace(true);
    }

    /// The power of `svc`'s machine goes now: nothing more reaches its disk, and the
    /// service restarts from what the disk kept. The other services keep running.
    fn power_cut(self: &Arc<Self>, svc: Svc) {
        self.disks[svc.index()].cut_now();
        self.restart_later(svc);
    }

    /// The power of `svc`'s machine goes at its `n`-th sync from now: a watcher restarts
    /// the service once it has (or takes the cut back when the schedule ends first).
    fn power_cut_at_sync(self: &Arc<Self>, svc: Svc, n: u64, plan: Arc<Plan>) {
        let disk = Arc::clone(&self.disks[svc.index()]);
        disk.cut_at_sync(n);
        let net = Arc::clone(self);
        let h = tokio::spawn(async move {
            loop {
                let quiet = !plan.on.load(Ordering::SeqCst);
                if quiet {
                    // The schedule ended before the cut: taken back, unless it just came.
                    disk.disarm();
                }
                if disk.is_off() {
                    net.die(svc);
                    plan.note(format!("PowerCutAtSyncReached {svc:?}"));
                    net.restart_after_cut(svc).await;
                    return;
                }
                if quiet {
                    plan.note(format!("PowerCutAtSyncNotReached {svc:?}"));
                    return;
                }
                tokio::time::sleep(Duration::from_micros(300)).await;
            }
        });
        self.restarts.lock().unwrap().push(h);
    }

    /// Stops `svc` and opens it again from its data directory on the same address.
    pub async fn restart(self: &Arc<Self>, svc: Svc) {
        let slot = self.services[svc.index()].lock().await;
        self.restart_in(svc, slot).await;
    }

    /// [`Net::restart`] after a cut at a sync, unless the cut came while another restart
    /// was opening the service (which then recovered the disk itself).
    async fn restart_after_cut(self: &Arc<Self>, svc: Svc) {
        let slot = self.services[svc.index()].lock().await;
        if self.disks[svc.index()].is_off() {
            self.restart_in(svc, slot).await;
        }
    }

    async fn restart_in(
        self: &Arc<Self>,
        svc: Svc,
        mut slot: tokio::sync::MutexGuard<'_, Option<Service>>,
    ) {
        if let Some(old) = slot.take() {
            // The process dies: every request in flight in it dies with it.
            self.die(svc);
            old.stop().await;
        }
        *slot = Some(self.open(svc).await);
        self.restarts_done.fetch_add(1, Ordering::SeqCst);
    }

    /// After a power cut, once every connection of the dead instance has closed: the disk
    /// of `svc` keeps its synced content and a seeded part of the rest, and powers on.
    async fn recover_if_off(&self, svc: Svc) {
        let disk = &self.disks[svc.index()];
        if !disk.is_off() {
            return;
        }
        let plan = self.current();
        // Which unsynced writes survive: the schedule's seed, the service, the how-many-th.
        let seed = plan.rng(svc, "power recovery").next();
        let mut last = None;
        // The dead instance's last steps end on blocking threads, its connections with them.
        for _ in 0..500 {
            match disk.recover(seed) {
                Ok(r) => {
                    plan.note(format!(
                        "PowerRecovered {svc:?} kept {} dropped {} torn {}",
                        r.kept, r.dropped, r.torn
                    ));
                    let mut sum = self.recovered.lock().unwrap();
                    sum.kept += r.kept;
                    sum.dropped += r.dropped;
                    sum.torn += r.torn;
                    return;
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{svc:?}: the disk does not recover after a power cut: {last:?}");
    }

    /// Opens `svc` from its data directory and serves it behind its front.
    async fn open(self: &Arc<Self>, svc: Svc) -> Service {
        let limit = RateLimit::new(RATE, RATE);
        // A stopped instance's last connections may still hold its database's lock for a
        // moment (the kit's `Db::open` waits a little too): try again briefly.
        let mut tries = 0;
        let (router, role, auth) = loop {
            // After a power cut (or one that came while this instance was opening).
            self.recover_if_off(svc).await;
            let opened = match svc {
                Svc::Rc => openpsd_recharge::Recharge::open(&self.data(svc))
                    .map(|rc| (rc.router(&limit), Role::Recharge, ClientAuth::Required)),
                Svc::Kms => openpsd_backoffice::server::open_kms(
                    &self.data(svc),
                    self.recharge_public_key,
                    None,
                )
                .map(|k| (k.router(&limit), Role::Kms, ClientAuth::Required)),
                Svc::Meter => openpsd_backoffice::server::open_meter(
                    &self.data(svc),
                    [&self.urls[1], &self.urls[2]],
                    None,
                    [None, None],
                    &self.pki,
                    RATE,
                )
                .map(|m| (m.router(), Role::Meter, ClientAuth::Optional)),
            };
            match opened {
                Ok(x) => break x,
                Err(e) if tries < 100 => {
                    tries += 1;
                    if tries == 100 {
                        panic!("{svc:?} does not open again: {e:#}");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("{svc:?} does not open again: {e:#}"),
            }
        };
        let tls = server_config(&self.pki, role, auth).expect("TLS");
        let addr = self.addrs[svc.index()].to_string();
        let mut listener = None;
        for _ in 0..100 {
            match bind(&addr, Some(Arc::clone(&tls))).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let listener = listener.unwrap_or_else(|| panic!("{svc:?} cannot bind {addr} again"));
        let name = match svc {
            Svc::Meter => "meter",
            Svc::Kms => "kms",
            Svc::Rc => "recharge",
        };
        let (kill, killed) = tokio::sync::watch::channel(false);
        *self.killed[svc.index()].lock().unwrap() = kill;
        Service::spawn(name, listener, self.front(svc, router, killed)).expect("serve")
    }

    /// The fault-injecting front around `inner`.
    fn front(
        self: &Arc<Self>,
        svc: Svc,
        inner: Router,
        killed: tokio::sync::watch::Receiver<bool>,
    ) -> Router {
        let net = Arc::downgrade(self);
        Router::new().fallback(move |req: Request| {
            let inner = inner.clone();
            let net = net.clone();
            let scope = (net.clone(), svc);
            let mut killed = killed.clone();
            let witness = net.clone();
            let key = format!("{} {}", req.method(), template(req.uri().path()));
            let killed_key = key.clone();
            let request = async move {
                let Some(net) = net.upgrade() else {
                    return pass(inner, req).await;
                };
                let plan = net.current();
                let Some(fault) = plan.decide(svc, &key) else {
                    return pass(inner, req).await;
                };
                plan.note(format!("{fault:?} {svc:?} {key}"));
                match fault {
                    Fault::LoseRequest => cut(),
                    Fault::LoseReply => {
                        drop(pass(inner, req).await);
                        cut()
                    }
                    Fault::Delay(ms) => {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        pass(inner, req).await
                    }
                    Fault::Duplicate => {
                        let (a, b) = twice(req).await;
                        drop(pass(inner.clone(), a).await);
                        pass(inner, b).await
                    }
                    Fault::DuplicateAtOnce => {
                        let (a, b) = twice(req).await;
                        let (x, y) = tokio::join!(pass(inner.clone(), a), pass(inner, b));
                        drop(y);
                        x
                    }
                    Fault::CrashBefore => {
                        net.restart_later(svc);
                        cut()
                    }
                    Fault::CrashAfter => {
                        drop(pass(inner, req).await);
                        net.restart_later(svc);
                        cut()
                    }
                    Fault::CrashMidway(us) => {
                        // The handler's future is dropped where it stands: a transaction
                        // not committed is rolled back with its connection; work already
                        // handed to a blocking thread (one database step) still ends, as
                        // if the process had died just after it.
                        let handled =
                            tokio::time::timeout(Duration::from_micros(us), pass(inner, req)).await;
                        if handled.is_err() {
                            // Counted apart: the crash came before the handler answered.
                            plan.note(format!("CrashMidwayDropped {svc:?} {key}"));
                        }
                        drop(handled);
                        net.restart_later(svc);
                        cut()
                    }
                    Fault::PowerCutBefore => {
                        net.power_cut(svc);
                        cut()
                    }
                    Fault::PowerCutMidway(us) => {
                        // As `CrashMidway`, but a database step still running on a
                        // blocking thread fails at its next write or sync: the power is
                        // off before the handler is dropped.
                        let handler = pass(inner, req);
                        tokio::pin!(handler);
                        let answered = tokio::select! {
                            biased;
                            _ = &mut handler => true,
                            () = tokio::time::sleep(Duration::from_micros(us)) => false,
                        };
                        if !answered {
                            plan.note(format!("PowerCutMidwayDropped {svc:?} {key}"));
                        }
                        // The power goes while the handler (if it has not answered) still
                        // stands where it was; it is dropped with this task.
                        net.power_cut(svc);
                        cut()
                    }
                    Fault::PowerCutAtSync(n) => {
                        net.power_cut_at_sync(svc, n, Arc::clone(&plan));
                        pass(inner, req).await
                    }
                }
            };
            FRONT.scope(scope, async move {
                tokio::select! {
                    response = request => {
                        // A machine without power answers nothing: an answer made after
                        // the cut (a storage error, most likely) is never sent.
                        if let Some(net) = witness.upgrade() {
                            if net.disks[svc.index()].is_off() {
                                net.current()
                                    .note(format!("AnswerLostToPowerCut {svc:?} {killed_key}"));
                                cut();
                            }
                        }
                        response
                    }
                    // The instance crashed while this request was in it.
                    _ = killed.wait_for(|dead| *dead) => {
                        if let Some(net) = witness.upgrade() {
                            net.current().note(format!("KilledInFlight {svc:?} {killed_key}"));
                        }
                        cut()
                    }
                }
            })
        })
    }

    /// Stops every service.
    pub async fn stop(&self) {
        drop(self.quiesce().await);
        for s in &self.services {
            if let Some(s) = s.lock().await.take() {
                s.stop().await;
            }
        }
    }

    /// Every refill message the KMS sealed is a combination (or the void of one) the RC
    /// made and signed: same device, license, amount, precondition, RC signature. Answers
    /// how many were checked.
    pub fn assert_kms_sealed_only_rc_combinations(&self) -> usize {
        let kms = open_ro(&self.data(Svc::Kms).join("kms.sqlite"));
        let rc = open_ro(&self.data(Svc::Rc).join("recharge.sqlite"));
        let mut st = kms
            .prepare(
                "SELECT combination_id, device_id, license, amount, control_sum, refills, signature
                 FROM refill_messages",
            )
            .expect("KMS log");
        type Row = (String, String, i64, i64, i64, i64, String);
        let sealed: Vec<Row> = st
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        for (id, device, license, amount, cs, refills, sig) in &sealed {
            let made: Option<Row> = rc
                .query_row(
                    "SELECT combination_id, device_id, license, amount, control_sum, refills, signature
                     FROM combinations WHERE combination_id = ?1
                     UNION ALL
                     SELECT void_combination_id, device_id, license, 0, control_sum, refills,
                            void_signature
                     FROM combinations WHERE void_combination_id = ?1",
                    [id],
                    |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                        ))
                    },
                )
                .ok();
            let Some(made) = made else {
                panic!("the KMS sealed combination {id}, which the RC never made");
            };
            assert_eq!(
                (
                    &made.1.to_ascii_uppercase(),
                    made.2,
                    made.3,
                    made.4,
                    made.5,
                    &made.6
                ),
                (
                    &device.to_ascii_uppercase(),
                    *license,
                    *amount,
                    *cs,
                    *refills,
                    sig
                ),
                "the KMS sealed {id} other than the RC made it"
            );
        }
        sealed.len()
    }
}

tokio::task_local! {
    /// The front (its network and service) a request is being served behind: what the
    /// failpoint hook asks, since one test binary may run several networks at once.
    static FRONT: (std::sync::Weak<Net>, Svc);
}

/// Installs (once per process) the failpoint crash hook: at a point reached behind a
/// front whose schedule is on, a crash with the schedule's failpoint rate (and the
/// service restarted).
fn install_crash_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        failpoint::set_crash_hook(Some(Arc::new(|name: &str| {
            let Ok((net, svc)) = FRONT.try_with(Clone::clone) else {
                return false;
            };
            let Some(net) = net.upgrade() else {
                return false;
            };
            if Svc::of_failpoint(name) != Some(svc) {
                return false;
            }
            let plan = net.current();
            if !plan.on.load(Ordering::SeqCst) {
                return false;
            }
            let mut r = plan.rng(svc, name);
            if r.chance(plan.rates.failpoint) && plan.take_crash() {
                if plan.rates.power > 0 && r.chance(plan.rates.power) {
                    plan.note(format!("PowerCutAtFailpoint {svc:?} {name}"));
                    net.power_cut(svc);
                } else {
                    plan.note(format!("crash {svc:?} at failpoint {name}"));
                    net.restart_later(svc);
                }
                return true;
            }
            false
        })));
    });
}

/// The data directory of a service, under the network's directory.
fn data_dir(svc: Svc) -> &'static str {
    match svc {
        Svc::Meter => "meter",
        Svc::Kms => "kms",
        Svc::Rc => "recharge",
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for d in &self.disks {
            crash_vfs::forget(d);
        }
    }
}

/// A path with the IDs the services make at random (combination IDs, inspection IDs: hex
/// of 16 characters or more) replaced by `*`, so that fault decisions do not depend on
/// them; the hosts' transaction IDs, which the schedule makes, stay.
fn template(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.len() >= 16 && seg.bytes().all(|b| b.is_ascii_hexdigit()) {
                "*"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl Net {
    /// The meter's refills and the RC's combinations, one line each, for a failure report.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        let meter = open_ro(&self.data(Svc::Meter).join("meter.sqlite"));
        let mut st = meter
            .prepare(
                "SELECT client_txn_id, device_id, set_index, amount, state, bound_control_sum,
                        bound_refills, combination_id, void_combination_id, updated_at
                 FROM refills ORDER BY created_at, client_txn_id",
            )
            .expect("refills");
        let rows = st
            .query_map([], |r| {
                Ok(format!(
                    "refill {:?} dev {:?} set {:?} amount {:?} {:?} bound ({:?}, {:?}) comb {:?} void {:?}",
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                ))
            })
            .expect("query");
        for row in rows {
            out.push_str(&row.expect("row"));
            out.push('\n');
        }
        let rc = open_ro(&self.data(Svc::Rc).join("recharge.sqlite"));
        let mut st = rc
            .prepare(
                "SELECT combination_id, request_id, device_id, amount, control_sum, refills, state,
                        void_combination_id
                 FROM combinations ORDER BY created_at, combination_id",
            )
            .expect("combinations");
        let rows = st
            .query_map([], |r| {
                Ok(format!(
                    "combination {:?} request {:?} dev {:?} amount {:?} precondition ({:?}, {:?}) {:?} void {:?}",
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, Option<String>>(7)?,
                ))
            })
            .expect("query");
        for row in rows {
            out.push_str(&row.expect("row"));
            out.push('\n');
        }
        out
    }
}

fn open_ro(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn pass(inner: Router, req: Request) -> Response {
    match inner.oneshot(req).await {
        Ok(r) => r,
        Err(e) => match e {},
    }
}

/// The request and a copy of it (body read once).
async fn twice(req: Request) -> (Request, Request) {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let copy = || {
        let mut b = axum::http::Request::builder()
            .method(parts.method.clone())
            .uri(parts.uri.clone())
            .version(parts.version);
        if let Some(h) = b.headers_mut() {
            *h = parts.headers.clone();
        }
        let mut r = b.body(Body::from(bytes.clone())).expect("request");
        *r.extensions_mut() = parts.extensions.clone();
        r
    };
    (copy(), copy())
}

/// Cuts the connection: the request's task ends without an answer.
fn cut() -> Response {
    panic!("{CUT}")
}

/// The panics that simulate a cut or a crash print nothing; any other panic prints as usual.
fn quiet_simulated_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if msg.starts_with(CUT) || msg.starts_with(failpoint::CRASH_PANIC) {
                return;
            }
            default(info);
        }));
    });
}

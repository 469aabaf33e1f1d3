//! `kill -9` of each service in the middle of a refill, then a restart on the same data
//! directory: the host finishes the same `client_txn_id`, nothing is charged twice, and
//! the ledger reconciles with the cards' control sums.
//!
//! Each service runs as its own `backoffice serve --role ...` child process. A pause point
//! (`BACKOFFICE_PAUSE_AT`, see `failpoint.rs`) stops it right after a commit and before
//! its reply; the test waits for the child to say so, then sends SIGKILL. Kills between
//! two requests need no pause point.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/proc.rs"]
mod proc;

use common::{
    expect_refused, kms_public_key_in, parties_again, Admin, Customers, Host, Psd, Refused,
};
use openpsd_protocol::RefillView;
use openpsd_service_kit::pki::Pki;
use proc::Proc;

/// The three services as separate processes.
struct Stack {
    _dir: tempfile::TempDir,
    pki: Pki,
    customers: Customers,
    rc: Proc,
    kms: Proc,
    meter: Proc,
}

impl Stack {
    fn start(pause_rc: &str, pause_kms: &str, pause_meter: &str) -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = openpsd_backoffice::server::local_pki(dir.path()).expect("PKI");
        let pki_arg = || vec!["--pki".to_owned(), pki.dir().display().to_string()];
        let rc_dir = dir.path().join("recharge");
        let rc = Proc::start("recharge", &rc_dir, "127.0.0.1:0", &pki_arg(), pause_rc);
        let key_file = rc_dir.join("recharge-public.key");
        let kms = Proc::start(
            "kms",
            &dir.path().join("kms"),
            "127.0.0.1:0",
            &[
                pki_arg(),
                vec![
                    "--recharge-public-key".into(),
                    key_file.display().to_string(),
                ],
            ]
            .concat(),
            pause_kms,
        );
        let meter = Proc::start(
            "meter",
            &dir.path().join("meter"),
            "127.0.0.1:0",
            &[
                pki_arg(),
                vec![
                    "--kms".into(),
                    kms.url.clone(),
                    "--recharge".into(),
                    rc.url.clone(),
                ],
            ]
            .concat(),
            pause_meter,
        );
        Stack {
            _dir: dir,
            pki,
            customers: Customers::default(),
            rc,
            kms,
            meter,
        }
    }

    fn parties(&self) -> (Host, Admin) {
        parties_again(
            &self.meter.url,
            &self.kms.url,
            &self.rc.url,
            &self.pki,
            &self.customers,
        )
    }

    fn host(&self) -> Host {
        self.parties().0
    }

    fn admin(&self) -> Admin {
        self.parties().1
    }
}

/// A request the host makes while a service is about to be killed: run it concurrently,
/// kill, then collect what the host saw.
fn in_background<F>(f: F) -> tokio::task::JoinHandle<Result<RefillView, Refused>>
where
    F: std::future::Future<Output = Result<RefillView, Refused>> + Send + 'static,
{
    tokio::spawn(f)
}

/// The host's answer to a dead service: the meter's 503, or a dropped connection when
/// the meter itself died.
fn assert_interrupted(r: Result<RefillView, Refused>) {
    match r {
        Err(e) if e.status == 503 || e.code == "transport" => {}
        other => panic!("expected the call to fail with the service killed, got {other:?}"),
    }
}

async fn setup(stack: &Stack, n: u32) -> Psd {
    let psd = Psd::new(n, 0, &kms_public_key_in(&stack._dir.path().join("kms")));
    stack.admin().register(&psd).await;
    stack.admin().fund("acme", 100_000).await;
    psd
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_kms_while_sealing_then_finish_the_same_refill() {
    let mut stack = Stack::start("", "kms_seal_before_reply", "");
    let mut psd = setup(&stack, 101).await;
    let (host, admin) = (stack.host(), stack.admin());
    let dev = psd.device_id();

    let v = host.request("k1", &dev, 0, "acme", 4_000).await.unwrap();
    let audit = psd.audit(0, &v.nonce);
    let call = in_background({
        let (host, audit) = (host.clone(), audit.clone());
        async move { host.audit("k1", &audit).await }
    });
    stack.kms.wait_paused("kms_seal_before_reply");
    stack.kms.kill9_and_restart("");
    assert_interrupted(call.await.unwrap());
    assert_eq!(host.status("k1").await.unwrap().state, "awaiting_audit");

    let v = host.audit("k1", &audit).await.unwrap();
    assert_eq!(v.state, "message_issued");
    // Killed again between two steps: the message is the meter's, nothing is lost.
    stack.kms.kill9_and_restart("");
    host.apply_and_confirm(&mut psd, &v).await.unwrap();
    let l = admin.assert_reconciled(&mut [&mut psd]).await;
    assert_eq!((l.debited, l.combinations_applied), (4_000, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_recharging_center_while_holding_and_while_settling() {
    let mut stack = Stack::start("rc_hold_before_reply", "", "");
    let mut psd = setup(&stack, 102).await;
    let (host, admin) = (stack.host(), stack.admin());
    let dev = psd.device_id();

    let v = host.request("r1", &dev, 0, "acme", 2_500).await.unwrap();
    let audit = psd.audit(0, &v.nonce);
    let call = in_background({
        let (host, audit) = (host.clone(), audit.clone());
        async move { host.audit("r1", &audit).await }
    });
    stack.rc.wait_paused("rc_hold_before_reply");
    // The hold is committed, its answer never sent.
    stack.rc.kill9_and_restart("rc_settle_before_reply");
    assert_interrupted(call.await.unwrap());
    let l = admin.ledger().await;
    assert_eq!((l.held, l.combinations_held), (2_500, 1));

    // The retry gets the same hold back, not a second one.
    let v = host.audit("r1", &audit).await.unwrap();
    let l = admin.ledger().await;
    assert_eq!((l.held, l.combinations_held), (2_500, 1));

    // Applied on the card; the RC dies after committing the debit, before answering.
    psd.refill(0, v.refill_message.as_ref().unwrap()).unwrap();
    let confirm_audit = psd.audit(0, v.confirm_nonce.as_ref().unwrap());
    let call = in_background({
        let (host, a) = (host.clone(), confirm_audit.clone());
        async move { host.confirm("r1", &a).await }
    });
    stack.rc.wait_paused("rc_settle_before_reply");
    stack.rc.kill9_and_restart("");
    assert_interrupted(call.await.unwrap());
    assert_eq!(host.status("r1").await.unwrap().state, "message_issued");
    let done = host.confirm("r1", &confirm_audit).await.unwrap();
    assert_eq!(done.state, "completed");
    let l = admin.assert_reconciled(&mut [&mut psd]).await;
    assert_eq!((l.debited, l.combinations_applied), (2_500, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_meter_at_every_step_then_finish_the_same_refill() {
    let mut stack = Stack::start("", "", "meter_audit_after_accept");
    let mut psd = setup(&stack, 103).await;
    let admin = stack.admin();
    let dev = psd.device_id();
    let host = stack.host();

    let v = host.request("m1", &dev, 0, "acme", 1_700).await.unwrap();
    let audit = psd.audit(0, &v.nonce);

    // 1. After the audit was accepted, before the RC was asked.
    let call = in_background({
        let (host, a) = (host.clone(), audit.clone());
        async move { host.audit("m1", &a).await }
    });
    stack.meter.wait_paused("meter_audit_after_accept");
    stack.meter.kill9_and_restart("meter_audit_after_hold");
    assert_interrupted(call.await.unwrap());

    // 2. After the RC held the amount, before the meter recorded the combination.
    let call = in_background({
        let (host, a) = (host.clone(), audit.clone());
        async move { host.audit("m1", &a).await }
    });
    stack.meter.wait_paused("meter_audit_after_hold");
    stack.meter.kill9_and_restart("meter_audit_before_reply");
    assert_interrupted(call.await.unwrap());
    assert_eq!(admin.ledger().await.combinations_held, 1);

    // 3. After the message was committed, before the reply: the host lost it.
    let call = in_background({
        let (host, a) = (host.clone(), audit.clone());
        async move { host.audit("m1", &a).await }
    });
    stack.meter.wait_paused("meter_audit_before_reply");
    stack.meter.kill9_and_restart("meter_confirm_after_settle");
    assert_interrupted(call.await.unwrap());
    let v = host.status("m1").await.unwrap();
    assert_eq!(v.state, "message_issued");
    let l = admin.ledger().await;
    assert_eq!(
        (l.held, l.combinations_held),
        (1_700, 1),
        "one hold through three crashes"
    );

    // 4. After the RC debited, before the meter recorded the completion.
    psd.refill(0, v.refill_message.as_ref().unwrap()).unwrap();
    psd.receipt(v.receipt.as_ref().unwrap()).unwrap();
    let confirm_audit = psd.audit(0, v.confirm_nonce.as_ref().unwrap());
    let call = in_background({
        let (host, a) = (host.clone(), confirm_audit.clone());
        async move { host.confirm("m1", &a).await }
    });
    stack.meter.wait_paused("meter_confirm_after_settle");
    stack.meter.kill9_and_restart("");
    assert_interrupted(call.await.unwrap());
    assert_eq!(admin.ledger().await.debited, 1_700);
    let done = host.confirm("m1", &confirm_audit).await.unwrap();
    assert_eq!(done.state, "completed");

    // 5. Between two requests: right after the refill request was answered.
    let v = host.request("m2", &dev, 0, "acme", 300).await.unwrap();
    stack.meter.kill9_and_restart("");
    assert_eq!(host.request("m2", &dev, 0, "acme", 300).await.unwrap(), v);
    expect_refused(
        host.request("m3", &dev, 0, "acme", 1).await,
        409,
        "refill_outstanding",
    );
    let audit = psd.audit(0, &v.nonce);
    let v = host.audit("m2", &audit).await.unwrap();
    host.apply_and_confirm(&mut psd, &v).await.unwrap();

    let l = admin.assert_reconciled(&mut [&mut psd]).await;
    assert_eq!(
        (l.debited, l.combinations_applied, l.combinations_released),
        (2_000, 2, 0)
    );
    assert_eq!(psd.registers(0).control_sum.0, 2_000);
}

/// The cancel of an issued refill with the RC killed after signing the void and the meter
/// killed after recording it: each retry gets the same void, the card applies it once, the
/// hold is released once.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_while_voiding_then_finish_the_same_cancel() {
    let mut stack = Stack::start("rc_void_before_reply", "", "meter_cancel_before_reply");
    let mut psd = setup(&stack, 104).await;
    let (host, admin) = (stack.host(), stack.admin());
    let dev = psd.device_id();
    let v = host.request("v1", &dev, 0, "acme", 900).await.unwrap();
    let audit = psd.audit(0, &v.nonce);
    let v = host.audit("v1", &audit).await.unwrap();
    assert_eq!(v.state, "message_issued");

    // 1. The RC signed and stored the void, then died before answering.
    let call = in_background({
        let host = host.clone();
        async move { host.cancel("v1").await }
    });
    stack.rc.wait_paused("rc_void_before_reply");
    stack.rc.kill9_and_restart("");
    assert_interrupted(call.await.unwrap());
    assert_eq!(host.status("v1").await.unwrap().state, "message_issued");

    // 2. The meter recorded the void, then died before answering.
    let call = in_background({
        let host = host.clone();
        async move { host.cancel("v1").await }
    });
    stack.meter.wait_paused("meter_cancel_before_reply");
    stack.meter.kill9_and_restart("");
    assert_interrupted(call.await.unwrap());
    let c = host.status("v1").await.unwrap();
    assert_eq!(c.state, "voiding");
    assert_eq!(host.cancel("v1").await.unwrap(), c, "the same void again");
    let rc_record: serde_json::Value = admin
        .rc
        .get(&format!(
            "/v1/combinations/{}",
            v.combination_id.as_deref().unwrap()
        ))
        .await
        .unwrap();
    assert_eq!(
        rc_record["void_combination_id"].as_str(),
        c.void_combination_id.as_deref(),
        "the void the RC signed before its crash"
    );

    psd.refill(0, c.void_message.as_deref().unwrap()).unwrap();
    assert_eq!(
        psd.refill(0, v.refill_message.as_deref().unwrap()),
        Err(openpsd_core::Status::RefillReplayed)
    );
    let confirm = psd.audit(0, c.confirm_nonce.as_deref().unwrap());
    assert_eq!(
        host.confirm("v1", &confirm).await.unwrap().state,
        "released"
    );
    let l = admin.assert_reconciled(&mut [&mut psd]).await;
    assert_eq!((l.debited, l.held, l.combinations_released), (0, 0, 1));
    admin.assert_exact(&mut [&mut psd]).await;
}

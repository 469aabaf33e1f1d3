//! The post office (issue 13) against the real services: labels printed by PSDs the back
//! office refilled are verified and recorded; a reused label is a duplicate; a PSD rolled
//! back to an earlier state, or cloned, issues a piece count twice and is caught as a
//! conflict, and the meter server quarantines it before its next refill; registers edited
//! in a software PSD's memory show up as postage nobody paid for, with the exact amount;
//! tampered, truncated, foreign and revoked labels are invalid.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{env, expect_refused, explain, kinds, scan, Client, Env, Psd};

async fn card(env: &Env, n: u32, funds: u64) -> Psd {
    let mut psd = Psd::new(n, 0, &env.kms());
    env.admin.register_to(&psd, "acme").await;
    env.admin.fund("acme", 100_000).await;
    let v = env
        .host
        .refill(&mut psd, &format!("fund-{n}"), "acme", funds)
        .await
        .unwrap();
    assert_eq!(v.state, "completed");
    psd
}

#[tokio::test(flavor = "multi_thread")]
async fn labels_are_accepted_once_and_a_reused_label_is_a_duplicate() {
    let env = env().await;
    let (svc, post) = env.start_post().await;
    let mut psd = card(&env, 40, 5_000).await;
    let labels: Vec<Vec<u8>> = (1..=3).map(|t| psd.label(t, 100, 0).unwrap()).collect();
    assert_eq!(kinds(&scan(&post, &labels).await), ["accepted"; 3]);
    let again = scan(&post, &labels[..1]).await;
    assert_eq!(again[0].verdict, "duplicate");
    assert_eq!(again[0].piece, Some(1));
    let r = explain(&post, &psd.device_id()).await;
    assert_eq!(r.duplicates, 1);
    assert_eq!(
        (
            r.licenses[0].pieces,
            r.licenses[0].highest_ar,
            r.licenses[0].credited
        ),
        (3, 300, Some(5_000))
    );
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    // An honest device stays served.
    let v = env.host.refill(&mut psd, "t2", "acme", 100).await.unwrap();
    assert_eq!(v.state, "completed");
    svc.stop().await;
    env.handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolled_back_psd_is_a_conflict_and_quarantined_before_its_next_refill() {
    let env = env().await;
    let (svc, post) = env.start_post().await;
    let mut psd = card(&env, 41, 5_000).await;
    // The state right after the accepted audit (the refill's confirmation).
    let saved = psd.snapshot();
    let first: Vec<Vec<u8>> = (1..=2).map(|t| psd.label(t, 100, 0).unwrap()).collect();
    assert_eq!(kinds(&scan(&post, &first).await), ["accepted"; 2]);
    // The holder restores the saved state: the spent DR is back, and piece 1 comes again.
    psd.roll_back(&saved);
    let second: Vec<Vec<u8>> = (3..=4).map(|t| psd.label(t, 250, 0).unwrap()).collect();
    let v = scan(&post, &second).await;
    assert_eq!(kinds(&v), ["conflict"; 2], "{v:?}");
    assert!(v[0]
        .reason
        .as_ref()
        .unwrap()
        .contains("rolled back or cloned"));
    // The meter heard it: the device is quarantined, no refill until an operator clears it.
    let e = expect_refused(
        env.host.refill(&mut psd, "t2", "acme", 100).await,
        409,
        "device_quarantined",
    );
    assert_eq!(e.code, "device_quarantined");
    let alarms = env.admin.alarms().await;
    assert!(
        alarms.alarms.iter().any(|a| a.kind == "post_office"),
        "{alarms:?}"
    );
    let r = explain(&post, &psd.device_id()).await;
    assert!(r
        .findings
        .iter()
        .all(|f| f.kind == "conflict" && f.reported));
    assert_eq!(r.findings.len(), 2);
    svc.stop().await;
    env.handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_copies_of_one_psd_both_printing_are_a_conflict() {
    let env = env().await;
    let (svc, post) = env.start_post().await;
    let mut a = card(&env, 42, 5_000).await;
    // A second card running a copy of the first one's memory (a copied state directory).
    let mut b = Psd::new(43, 0, &env.kms());
    b.roll_back(&a.snapshot());
    let la = a.label(1, 100, 0).unwrap();
    let lb = b.label(1, 110, 0).unwrap();
    assert_eq!(la[6..14], lb[6..14], "the same device ID");
    assert_eq!(kinds(&scan(&post, &[la]).await), ["accepted"]);
    assert_eq!(kinds(&scan(&post, &[lb]).await), ["conflict"]);
    svc.stop().await;
    env.handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn registers_edited_in_memory_show_as_unpaid_postage_with_the_exact_amount() {
    let env = env().await;
    let (svc, post) = env.start_post().await;
    let mut psd = card(&env, 44, 1_000).await;
    // The holder raises DR by 50.00 in the PSD's memory: value nobody paid for.
    psd.edit_dr(5_000);
    let first = scan(&post, &[psd.label(1, 400, 0).unwrap()]).await;
    assert_eq!(kinds(&first), ["anomaly"], "{first:?}");
    // Then spends beyond what the back office credited (10.00): 3 x 4.00 = 12.00.
    let more: Vec<Vec<u8>> = (2..=3).map(|t| psd.label(t, 400, 0).unwrap()).collect();
    scan(&post, &more).await;
    let r = explain(&post, &psd.device_id()).await;
    let exceed = r
        .findings
        .iter()
        .find(|f| f.kind == "registers_exceed_credit")
        .expect("the raised DR is found before it is spent");
    assert_eq!(exceed.amount, Some(5_000));
    let unpaid = r
        .findings
        .iter()
        .find(|f| f.kind == "unpaid_postage")
        .expect("the postage beyond the credit is found");
    assert_eq!(unpaid.amount, Some(200), "12.00 used, 10.00 credited");
    assert_eq!(unpaid.piece, 3);
    assert!(r.findings.iter().all(|f| f.reported));
    expect_refused(
        env.host.refill(&mut psd, "t2", "acme", 100).await,
        409,
        "device_quarantined",
    );
    svc.stop().await;
    env.handles.stop().await;
}

/// A PSD whose clock is turned back (here: the holder signs with the key dumped from its
/// memory) dates a piece it counts after the last audit the meter accepted before that
/// audit's day: an anomaly, and the meter quarantines the device.
#[tokio::test(flavor = "multi_thread")]
async fn a_piece_counted_after_the_last_audit_but_dated_before_it_is_an_anomaly() {
    use openpsd_core::psd::indicium::IndiciumData;
    use openpsd_core::types::{Amount, Date, PieceCount};
    let env = env().await;
    let (svc, post) = env.start_post().await;
    // Funding it is a refill: the meter accepted an audit today, at piece 0.
    let mut psd = card(&env, 45, 5_000).await;
    let honest = psd.label(1, 100, 0).unwrap();
    assert_eq!(
        kinds(&scan(&post, std::slice::from_ref(&honest)).await),
        ["accepted"]
    );
    let key = psd.dumped_key();
    let mut d = IndiciumData::decode(&honest[..honest.len() - 64]).unwrap();
    let ten_days_ago = d.date.day_number() - 10;
    d.date = Date::from_unix_days(
        u64::from(ten_days_ago) + openpsd_core::calendar::UNIX_DAYS_AT_EPOCH_2000,
    )
    .unwrap();
    d.pieces = PieceCount(2);
    d.ar = Amount(d.ar.0 + 100);
    d.dr = Amount(d.dr.0 - 100);
    let signed = d.encode();
    let backdated = [signed.clone(), key.sign(&signed).to_vec()].concat();
    let v = scan(&post, &[backdated]).await;
    assert_eq!(kinds(&v), ["anomaly"], "{v:?}");
    assert!(
        v[0].reason.as_ref().unwrap().contains("last audit"),
        "{v:?}"
    );
    let r = explain(&post, &psd.device_id()).await;
    let f = r
        .findings
        .iter()
        .find(|f| f.kind == "dated_before_audit")
        .expect("the back-dated piece is found");
    assert_eq!((f.piece, f.reported), (2, true));
    assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
    // A later back-dated piece, in another batch, is out of line too (the finding named
    // piece 2 only).
    d.pieces = PieceCount(3);
    d.ar = Amount(d.ar.0 + 100);
    d.dr = Amount(d.dr.0 - 100);
    let signed = d.encode();
    let again = [signed.clone(), key.sign(&signed).to_vec()].concat();
    let v = scan(&post, &[again]).await;
    assert_eq!(kinds(&v), ["anomaly"], "{v:?}");
    expect_refused(
        env.host.refill(&mut psd, "t2", "acme", 100).await,
        409,
        "device_quarantined",
    );
    svc.stop().await;
    env.handles.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_truncated_foreign_and_revoked_labels_are_invalid() {
    let env = env().await;
    let (svc, post) = env.start_post().await;
    let mut a = card(&env, 45, 5_000).await;
    let mut b = card(&env, 46, 5_000).await;
    let good = a.label(1, 100, 0).unwrap();
    let mut flipped = good.clone();
    flipped[30] ^= 0x04; // DR
    let mut bad_sig = good.clone();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 0x01;
    let truncated = good[..good.len() - 10].to_vec();
    // B's label made to name A: under A's key it is someone else's signature.
    let mut foreign = b.label(1, 100, 0).unwrap();
    let a_id = hex::decode(a.device_id()).unwrap();
    foreign[6..14].copy_from_slice(&a_id);
    let v = scan(&post, &[flipped, bad_sig, truncated, foreign, vec![0; 3]]).await;
    assert_eq!(kinds(&v), ["invalid"; 5], "{v:?}");
    // A device the KMS does not know.
    let mut unknown = good.clone();
    unknown[6..14].copy_from_slice(b"PSDNOONE");
    let v = scan(&post, &[unknown]).await;
    assert_eq!(v[0].verdict, "invalid");
    assert!(v[0].reason.as_ref().unwrap().contains("no such device"));
    // Nothing of that was recorded: the good label is still a first sight.
    assert_eq!(kinds(&scan(&post, &[good]).await), ["accepted"]);

    // Revoked today: a label dated tomorrow is invalid, today's still counts.
    let _: serde_json::Value = env
        .admin
        .kms
        .post(
            &format!("/v1/devices/{}/revoke", b.device_id()),
            &serde_json::json!({"reason": "stolen"}),
        )
        .await
        .unwrap();
    let today = b.label(2, 100, 0).unwrap();
    let tomorrow = b.label(3, 100, 1).unwrap();
    // The post office reads keys again after a minute; a fresh one sees the revocation.
    svc.stop().await;
    let (svc, post) = env.start_post().await;
    let v = scan(&post, &[tomorrow, today]).await;
    assert_eq!(v[0].verdict, "invalid");
    assert!(v[0].reason.as_ref().unwrap().contains("revoked"), "{v:?}");
    assert_eq!(v[1].verdict, "accepted", "{v:?}");
    svc.stop().await;
    env.handles.stop().await;
}

/// The label printer of the post crate's tests (it allows its own unused helpers).
#[path = "../post/tests/labels/mod.rs"]
mod labels;

/// `backoffice post scan` as a post office's scanner runs it: a directory of label scans
/// (PNG, JPEG, rotated, noisy), a text file of hex indicia and a raw indicium file; a verdict
/// per piece, progress on stderr, a clear "unreadable" for a scan without a code; then
/// `backoffice post explain`.
#[tokio::test(flavor = "multi_thread")]
async fn backoffice_post_scan_reads_scans_and_files_and_explain_tells_the_device() {
    let env = env().await;
    let (svc, _) = env.start_post().await;
    let mut psd = card(&env, 47, 5_000).await;
    let l: Vec<Vec<u8>> = (1..=4).map(|t| psd.label(t, 100 + t, 0).unwrap()).collect();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("a.png"), labels::png(&labels::render(&l[0], 4))).unwrap();
    let turned = labels::rotate(&labels::render(&l[1], 4), 90.0);
    std::fs::write(d.join("b.jpg"), labels::jpeg(&turned, 60)).unwrap();
    let noisy = labels::gaussian_noise(&labels::rotate(&labels::render(&l[2], 6), 5.0), 30.0, 7);
    std::fs::write(d.join("c.png"), labels::png(&noisy)).unwrap();
    // A text file: piece 4, and piece 1 again (a reused label); a raw file: piece 2 again.
    std::fs::write(
        d.join("d.hex"),
        format!("{}\n{}\n", hex::encode(&l[3]), hex::encode(&l[0])),
    )
    .unwrap();
    std::fs::write(d.join("e.bin"), &l[1]).unwrap();
    let blank = image::GrayImage::from_pixel(200, 200, image::Luma([255]));
    std::fs::write(d.join("f.png"), labels::png(&blank)).unwrap();

    let pki = env.handles.pki.dir().to_path_buf();
    let url = svc.url.clone();
    let run = move |args: Vec<String>| {
        std::process::Command::new(env!("CARGO_BIN_EXE_backoffice"))
            .args(args)
            .arg("--pki")
            .arg(&pki)
            .args(["--post", &url])
            .output()
            .unwrap()
    };
    let scan_args = vec![
        "post".to_owned(),
        "scan".to_owned(),
        d.display().to_string(),
        "--json".to_owned(),
    ];
    let r = run.clone();
    let out = tokio::task::spawn_blocking(move || r(scan_args))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("scanned 7/7"));
    let verdicts: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<(String, String)> = verdicts
        .iter()
        .map(|v| {
            let source = v["source"].as_str().unwrap();
            let name = std::path::Path::new(source)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (name, v["verdict"].as_str().unwrap().to_owned())
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("a.png", "accepted"),
        ("b.jpg", "accepted"),
        ("c.png", "accepted"),
        ("d.hex:1", "accepted"),
        ("d.hex:2", "duplicate"),
        ("e.bin", "duplicate"),
        ("f.png", "unreadable"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(got, want);

    let device = psd.device_id();
    let out =
        tokio::task::spawn_blocking(move || run(vec!["post".into(), "explain".into(), device]))
            .await
            .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("4 pieces seen"), "{text}");
    assert!(text.contains("copies of pieces seen again: 2"), "{text}");
    assert!(text.contains("no findings"), "{text}");
    svc.stop().await;
    env.handles.stop().await;
}

/// Indicia a PSD's holder signs with the key dumped from its memory, outside any register
/// set: a license the device was never registered with, a lowest piece whose AR is below
/// its own postage, registers beyond any range. None of them passes as a plain accepted
/// piece, and one bad label does not spoil the batch it came in.
#[tokio::test(flavor = "multi_thread")]
async fn labels_signed_outside_the_registers_with_a_dumped_key_do_not_pass() {
    use openpsd_core::psd::indicium::IndiciumData;
    use openpsd_core::types::{Amount, LicenseId, PieceCount};
    let env = env().await;
    let (svc, post) = env.start_post().await;
    let mut psd = card(&env, 48, 5_000).await;
    let honest = psd.label(1, 100, 0).unwrap();
    let key = psd.dumped_key();
    let forge = |f: &dyn Fn(&mut IndiciumData)| {
        let mut d = IndiciumData::decode(&honest[..honest.len() - 64]).unwrap();
        f(&mut d);
        let signed = d.encode();
        [signed.clone(), key.sign(&signed).to_vec()].concat()
    };
    let other_license = forge(&|d| d.license = LicenseId(9999));
    let free_postage = forge(&|d| {
        d.pieces = PieceCount(7);
        d.postage = Amount(1_000_000);
        d.ar = Amount(0);
    });
    let huge = forge(&|d| {
        d.pieces = PieceCount(8);
        d.ar = Amount(u64::MAX);
    });
    let v = scan(&post, &[other_license, honest.clone(), huge, free_postage]).await;
    assert_eq!(
        kinds(&v),
        ["invalid", "accepted", "invalid", "anomaly"],
        "{v:?}"
    );
    assert!(v[0].reason.as_ref().unwrap().contains("not the device's"));
    assert!(v[2].reason.as_ref().unwrap().contains("range"));
    let r = explain(&post, &psd.device_id()).await;
    assert!(
        r.findings
            .iter()
            .any(|f| f.kind == "ar_not_rising" && f.piece == 7),
        "{:?}",
        r.findings
    );
    svc.stop().await;
    env.handles.stop().await;
}

/// A device the KMS knows but the meter does not serve was credited nothing by the back
/// office: what it prints is unpaid postage (here funded offline with a stolen KMS key).
/// The meter cannot quarantine a device it does not serve; the finding stays with the post
/// office, marked as not told, and does not block anything.
#[tokio::test(flavor = "multi_thread")]
async fn a_device_the_meter_does_not_serve_prints_unpaid_postage() {
    let env = env().await;
    let (svc, post) = env.start_post().await;
    let mut psd = Psd::new(49, 0, &env.kms());
    let _: serde_json::Value = env
        .admin
        .kms
        .post("/v1/devices", &psd.secrets)
        .await
        .unwrap();
    psd.offline_refill(0, 2_000, [0x77; 8], &env.kms_signing_key());
    let v = scan(&post, &[psd.label(1, 300, 0).unwrap()]).await;
    assert_eq!(kinds(&v), ["anomaly"], "{v:?}");
    let r = explain(&post, &psd.device_id()).await;
    let f = r
        .findings
        .iter()
        .find(|f| f.kind == "unpaid_postage")
        .expect("unpaid postage");
    assert_eq!((f.amount, f.reported), (Some(300), false));
    svc.stop().await;
    env.handles.stop().await;
}

/// A TCP forwarder to `target` that can be switched off (connections accepted and dropped
/// at once): the meter server unreachable from the post office, and back.
async fn switchable_link(
    target: std::net::SocketAddr,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let on = std::sync::Arc::new(AtomicBool::new(true));
    let flag = std::sync::Arc::clone(&on);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if !flag.load(Ordering::SeqCst) {
                continue; // dropped: the caller sees the connection close
            }
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (format!("https://{addr}"), on)
}

/// The meter server is unreachable when the post office finds a rolled-back PSD: the
/// findings wait, marked as not told; when the meter is back they reach it without any
/// further label of that device being scanned, and the device is quarantined.
#[tokio::test(flavor = "multi_thread")]
async fn findings_the_meter_missed_reach_it_without_another_scan() {
    use std::sync::atomic::Ordering;
    let env = env().await;
    let mut psd = card(&env, 46, 5_000).await;
    let (meter_link, meter_up) = switchable_link(env.handles.meter.addr).await;
    let data = tempfile::tempdir().unwrap();
    let po = openpsd_post::PostOffice::open(openpsd_post::Config {
        data: data.path().join("post"),
        database_url: common::post_database().await,
        kms_url: env.handles.kms.url.clone(),
        meter_url: meter_link,
        pa_url: env.handles.pa.url.clone(),
        datacenter_url: None,
        pki: env.handles.pki.clone(),
        report_retry: std::time::Duration::from_millis(300),
    })
    .await
    .unwrap();
    let tls = openpsd_service_kit::tls::server_config(
        &env.handles.pki,
        openpsd_service_kit::tls::Role::Post,
        openpsd_service_kit::tls::ClientAuth::Required,
    )
    .unwrap();
    let svc = openpsd_service_kit::server::Service::spawn(
        "post",
        openpsd_service_kit::server::bind("127.0.0.1:0", Some(tls))
            .await
            .unwrap(),
        po.router(&openpsd_service_kit::access::RateLimit::new(1000, 2000)),
    )
    .unwrap();
    let post = Client::new(
        &svc.url,
        &env.handles.pki,
        Some(openpsd_service_kit::tls::Role::Operator),
    );
    meter_up.store(false, Ordering::SeqCst);
    let saved = psd.snapshot();
    let first: Vec<Vec<u8>> = (1..=2).map(|t| psd.label(t, 100, 0).unwrap()).collect();
    assert_eq!(kinds(&scan(&post, &first).await), ["accepted"; 2]);
    psd.roll_back(&saved);
    let second: Vec<Vec<u8>> = (3..=4).map(|t| psd.label(t, 250, 0).unwrap()).collect();
    assert_eq!(kinds(&scan(&post, &second).await), ["conflict"; 2]);
    let r = explain(&post, &psd.device_id()).await;
    assert_eq!(r.findings.len(), 2);
    assert!(
        r.findings.iter().all(|f| !f.reported),
        "the meter was away: {:?}",
        r.findings
    );
    // Several retry rounds pass with the meter away: nothing is lost, nothing told.
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    assert!(explain(&post, &psd.device_id())
        .await
        .findings
        .iter()
        .all(|f| !f.reported));
    meter_up.store(true, Ordering::SeqCst);
    let mut told = false;
    for _ in 0..100 {
        let r = explain(&post, &psd.device_id()).await;
        if r.findings.iter().all(|f| f.reported) {
            told = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(told, "the retry told the meter within 10 s");
    expect_refused(
        env.host.refill(&mut psd, "t2", "acme", 100).await,
        409,
        "device_quarantined",
    );
    svc.stop().await;
    env.handles.stop().await;
}

/// Seed 003, claim 6: one license on two PSDs of one customer. Each set signs with its own
/// license key, which the post office finds in the PA's grants by (device, key ID); the
/// devices' pieces never collide; the license adds up across its devices against what the
/// back office credited each. Another customer cannot ask for the license; a piece mailed
/// after a device's grant was revoked is refused.
#[tokio::test(flavor = "multi_thread")]
async fn one_license_on_two_psds_is_verified_and_reconciled_across_them() {
    use openpsd_core::psd::license::install::Install;
    let env = env().await;
    let h = &env.handles;
    env.admin.fund("acme", 100_000).await;
    let mut a = Psd::licensed(60, h);
    let mut b = Psd::licensed(61, h);
    let mut c = Psd::licensed(62, h);
    env.admin.register(&a).await;
    env.admin.register(&b).await;
    env.admin.register_to(&c, "bob").await;

    // A asks for a new license; B, of the same customer, for that license.
    let ga = a
        .order_license(&env.host.as_customer("acme"), "lic-a", 0)
        .await
        .unwrap();
    let license = ga.fields.license;
    a.client
        .license_install(&Install::decode(&hex::decode(&ga.install).unwrap()).unwrap())
        .unwrap();
    // Bob may not ask for acme's license (and nothing is granted).
    let e = c
        .order_license(&env.host.as_customer("bob"), "lic-c", license)
        .await
        .unwrap_err();
    assert_eq!(
        (e.status, e.code.as_str()),
        (403, "license_not_yours"),
        "{e:?}"
    );
    let gb = b
        .order_license(&env.host.as_customer("acme"), "lic-b", license)
        .await
        .unwrap();
    assert_eq!(gb.fields.license, license);
    b.client
        .license_install(&Install::decode(&hex::decode(&gb.install).unwrap()).unwrap())
        .unwrap();

    // Both sets refilled through the meter, then franked.
    for (psd, amount) in [(&mut a, 5_000), (&mut b, 3_000)] {
        let txn = format!("fill-{}", psd.device_id());
        let v = env
            .host
            .refill_set(psd, 2, &txn, "acme", amount)
            .await
            .unwrap();
        assert_eq!(v.state, "completed");
    }
    let a1 = a.indicium_on(2, 1, 120, b"53113", 0);
    let a2 = a.indicium_on(2, 2, 80, b"53113", 0);
    let b1 = b.indicium_on(2, 1, 150, b"53113", 0);
    let b2 = b.indicium_on(2, 2, 60, b"53113", 1); // dated tomorrow
                                                   // The acme desk replaces B's grant: revoked today, so B's piece dated tomorrow is
                                                   // refused; the one dated today stands.
    let pa = Client::new(
        &h.pa.url,
        &h.pki,
        Some(openpsd_service_kit::tls::Role::Operator),
    );
    let _: openpsd_protocol::license::GrantView = pa
        .post(
            &format!("/v1/grants/{}/revoke", gb.fields.serial),
            &openpsd_protocol::license::GrantRevocation {
                reason: "test".into(),
            },
        )
        .await
        .unwrap();

    let (svc, post) = env.start_post().await;
    let v = scan(&post, &[a1.clone(), a2, b1, b2]).await;
    assert_eq!(
        kinds(&v),
        ["accepted", "accepted", "accepted", "invalid"],
        "{v:?}"
    );
    assert!(
        v[3].reason.as_deref().unwrap_or("").contains("revoked"),
        "{v:?}"
    );
    assert_eq!(v[0].license, Some(license));
    assert_eq!(v[0].piece, v[2].piece, "each device counts its own pieces");
    assert_ne!(v[0].device_id, v[2].device_id);
    assert_eq!(kinds(&scan(&post, &[a1]).await), ["duplicate"]);

    // An indicium of A's licensed set with one signed byte changed: refused, and not as
    // another device's.
    let mut forged = a.indicium_on(2, 3, 10, b"53113", 0);
    forged[20] ^= 1;
    let v = scan(&post, &[forged]).await;
    assert_eq!(kinds(&v), ["invalid"], "{v:?}");

    // The license across its two devices: postage used = the devices' highest AR, against
    // 5,000 + 3,000 credited.
    let r: openpsd_protocol::post::LicenseReport =
        post.get(&format!("/v1/licenses/{license}")).await.unwrap();
    assert_eq!(r.license, license);
    assert_eq!(r.devices.len(), 2, "{r:?}");
    assert_eq!(r.postage_used, 200 + 150, "{r:?}");
    assert_eq!(r.credited, 8_000, "{r:?}");
    assert_eq!((r.unpaid, r.status.as_str()), (0, "balanced"), "{r:?}");
    let rb = r
        .devices
        .iter()
        .find(|d| d.device_id == b.device_id())
        .unwrap();
    assert_eq!(
        (rb.pieces, rb.highest_ar, rb.credited),
        (1, 150, Some(3_000))
    );
    assert!(rb.grant_revoked && rb.grant_serial.as_deref() == Some(gb.fields.serial.as_str()));
    // Bob's device never mailed under the license nor was granted it.
    assert!(r.devices.iter().all(|d| d.device_id != c.device_id()));
    let e = post
        .get::<openpsd_protocol::post::LicenseReport>("/v1/licenses/999999")
        .await;
    assert_eq!(e.unwrap_err().status, 404);
    svc.stop().await;
}

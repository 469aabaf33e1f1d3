//! Value transfer PSD -> purse between two `card-sim serve --tcp` processes, with the purse's
//! process killed (-9) between the PSD's debit and the purse's credit, right after the
//! credit, and at arbitrary instants of a stream of transfers. After each restart the next
//! contact completes or undoes the pending transfer, and value is conserved exactly:
//! PSD DR + pending + purse balance = what the PSD was funded with.
// Test code: a failed unwrap or expect is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use card_sim::transport::TcpCardClient;
use common::{card_sim, funded_psd, serve};
use openpsd_core::client::psd_apdu;
use openpsd_core::client::transfer::{self as driver, Resolved};
use openpsd_core::client::Link;
use openpsd_core::psd::ins as psd_ins;
use openpsd_core::psd::registers::Registers;
use openpsd_core::purse::ins as purse_ins;
use openpsd_core::purse::personal::PurseInfo;
use openpsd_core::types::*;

const FUNDED: u64 = 100_000;
const PIN: &[u8] = b"1357";

/// A TCP card as a transfer link; optionally kills a process right after the card answered
/// a given instruction (the next message to that process is then lost).
struct Tcp {
    client: TcpCardClient,
    kill_after: Option<(u8, u32)>,
}

impl Link for Tcp {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, openpsd_core::client::LinkError> {
        let resp = self
            .client
            .transmit(apdu)
            .map_err(|e| openpsd_core::client::LinkError(e.to_string()))?;
        if let Some((ins, pid)) = self.kill_after {
            if apdu.get(1) == Some(&ins) && resp.ends_with(&[0x90, 0x00]) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(resp)
    }
}

fn tcp(port: u16) -> Tcp {
    Tcp {
        client: TcpCardClient::connect(("127.0.0.1", port)).unwrap(),
        kill_after: None,
    }
}

fn psd_registers(psd: &mut Tcp) -> Registers {
    let ok = |r: Vec<u8>| psd_apdu::data(&r).unwrap().to_vec();
    ok(psd.transmit(&psd_apdu::select()).unwrap());
    Registers::decode(&ok(psd
        .transmit(&psd_apdu::read_registers(RegisterSetIndex(0)))
        .unwrap()))
    .unwrap()
}

fn purse(purse: &mut Tcp) -> PurseInfo {
    driver::purse_info(purse).unwrap().unwrap()
}

/// Settled (nothing pending): PSD DR + purse balance = funded, and the PSD's
/// "transferred" is what the purse received. Unsettled: the pending value is either still
/// only in the PSD's pending register (not credited) or also in the purse (credited, not
/// confirmed) — DR + pending + balance is funded or funded + pending, and the purse's
/// total received is the PSD's transferred, or that plus pending.
fn conserved(psd_port: u16, purse_port: u16, settled: bool) -> (Registers, PurseInfo) {
    let r = psd_registers(&mut tcp(psd_port));
    let p = purse(&mut tcp(purse_port));
    let sum = r.dr.0 + r.pending.0 + p.balance.0;
    assert_eq!(r.ar.0 + r.dr.0 + r.pending.0, r.control_sum.0);
    if settled {
        assert_eq!(r.pending, Amount::ZERO, "{r:?}");
        assert_eq!(sum, FUNDED, "value conserved: {r:?} {p:?}");
        assert_eq!(r.transferred, p.total_in);
    } else {
        let credited = p.total_in.0 == r.transferred.0 + r.pending.0 && r.pending.0 > 0;
        let not_credited = p.total_in == r.transferred;
        assert!(credited || not_credited, "{r:?} {p:?}");
        let expect = if credited {
            FUNDED + r.pending.0
        } else {
            FUNDED
        };
        assert_eq!(sum, expect, "value conserved: {r:?} {p:?}");
    }
    (r, p)
}

#[test]
fn killing_the_purse_mid_transfer_neither_creates_nor_loses_value() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    funded_psd(d, "1000.00");
    // The funding, as the meter server's registration must take it for its baseline.
    let baselines: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("psd.baselines.json")).unwrap())
            .unwrap();
    assert_eq!(baselines[0]["control_sum"], 100_000);
    assert_eq!(baselines[0]["refills"], 1);
    card_sim(
        &[
            "personalize",
            "--kind",
            "purse",
            "--state",
            "purse",
            "--scheme",
            "scheme.json",
            "--pin",
            "1357",
            "--max-balance",
            "1000.00",
        ],
        d,
    );
    let (psd_srv, psd_port) = serve(&d.join("psd"));
    let (mut purse_srv, mut purse_port) = serve(&d.join("purse"));
    let set = RegisterSetIndex(0);

    // 1. The purse dies right after the PSD's debit: the credit never arrives.
    let mut psd = tcp(psd_port);
    psd.kill_after = Some((psd_ins::TRANSFER_DEBIT, purse_srv.id()));
    let e = driver::transfer(&mut psd, &mut tcp(purse_port), set, Amount(700), PIN).unwrap_err();
    assert!(
        matches!(e, driver::TransferError::Link(..)),
        "the purse is gone: {e}"
    );
    drop(psd); // the server takes one connection at a time
    purse_srv.wait();
    let r = psd_registers(&mut tcp(psd_port));
    assert_eq!(r.pending, Amount(700), "debited into pending");
    (purse_srv, purse_port) = serve(&d.join("purse"));
    conserved(psd_port, purse_port, false);
    let out = driver::transfer(
        &mut tcp(psd_port),
        &mut tcp(purse_port),
        set,
        Amount(100),
        PIN,
    )
    .unwrap();
    assert_eq!(out.resolved_first, Some((Resolved::Undone, Amount(700))));
    conserved(psd_port, purse_port, true);

    // 2. The purse dies right after its credit: the PSD's confirmation never comes.
    let mut p = tcp(purse_port);
    p.kill_after = Some((purse_ins::TRANSFER_CREDIT, purse_srv.id()));
    let e = driver::transfer(&mut tcp(psd_port), &mut p, set, Amount(250), PIN).unwrap_err();
    // The ACK did arrive before the kill; the driver fails on the purse afterwards.
    let _ = e;
    purse_srv.wait();
    (purse_srv, purse_port) = serve(&d.join("purse"));
    let r = psd_registers(&mut tcp(psd_port));
    if r.pending != Amount::ZERO {
        let res = driver::resolve_pending(&mut tcp(psd_port), &mut tcp(purse_port)).unwrap();
        assert_eq!(res, Some((Resolved::Completed, Amount(250))));
    }
    let (_, p) = conserved(psd_port, purse_port, true);
    assert_eq!(p.balance, Amount(350), "100 + 250 credited, 700 undone");

    // 3. kill -9 at arbitrary instants of a stream of transfers of 0.01.
    for delay_ms in [15u64, 60, 150, 5, 90, 240] {
        let pid = purse_srv.id();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(delay_ms));
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        });
        let (mut a, mut b) = (tcp(psd_port), tcp(purse_port));
        let started = Instant::now();
        loop {
            if driver::transfer(&mut a, &mut b, set, Amount(1), PIN).is_err() {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "the kill came");
        }
        drop((a, b));
        killer.join().unwrap();
        purse_srv.wait();
        (purse_srv, purse_port) = serve(&d.join("purse"));
        conserved(psd_port, purse_port, false);
        driver::resolve_pending(&mut tcp(psd_port), &mut tcp(purse_port)).unwrap();
        conserved(psd_port, purse_port, true);
    }

    drop(purse_srv);
    drop(psd_srv);
}

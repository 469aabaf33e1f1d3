//! The fuzz input format: a start state and a sequence of operations on the card.
//!
//! Every byte string decodes to some [`Input`] (nothing is rejected), and [`Input::encode`]
//! writes the canonical form the seed generator uses.
//!
//! ```text
//! input  = start:u8 op*
//! start  = 0..=1 funded | 2 transfer (funded, a scheme, certified, and a purse of that
//!          scheme beside it) | 3..=5 certmeter (funded, rate table, CA anchor, active
//!          postmark key) | 6 personalized, no funds | 7 blank   (taken modulo 8)
//! op     = 0x01                                   reset (volatile state lost, deselected)
//!        | 0x02 at:u8 flags:u8 len:u16 apdu       power cut at write `at` of this APDU,
//!                                                 torn if flags & 1; re-open if it hit
//!        | 0x03 set:u8 amount:u32 id:u8           KMS refill: AUDIT, sign as the KMS, REFILL
//!        | 0x04 set:u8 txn:u8 postage:u16 day:u8  well-formed ISSUE INDICIUM
//!        | 0x05 day:u8                            clock: 0 none, else 2026-11-(1+(day-1)%30)
//!                                                 10:00:00 UTC (date and time)
//!        | 0x06                                   power cycle: re-open the memory, SELECT
//!        | 0x07 set:u8 amount:u32 mode:u8         forged refill, signed by the KMS but bound
//!                                                 to the wrong state (mode % 5: device,
//!                                                 control sum, refills + 1, refills - 1,
//!                                                 license); must be refused
//!        | 0x08 license:u8 flags:u8 corrupt:u8    LICENSE REQUEST, then the harness signs a
//!                                                 grant as PA + vendor, LICENSE INSTALL
//!                                                 (corrupt % 10 != 0: forged, must be refused)
//!        | 0x09 slot:u8 mode:u8                   EXPORT SET prepare, then (mode % 5) nothing,
//!                                                 commit, cancel, commit with a wrong digest,
//!                                                 commit twice; the blob is remembered
//!        | 0x0A which:u8 corrupt:u8               IMPORT SET of a remembered blob (one byte
//!                                                 flipped if corrupt != 0: must be refused)
//!        | 0x0B at:u8 flags:u8                    arm a power cut at write `at` of the next
//!                                                 operation, torn if flags & 1
//!        | 0x0C which:u8 flags:u8                 RETIRE SET of the table's entry which % n
//!                                                 (forget if flags & 1)
//!        | 0x0D mode:u8 set:u8 amount:u16 fault:u8
//!                                                 the harness carries a transfer between
//!                                                 the PSD and the purse (mode % 4: transfer,
//!                                                 resolve, RESET RECOGNITION signed by the
//!                                                 issuer, one forged); fault (see
//!                                                 [`Op::Transfer`]) loses, changes, cuts
//!                                                 power at or repeats one message
//!        | any other byte, len:u16 apdu           one raw command APDU
//! ```
//!
//! Integers are big-endian; an APDU shorter than its `len` is cut at the end of the input.
//! At most [`MAX_OPS`] operations are decoded.

/// Most operations decoded from one input (keeps an execution short).
pub const MAX_OPS: usize = 64;

/// The card the sequence starts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Personalized, SELECTed, set 0 and set 1 refilled.
    Funded,
    /// Funded, and the certificate meter set up: a rate table (postmark 10, certificate
    /// 500), the fixture CA's trust anchor and an active postmark key whose certificate
    /// set 0 paid for.
    Certmeter,
    /// Funded, personalized with a transfer scheme (issuer key, five failed recognitions
    /// allowed) and certified by the scheme issuer; a personalized, certified purse of the
    /// same scheme stands beside it for [`Op::Transfer`].
    Transfer,
    /// Personalized and SELECTed, all registers zero.
    Personalized,
    /// Blank (not personalized), SELECTed.
    Blank,
    /// Funded, but personalized with an outside signer (PERSONALIZE P1 `01` with
    /// [`crate::harness::outside_signer`]'s key): its indicia wait for STORE SIGNATURE.
    Outside,
}

/// One step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A raw command APDU.
    Apdu(Vec<u8>),
    /// Warm reset.
    Reset,
    /// Power lost during cell write `at_write` (counted from this APDU) of `apdu`.
    PowerCut {
        /// Write index relative to the store's count before the APDU.
        at_write: u8,
        /// Half the bytes of the interrupted write land.
        torn: bool,
        /// The command that is interrupted.
        apdu: Vec<u8>,
    },
    /// The key management system audits set `set` and seals a refill of `amount`.
    KmsRefill {
        /// Register set (P2).
        set: u8,
        /// Amount credited.
        amount: u32,
        /// Nonce / combination ID byte.
        id: u8,
    },
    /// A well-formed indicium request for set `set`'s town.
    Issue {
        /// Register set (P2).
        set: u8,
        /// Transaction ID (low byte).
        txn: u8,
        /// Postage.
        postage: u16,
        /// Day of November 2026 (1 + day % 30).
        day: u8,
    },
    /// Set the platform clock.
    Clock {
        /// 0: no clock; otherwise a day of November 2026.
        day: u8,
    },
    /// Power cycle: the memory is re-opened and the PSD SELECTed.
    Reopen,
    /// A refill message signed by the KMS for a state the card is not in.
    ForgedRefill {
        /// Register set (P2).
        set: u8,
        /// Amount credited.
        amount: u32,
        /// What is wrong (modulo 5): device, control sum, refill count ahead, refill
        /// count behind, license.
        mode: u8,
    },
    /// LICENSE REQUEST, a grant signed by the fixture PA and countersigned by the fixture
    /// vendor for the request the card answered, LICENSE INSTALL.
    GrantLicense {
        /// License asked for: 0 lets the PA assign one (20000 + request counter), 1 and 2
        /// the fixture's 4711 and 4712 (resident: refused), n the license 9000 + n.
        license: u8,
        /// Bit 0: origin 80331 instead of 10115; bit 1: P1 01 (replace a pending
        /// request); bits 2-3: validity (0-1 a year from 2026-11-01, 2 ending
        /// 2026-11-20, 3 from 2026-11-25); bit 4: re-send an install the card accepted
        /// earlier, chosen by bits 5-7 (must be refused).
        flags: u8,
        /// `corrupt % 10`: 0 a valid grant; 1 PA signature by another key; 2
        /// countersignature by another key; 3 license, 4 origin, 5 serial, 6 notAfter
        /// changed after signing; 7 request counter + 1; 8 grant for another nonce; 9 for
        /// another device. 1-9 must be refused. When 0 was asked, `corrupt / 10 % 3`
        /// picks the license the PA grants: 20000 + the request counter, 4711, or 20001.
        corrupt: u8,
    },
    /// EXPORT SET prepare on `slot % 4`, then by `mode % 5`: nothing, commit with the
    /// blob's digest, cancel, commit with a wrong digest (with mode bit 7: the right digest
    /// on the next slot; must be refused), commit twice (the same epoch both times).
    /// Every blob answered is remembered.
    Export {
        /// Slot (P2), modulo 4.
        slot: u8,
        /// What follows the prepare.
        mode: u8,
    },
    /// RETIRE SET of the table's entry `which % n` (the epoch `which` if the table is
    /// empty): retire it, or with `forget` forget it.
    Retire {
        /// Which entry.
        which: u8,
        /// P1 `01`.
        forget: bool,
    },
    /// IMPORT SET of remembered blob `which % n` (old copies and duplicates included); an
    /// empty blob if none is remembered.
    Import {
        /// Which remembered blob.
        which: u8,
        /// 0: as answered; otherwise one bit flipped at a position chosen by it (must be
        /// refused).
        corrupt: u8,
    },
    /// The harness carries messages between the PSD and the purse of the transfer start
    /// (on other starts the purse steps are skipped and the PSD refuses).
    Transfer {
        /// `mode % 4`: 0 a transfer (recognition, VERIFY, TRANSFER REQUEST, DEBIT, CREDIT,
        /// CONFIRM); 1 a resolution (recognition, TRANSFER STATUS, TRANSFER RESOLVE); 2
        /// RESET RECOGNITION signed by the scheme issuer with counter `amount`; 3 the same
        /// signed by another key (must be refused). `mode >> 2` picks the bit a changed
        /// message has flipped.
        mode: u8,
        /// Register set debited (P2).
        set: u8,
        /// Value asked for.
        amount: u16,
        /// 0: none; otherwise step `(fault - 1) % 16` of the exchange gets fault
        /// `(fault - 1) / 16 % 4`: 0 the message is lost (the host stops), 1 one bit of
        /// its data flipped, 2 power cut at the receiving device's first write, 3 sent
        /// twice.
        fault: u8,
    },
    /// Arms a power cut for the next operation: at its write `at_write` (counted from the
    /// start of that operation), torn if `torn`.
    Arm {
        /// Write index relative to the next operation's first write.
        at_write: u8,
        /// Half the bytes of the interrupted write land.
        torn: bool,
    },
}

/// A decoded fuzz input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// Starting card.
    pub start: Start,
    /// Operations, in order.
    pub ops: Vec<Op>,
}

struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a.to_vec()
    }
    fn apdu(&mut self) -> Vec<u8> {
        let n = usize::from(self.u16());
        self.take(n)
    }
}

impl Input {
    /// Decodes any byte string.
    pub fn decode(data: &[u8]) -> Input {
        let mut b = Bytes(data);
        let start = match b.u8() % 8 {
            1 => Start::Outside,
            2 => Start::Transfer,
            3..=5 => Start::Certmeter,
            6 => Start::Personalized,
            7 => Start::Blank,
            _ => Start::Funded,
        };
        let mut ops = Vec::new();
        while !b.0.is_empty() && ops.len() < MAX_OPS {
            let op = match b.u8() {
                0x01 => Op::Reset,
                0x02 => Op::PowerCut {
                    at_write: b.u8(),
                    torn: b.u8() & 1 != 0,
                    apdu: b.apdu(),
                },
                0x03 => Op::KmsRefill {
                    set: b.u8(),
                    amount: b.u32(),
                    id: b.u8(),
                },
                0x04 => Op::Issue {
                    set: b.u8(),
                    txn: b.u8(),
                    postage: b.u16(),
                    day: b.u8(),
                },
                0x05 => Op::Clock { day: b.u8() },
                0x06 => Op::Reopen,
                0x07 => Op::ForgedRefill {
                    set: b.u8(),
                    amount: b.u32(),
                    mode: b.u8(),
                },
                0x08 => Op::GrantLicense {
                    license: b.u8(),
                    flags: b.u8(),
                    corrupt: b.u8(),
                },
                0x09 => Op::Export {
                    slot: b.u8(),
                    mode: b.u8(),
                },
                0x0A => Op::Import {
                    which: b.u8(),
                    corrupt: b.u8(),
                },
                0x0B => Op::Arm {
                    at_write: b.u8(),
                    torn: b.u8() & 1 != 0,
                },
                0x0C => Op::Retire {
                    which: b.u8(),
                    forget: b.u8() & 1 != 0,
                },
                0x0D => Op::Transfer {
                    mode: b.u8(),
                    set: b.u8(),
                    amount: b.u16(),
                    fault: b.u8(),
                },
                _ => Op::Apdu(b.apdu()),
            };
            ops.push(op);
        }
        Input { start, ops }
    }

    /// The canonical encoding ([`Input::decode`] gives `self` back when every APDU is at
    /// most 65535 bytes and there are at most [`MAX_OPS`] operations).
    pub fn encode(&self) -> Vec<u8> {
        fn apdu(out: &mut Vec<u8>, a: &[u8]) {
            let n = u16::try_from(a.len()).expect("APDU longer than 65535 bytes");
            out.extend_from_slice(&n.to_be_bytes());
            out.extend_from_slice(a);
        }
        let mut out = vec![match self.start {
            Start::Funded => 0,
            Start::Outside => 1,
            Start::Transfer => 2,
            Start::Certmeter => 3,
            Start::Personalized => 6,
            Start::Blank => 7,
        }];
        for op in &self.ops {
            match op {
                Op::Apdu(a) => {
                    out.push(0x00);
                    apdu(&mut out, a);
                }
                Op::Reset => out.push(0x01),
                Op::PowerCut {
                    at_write,
                    torn,
                    apdu: a,
                } => {
                    out.extend_from_slice(&[0x02, *at_write, u8::from(*torn)]);
                    apdu(&mut out, a);
                }
                Op::KmsRefill { set, amount, id } => {
                    out.extend_from_slice(&[0x03, *set]);
                    out.extend_from_slice(&amount.to_be_bytes());
                    out.push(*id);
                }
                Op::Issue {
                    set,
                    txn,
                    postage,
                    day,
                } => {
                    out.extend_from_slice(&[0x04, *set, *txn]);
                    out.extend_from_slice(&postage.to_be_bytes());
                    out.push(*day);
                }
                Op::Clock { day } => out.extend_from_slice(&[0x05, *day]),
                Op::Reopen => out.push(0x06),
                Op::ForgedRefill { set, amount, mode } => {
                    out.extend_from_slice(&[0x07, *set]);
                    out.extend_from_slice(&amount.to_be_bytes());
                    out.push(*mode);
                }
                Op::GrantLicense {
                    license,
                    flags,
                    corrupt,
                } => out.extend_from_slice(&[0x08, *license, *flags, *corrupt]),
                Op::Export { slot, mode } => out.extend_from_slice(&[0x09, *slot, *mode]),
                Op::Import { which, corrupt } => out.extend_from_slice(&[0x0A, *which, *corrupt]),
                Op::Arm { at_write, torn } => {
                    out.extend_from_slice(&[0x0B, *at_write, u8::from(*torn)])
                }
                Op::Retire { which, forget } => {
                    out.extend_from_slice(&[0x0C, *which, u8::from(*forget)])
                }
                Op::Transfer {
                    mode,
                    set,
                    amount,
                    fault,
                } => {
                    out.extend_from_slice(&[0x0D, *mode, *set]);
                    out.extend_from_slice(&amount.to_be_bytes());
                    out.push(*fault);
                }
            }
        }
        out
    }
}

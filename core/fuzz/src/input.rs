//! The fuzz input format: a start state and a sequence of operations on the card.
//!
//! Every byte string decodes to some [`Input`] (nothing is rejected), and [`Input::encode`]
//! writes the canonical form the seed generator uses.
//!
//! ```text
//! input  = start:u8 op*
//! start  = 0..=5 funded | 6 personalized, no funds | 7 blank   (taken modulo 8)
//! op     = 0x01                                   reset (volatile state lost, deselected)
//!        | 0x02 at:u8 flags:u8 len:u16 apdu       power cut at write `at` of this APDU,
//!                                                 torn if flags & 1; re-open if it hit
//!        | 0x03 set:u8 amount:u32 id:u8           KMS refill: AUDIT, sign as the KMS, REFILL
//!        | 0x04 set:u8 txn:u8 postage:u16 day:u8  well-formed ISSUE INDICIUM
//!        | 0x05 day:u8                            clock: 0 none, else 2026-11-(1+(day-1)%30)
//!        | 0x06                                   power cycle: re-open the memory, SELECT
//!        | 0x07 set:u8 amount:u32 mode:u8         forged refill, signed by the KMS but bound
//!                                                 to the wrong state (mode % 5: device,
//!                                                 control sum, refills + 1, refills - 1,
//!                                                 license); must be refused
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
    /// Personalized and SELECTed, all registers zero.
    Personalized,
    /// Blank (not personalized), SELECTed.
    Blank,
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
            }
        }
        out
    }
}

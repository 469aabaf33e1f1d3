//! The state strings of the contract as enums: a refill at the meter server, a hold at the
//! recharging center and how a hold ends. Each spells itself exactly as on the wire (and in
//! the services' SQLite `state` columns), compares equal to that spelling, and lists all its
//! values in `ALL` (the test against `web-demo/meter.js` reads them).

use serde::{Deserialize, Serialize};

/// Defines a wire enum: serde as the given spellings, `as_str`, `ALL`, `FromStr`,
/// `Display` and `== "spelling"`.
macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal,)+ }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $v,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v),+];

            /// The wire spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $s,)+
                }
            }
        }

        impl core::str::FromStr for $name {
            type Err = crate::codec::BadField;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok($name::$v),)+
                    other => Err(crate::codec::BadField::new(
                        stringify!($name),
                        format!("unknown value {other:?}"),
                    )),
                }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

pub(crate) use wire_enum;

wire_enum! {
    /// Where a refill stands at the meter server (`RefillView::state`).
    RefillState {
        /// Nonce issued; the host's AUDIT is awaited.
        AwaitingAudit = "awaiting_audit",
        /// The audit passed the KMS and the history check; the combination is being made
        /// (a refill is seen here only if the meter stopped between the two).
        AuditAccepted = "audit_accepted",
        /// Refill message and receipt issued; the confirming audit is awaited.
        MessageIssued = "message_issued",
        /// The owner cancelled after the message left: a void was issued with the same
        /// precondition; the audit after it (or the refill) says which applied.
        Voiding = "voiding",
        /// The confirming audit showed the refill applied; the hold is debited.
        Completed = "completed",
        /// The refill can no longer apply; the hold went back to the deposit.
        Released = "released",
        /// Another service refused a step (`RefillView::error` says which).
        Refused = "refused",
    }
}

impl RefillState {
    /// States in which a refill is outstanding (it blocks another refill of the device).
    pub const OUTSTANDING: &'static [RefillState] = &[
        RefillState::AwaitingAudit,
        RefillState::AuditAccepted,
        RefillState::MessageIssued,
        RefillState::Voiding,
    ];
}

wire_enum! {
    /// A hold at the recharging center (`CombinationRecord::state`, `Settled::state`).
    HoldState {
        /// Held for a combination not settled yet.
        Held = "held",
        /// Debited: the combination became value in a PSD.
        Applied = "applied",
        /// Back to available: the combination can no longer apply.
        Released = "released",
    }
}

wire_enum! {
    /// How a hold ends (`POST /v1/combinations/{id}/settle`).
    Outcome {
        /// The combination became value in the PSD: debit.
        Applied = "applied",
        /// It can no longer apply: the amount goes back to the deposit.
        Released = "released",
    }
}

impl From<Outcome> for HoldState {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Applied => HoldState::Applied,
            Outcome::Released => HoldState::Released,
        }
    }
}

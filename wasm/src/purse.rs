//! The purse as the JS API sees it: a card with the core's purse applet on the in-memory
//! store (same saved-state format as the PSD, [`crate::state`]), and the value transfer
//! from a [`PsdDevice`] to it through core's transfer driver
//! (`openpsd_core::client::transfer::transfer`). Plain Rust, tested natively.

use openpsd_core::client::transfer::{self, Resolved};
use openpsd_core::client::{purse_apdu, PurseClient, Side};
use openpsd_core::purse::personal::PurseInfo;
use openpsd_core::purse::{ins, purse_card, CLA_PURSE};
use openpsd_core::store::MemStore;
use openpsd_core::types::RegisterSetIndex;
use openpsd_core::Card;
use openpsd_core::Status;
use serde::Serialize;

use crate::device::PsdDevice;
use crate::entropy::HostEntropy;
use crate::error::{ApiError, ApiResult};
use crate::views::{parse_amount, RegistersView};
use crate::{card, state};

/// A purse card held in memory.
pub struct PurseDevice {
    card: Card<MemStore, HostEntropy>,
}

/// GET DATA of a personalized purse.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PurseInfoView {
    /// 16 hex digits, upper case.
    pub card_id: String,
    /// The value-transfer scheme it belongs to.
    pub scheme: u32,
    /// Balance (amount).
    pub balance: String,
    /// Highest balance (amount).
    pub max_balance: String,
    /// Highest amount of one transfer.
    pub max_transfer: String,
    /// Transfers received.
    pub transfers: u32,
    /// Value received over its life (amount).
    pub total_in: String,
    /// Date of the last transfer received, `YYYY-MM-DD`; `null` if none yet.
    pub last_transfer: Option<String>,
    /// Purchases made.
    pub purchases: u32,
    /// PIN tries left.
    pub pin_tries_left: u8,
    /// PIN tries when unblocked.
    pub pin_tries: u8,
    /// Failed recognitions in a row.
    pub failures: u8,
    /// Failed recognitions that block transfers.
    pub max_failures: u8,
    /// The purchase key: 130 hex digits, SEC1 uncompressed P-256.
    pub public_key: String,
    /// Whether the issuer's certificate is installed.
    pub certified: bool,
}

impl From<&PurseInfo> for PurseInfoView {
    fn from(i: &PurseInfo) -> Self {
        PurseInfoView {
            card_id: i.card.to_string(),
            scheme: i.scheme.0,
            balance: i.balance.to_string(),
            max_balance: i.max_balance.to_string(),
            max_transfer: i.max_transfer.to_string(),
            transfers: i.transfers.0,
            total_in: i.total_in.to_string(),
            last_transfer: i.last_transfer.map(|d| d.to_string()),
            purchases: i.purchases,
            pin_tries_left: i.pin_tries_left,
            pin_tries: i.pin_tries,
            failures: i.failures,
            max_failures: i.max_failures,
            public_key: hex::encode(i.public_key),
            certified: i.certificate.is_some(),
        }
    }
}

/// A pending transfer resolved before the new one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResolvedView {
    /// `"completed"` or `"undone"`.
    pub outcome: &'static str,
    /// The amount of the pending transfer.
    pub amount: String,
}

/// What `transferToPurse` returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferView {
    /// The amount moved.
    pub amount: String,
    /// A transfer the PSD had pending with this purse, resolved first; `null` if none.
    pub resolved_first: Option<ResolvedView>,
    /// The PSD's register set after.
    pub registers: RegistersView,
    /// The purse after.
    pub purse: PurseInfoView,
}

impl PurseDevice {
    /// A fresh purse card, SELECTed and personalized with `personalization` (the purse's
    /// PERSONALIZE command data).
    pub fn create(
        personalization: &[u8],
        entropy_bytes: &[u8],
        today_text: Option<&str>,
    ) -> ApiResult<Self> {
        let select = purse_apdu::select();
        let card = card::personalized(
            purse_card,
            Side::Purse,
            (&select, CLA_PURSE, ins::PERSONALIZE),
            personalization,
            entropy_bytes,
            today_text,
        )?;
        Ok(PurseDevice { card })
    }

    /// The purse of a saved state, SELECTed; anything else is a `StateError`.
    pub fn restore(
        saved: &[u8],
        entropy_bytes: &[u8],
        today_text: Option<&str>,
    ) -> ApiResult<Self> {
        let card = card::restored(purse_card, saved, entropy_bytes, today_text)?;
        let mut purse = PurseDevice { card };
        let answer =
            |e: ApiError| ApiError::state(format!("saved purse does not answer: {}", e.message));
        purse.select().map_err(answer)?;
        if purse.purse_info().map_err(answer)?.is_none() {
            return Err(ApiError::state("saved state holds no personalized purse"));
        }
        Ok(purse)
    }

    fn client(&mut self) -> PurseClient<&mut Card<MemStore, HostEntropy>> {
        PurseClient::new(&mut self.card)
    }

    fn select(&mut self) -> ApiResult<()> {
        Ok(self.client().select()?)
    }

    /// The persistent store as bytes ([`state`] layout).
    pub fn save_state(&self) -> ApiResult<Vec<u8>> {
        state::encode(self.card.store())
    }

    /// One raw APDU; the response with its status word.
    pub fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        self.card.transmit(apdu)
    }

    fn purse_info(&mut self) -> ApiResult<Option<PurseInfo>> {
        self.select()?;
        Ok(self.client().info()?)
    }

    /// GET DATA.
    pub fn info(&mut self) -> ApiResult<PurseInfoView> {
        match self.purse_info()? {
            Some(i) => Ok(PurseInfoView::from(&i)),
            None => Err(ApiError::card(Status::ConditionsNotSatisfied.sw())),
        }
    }

    /// CERTIFY with the issuer's signature on the purchase key.
    pub fn certify(&mut self, signature: &[u8]) -> ApiResult<PurseInfoView> {
        self.select()?;
        self.client().certify(signature)?;
        self.info()
    }

    /// The recognition key (SEC1 compressed, hex) the scheme issuer certifies (GET DATA
    /// 00 04); `9A25` for a purse personalized before certificates.
    pub fn recognition_key(&mut self) -> ApiResult<String> {
        self.select()?;
        let key = self.client().recognition_info()?.public_key;
        Ok(crate::device::hex_lower(&key))
    }

    /// INSTALL CERTIFICATE: the issuer's certificate on the recognition key.
    pub fn install_certificate(&mut self, certificate: &[u8]) -> ApiResult<()> {
        self.select()?;
        Ok(self.client().install_certificate(certificate)?)
    }

    /// Moves `amount` from `psd`'s register set `set` to this purse (core's driver).
    pub fn receive(
        &mut self,
        psd: &mut PsdDevice,
        amount: &str,
        pin: &str,
        set: u8,
    ) -> ApiResult<TransferView> {
        let amount = parse_amount("amount", amount)?;
        let out = transfer::transfer(
            psd.card_mut(),
            &mut self.card,
            RegisterSetIndex(set),
            amount,
            pin.as_bytes(),
        )?;
        Ok(TransferView {
            amount: out.amount.to_string(),
            resolved_first: out.resolved_first.map(|(r, a)| ResolvedView {
                outcome: match r {
                    Resolved::Completed => "completed",
                    Resolved::Undone => "undone",
                },
                amount: a.to_string(),
            }),
            registers: RegistersView::new(set, &out.registers),
            purse: PurseInfoView::from(&out.purse),
        })
    }
}

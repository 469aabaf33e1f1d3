//! The PSD as the JS API sees it, in plain Rust: a card with the core's PSD applet on the
//! in-memory store, driven through core's client layer (`openpsd_core::client`), with typed
//! results. `js.rs` only wraps this in wasm-bindgen glue, so everything here is tested
//! natively as well as in wasm.

use openpsd_core::client::{command, psd_apdu, PsdClient, Side};
use openpsd_core::platform::Platform;
use openpsd_core::psd::device::DeviceInfo;
use openpsd_core::psd::indicium::{IndiciumData, IndiciumRequest};
use openpsd_core::psd::registers::Registers;
use openpsd_core::psd::{ins, psd_card, CLA_PSD};
use openpsd_core::store::MemStore;
use openpsd_core::types::{Date, RateCategory, RegisterSetIndex, TransactionId};
use openpsd_core::Card;
use openpsd_core::Status;

use crate::entropy::{HostEntropy, ENTROPY_LEN};
use crate::error::{ApiError, ApiResult};
use crate::views::{
    parse_amount, parse_date, parse_hex, parse_postal_code, Bytes, FieldsView, IndiciumArgs,
    InfoView, IssuedView, RegistersView,
};
use crate::{card, state};

/// Length of an ECDSA P-256 signature at the end of an indicium.
const SIGNATURE_LEN: usize = openpsd_core::crypto::SIGNATURE_LEN;

/// A personalized PSD held in memory.
pub struct PsdDevice {
    card: Card<MemStore, HostEntropy>,
}

/// The 32 bytes of host entropy, or an `InputError`.
pub fn entropy(bytes: &[u8]) -> ApiResult<[u8; ENTROPY_LEN]> {
    bytes.try_into().map_err(|_| {
        ApiError::input(format!(
            "entropy: expected {ENTROPY_LEN} bytes from crypto.getRandomValues, got {}",
            bytes.len()
        ))
    })
}

/// An optional `today` argument.
pub fn today(text: Option<&str>) -> ApiResult<Option<Date>> {
    text.map(|t| parse_date("today", t)).transpose()
}

/// The card's answer was not the documented layout: the card's `6F00`.
pub(crate) fn malformed() -> ApiError {
    ApiError::card(Status::Internal.sw())
}

impl PsdDevice {
    /// A fresh card, SELECTed and personalized with `personalization` (PERSONALIZE's data).
    pub fn create(
        personalization: &[u8],
        entropy_bytes: &[u8],
        today_text: Option<&str>,
    ) -> ApiResult<Self> {
        let select = psd_apdu::select();
        let card = card::personalized(
            psd_card,
            Side::Psd,
            (&select, CLA_PSD, ins::PERSONALIZE),
            personalization,
            entropy_bytes,
            today_text,
        )?;
        Ok(PsdDevice { card })
    }

    /// The device of a saved state, SELECTed. Bytes that are not a personalized PSD's
    /// state are a `StateError`, never a fresh device.
    pub fn restore(
        saved: &[u8],
        entropy_bytes: &[u8],
        today_text: Option<&str>,
    ) -> ApiResult<Self> {
        let card = card::restored(psd_card, saved, entropy_bytes, today_text)?;
        let mut psd = PsdDevice { card };
        let answer =
            |e: ApiError| ApiError::state(format!("saved PSD does not answer: {}", e.message));
        psd.select().map_err(answer)?;
        if psd.device_info().map_err(answer)?.is_none() {
            return Err(ApiError::state("saved state holds no personalized PSD"));
        }
        Ok(psd)
    }

    /// A device around a card personalized elsewhere (the outside signer's PERSONALIZE).
    #[cfg(feature = "webcrypto")]
    pub(crate) fn from_card(card: Card<MemStore, HostEntropy>) -> Self {
        PsdDevice { card }
    }

    pub(crate) fn client(&mut self) -> PsdClient<&mut Card<MemStore, HostEntropy>> {
        PsdClient::new(&mut self.card)
    }

    fn select(&mut self) -> ApiResult<()> {
        self.client().exchange("SELECT", &psd_apdu::select())?;
        Ok(())
    }

    /// The card itself, for core's transfer driver (a [`openpsd_core::client::Link`]).
    pub(crate) fn card_mut(&mut self) -> &mut Card<MemStore, HostEntropy> {
        &mut self.card
    }

    /// The persistent store as bytes ([`state`] layout).
    pub fn save_state(&self) -> ApiResult<Vec<u8>> {
        state::encode(self.card.store())
    }

    /// Sets or clears the date the platform vouches for.
    pub fn set_today(&mut self, today_text: Option<&str>) -> ApiResult<()> {
        let d = today(today_text)?;
        self.card.platform_mut().set_today(d);
        Ok(())
    }

    /// One raw APDU; the response with its status word.
    pub fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        self.card.transmit(apdu)
    }

    fn device_info(&mut self) -> ApiResult<Option<DeviceInfo>> {
        Ok(self.client().info()?)
    }

    /// GET DATA.
    pub fn info(&mut self) -> ApiResult<InfoView> {
        match self.device_info()? {
            Some(i) => Ok(InfoView::from(&i)),
            None => Err(ApiError::card(Status::ConditionsNotSatisfied.sw())),
        }
    }

    /// The device's indicium public key (SEC1).
    pub fn public_key(&mut self) -> ApiResult<[u8; 65]> {
        self.device_info()?
            .map(|i| i.public_key)
            .ok_or_else(|| ApiError::card(Status::ConditionsNotSatisfied.sw()))
    }

    /// The recognition key (SEC1 compressed, hex) the scheme issuer certifies (GET DATA
    /// 00 03); `9A25` for a PSD personalized before certificates.
    pub fn recognition_key(&mut self) -> ApiResult<String> {
        self.select()?;
        Ok(hex_lower(&self.client().recognition_info()?.public_key))
    }

    /// INSTALL CERTIFICATE: the issuer's certificate on the recognition key.
    pub fn install_certificate(&mut self, certificate: &[u8]) -> ApiResult<()> {
        self.select()?;
        Ok(self.client().install_certificate(certificate)?)
    }

    fn read_registers(&mut self, set: u8) -> ApiResult<Registers> {
        Ok(self.client().registers(RegisterSetIndex(set))?)
    }

    /// READ REGISTERS of `set`.
    pub fn registers(&mut self, set: u8) -> ApiResult<RegistersView> {
        Ok(RegistersView::new(set, &self.read_registers(set)?))
    }

    /// The ISSUE INDICIUM request `args` describe, with a fresh transaction ID if none.
    pub fn indicium_request(&mut self, args: &IndiciumArgs) -> ApiResult<IndiciumRequest> {
        let transaction = match &args.transaction_id {
            Some(t) => TransactionId(parse_hex::<8>("transactionId", t)?),
            None => {
                let mut t = [0u8; 8];
                self.card.platform_mut().fill_random(&mut t);
                TransactionId(t)
            }
        };
        Ok(IndiciumRequest {
            transaction,
            postage: parse_amount("postage", &args.postage)?,
            date: parse_date("date", &args.date)?,
            rate: RateCategory(args.rate),
            origin: parse_postal_code("origin", &args.origin)?,
            destination: parse_postal_code("destination", &args.destination)?,
        })
    }

    /// ISSUE INDICIUM: the signed indicium, its fields and the set's registers after it.
    pub fn issue_indicium(&mut self, args: &IndiciumArgs) -> ApiResult<IssuedView> {
        let set = args.set.unwrap_or(0);
        let req = self.indicium_request(args)?;
        // A set signed outside answers unsigned: refused here, before the debit (the main
        // module has no outside signer: such a state does not load there).
        #[cfg(feature = "webcrypto")]
        if openpsd_core::psd::outside_signer::signs_outside(
            self.card.store(),
            RegisterSetIndex(set),
        ) {
            return Err(ApiError::input(
                "issueIndicium: this PSD's indicia are signed outside it (WebCrypto signer); \
                 use issueUnsigned and storeSignature, or WebCryptoPsd; nothing was debited",
            ));
        }
        // Decoded, not verified: the page verifies what it stores (verifyIndicium), and a
        // second signature check would halve the indicia per second.
        let indicium = self.client().exchange(
            "ISSUE INDICIUM",
            &psd_apdu::issue_indicium(RegisterSetIndex(set), &req),
        )?;
        let split = indicium
            .len()
            .checked_sub(SIGNATURE_LEN)
            .ok_or_else(malformed)?;
        let (payload, signature) = indicium.split_at(split);
        let fields = IndiciumData::decode(payload).map_err(|_| malformed())?;
        let (barcode, payload, signature) =
            (indicium.to_vec(), payload.to_vec(), signature.to_vec());
        Ok(IssuedView {
            transaction_id: hex::encode(req.transaction.0),
            barcode: Bytes(barcode),
            payload: Bytes(payload),
            signature: Bytes(signature),
            fields: FieldsView::from(&fields),
            registers: self.registers(set)?,
        })
    }

    /// AUDIT of `set` with the server's nonce: the audit message, signed by the device key.
    /// The nonce goes to the card as given; a wrong length is the card's `6700`. A PSD
    /// personalized before the asymmetric refill suite answers `9A16`.
    pub fn audit(&mut self, nonce: &[u8], set: u8) -> ApiResult<Vec<u8>> {
        self.command("AUDIT", ins::AUDIT, set, nonce)
    }

    /// REFILL of `set` with a refill message signed by the KMS; the registers after the
    /// credit.
    pub fn apply_refill(&mut self, message: &[u8], set: u8) -> ApiResult<RegistersView> {
        let data = self.command("REFILL", ins::REFILL, set, message)?;
        let regs = Registers::decode(&data).map_err(|_| malformed())?;
        Ok(RegistersView::new(set, &regs))
    }

    /// RECEIPT; the last inspection date the PSD recorded.
    pub fn receipt(&mut self, receipt: &[u8]) -> ApiResult<String> {
        let data = self.command("RECEIPT", ins::RECEIPT, 0, receipt)?;
        let mut r = openpsd_core::wire::Reader::new(&data);
        let d = Date::read(&mut r).map_err(|_| malformed())?;
        Ok(d.to_string())
    }

    /// A command with data the page gave as is (the card judges its length), through core's
    /// exchange; the data of its `9000`.
    pub(crate) fn command(
        &mut self,
        step: &'static str,
        ins: u8,
        p2: u8,
        body: &[u8],
    ) -> ApiResult<Vec<u8>> {
        let apdu = command(CLA_PSD, ins, 0, p2, body, 256);
        if apdu.is_empty() {
            return Err(ApiError::input("data longer than one APDU carries"));
        }
        Ok(self.client().exchange(step, &apdu)?)
    }
}

/// Lower-case hex (the page sends it to the room as JSON).
pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    use core::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

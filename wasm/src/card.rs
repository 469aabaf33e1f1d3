//! What the PSD and the purse share in the browser: a card of either applet on the
//! in-memory store, made blank and personalized with the room's raw PERSONALIZE data, or
//! loaded from a saved state — which is never silently replaced by a fresh card.

use openpsd_core::client::{command, exchange, Link, Side};
use openpsd_core::store::{MemStore, StoreError};
use openpsd_core::Card;

use crate::device::{entropy, today};
use crate::entropy::HostEntropy;
use crate::error::{ApiError, ApiResult};
use crate::state;

/// A card in the browser.
pub type WasmCard = Card<MemStore, HostEntropy>;

/// Makes a card of one applet (`psd_card`, `purse_card`) on a store.
pub type Maker = fn(MemStore, HostEntropy) -> Result<WasmCard, StoreError>;

/// The platform for a card: the page's entropy and, when it vouches for one, today's date.
fn platform(entropy_bytes: &[u8], today_text: Option<&str>) -> ApiResult<HostEntropy> {
    Ok(HostEntropy::new(
        entropy(entropy_bytes)?,
        today(today_text)?,
    ))
}

/// A blank card, SELECTed with `select`, then PERSONALIZE (`cla`, `ins`) with the room's
/// data as given.
pub fn personalized(
    make: Maker,
    side: Side,
    (select, cla, ins): (&[u8], u8, u8),
    personalization: &[u8],
    entropy_bytes: &[u8],
    today_text: Option<&str>,
) -> ApiResult<WasmCard> {
    let mut card = make(MemStore::new(), platform(entropy_bytes, today_text)?)
        .map_err(|e| ApiError::state(format!("blank store does not load: {e}")))?;
    // Through `dyn Link`, as core's transfer driver: one copy of `exchange` in the module.
    let link: &mut dyn Link = &mut card;
    exchange(link, side, "SELECT", select)?;
    let apdu = command(cla, ins, 0, 0, personalization, 256);
    if apdu.is_empty() {
        return Err(ApiError::input(
            "personalization: longer than one APDU carries",
        ));
    }
    exchange(link, side, "PERSONALIZE", &apdu)?;
    Ok(card)
}

/// The card of a saved state; bytes that do not load are a `StateError`.
pub fn restored(
    make: Maker,
    saved: &[u8],
    entropy_bytes: &[u8],
    today_text: Option<&str>,
) -> ApiResult<WasmCard> {
    let store = state::decode(saved)?;
    make(store, platform(entropy_bytes, today_text)?)
        .map_err(|e| ApiError::state(format!("saved state does not load: {e}")))
}

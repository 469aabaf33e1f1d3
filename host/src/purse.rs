//! Transfer and payment refusals explained in words (a wrong PIN with the tries left, a
//! blocked PIN, ...): [`explain`] lives with the merchant terminal, whose errors read that
//! way (`openpsd-terminal`). The calls themselves are core's client layer
//! ([`openpsd_core::client`]: `PurseClient::status`, the transfer driver).

pub use openpsd_terminal::explain;

//! The card simulator's library: the file-backed persistent store and the platform that
//! lends cards the operating system's randomness and date.

pub mod file_store;
pub mod issuer;
pub mod os_platform;
pub mod personalize;
pub mod scheme;
pub mod script;
pub mod sim;
pub mod transport;

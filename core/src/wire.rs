//! Big-endian readers and writers for the compact binary layouts of APDU data,
//! indicia, audits and refill messages.
//!
//! Written here rather than with serde because every layout is a fixed, documented byte
//! contract (`docs/apdu.md`), read from untrusted hosts: a reader never panics, and a
//! message with bytes left over is as wrong as one cut short.

use alloc::vec::Vec;

/// Why bytes do not fit a layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// The data ended before the layout did, or did not end when it should.
    Length,
    /// A field holds a value the layout does not allow.
    Value,
}

impl core::fmt::Display for Malformed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Malformed::Length => "data too short or too long for its layout",
            Malformed::Value => "a field holds a value its layout does not allow",
        })
    }
}

impl core::error::Error for Malformed {}

/// Why a MACed message (refill message, receipt) was not opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// The MAC or signature does not verify: nothing in the message may be believed.
    Unauthentic,
    /// The MAC or signature holds (or the length was wrong to begin with) but the layout does not.
    Malformed(Malformed),
}

impl From<Malformed> for OpenError {
    fn from(m: Malformed) -> Self {
        OpenError::Malformed(m)
    }
}

impl From<OpenError> for crate::status::Status {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Unauthentic => crate::status::Status::SecurityStatusNotSatisfied,
            OpenError::Malformed(m) => m.into(),
        }
    }
}

impl From<Malformed> for crate::status::Status {
    fn from(m: Malformed) -> Self {
        match m {
            Malformed::Length => crate::status::Status::WrongLength,
            Malformed::Value => crate::status::Status::WrongData,
        }
    }
}

/// Reads a layout field by field from a byte slice.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.rest.len() < n {
            return Err(Malformed::Length);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.array::<1>()?[0])
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A length byte followed by that many bytes.
    pub fn short_bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// What has not been read yet.
    pub fn remaining(&self) -> &'a [u8] {
        self.rest
    }

    /// Succeeds only if every byte was read.
    pub fn finish(self) -> Result<(), Malformed> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Malformed::Length)
        }
    }
}

/// Appends big-endian fields to a byte vector.
pub trait Writer {
    /// Appends one byte.
    fn put_u8(&mut self, v: u8);
    /// Appends a big-endian `u16`.
    fn put_u16(&mut self, v: u16);
    /// Appends a big-endian `u32`.
    fn put_u32(&mut self, v: u32);
    /// Appends a big-endian `u64`.
    fn put_u64(&mut self, v: u64);
    /// Appends a length byte and the bytes (at most 255 of them, which callers guarantee).
    fn put_short_bytes(&mut self, v: &[u8]);
}

impl Writer for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_short_bytes(&mut self, v: &[u8]) {
        // At most 255 bytes: the length must fit its byte.
        let n = u8::try_from(v.len()).unwrap_or(u8::MAX);
        self.push(n);
        self.extend_from_slice(&v[..usize::from(n)]);
    }
}

//! Building a command APDU and [`exchange`]: send, follow `61xx` and `6Cxx`, keep the data
//! of a `9000`, map every other status word to [`Status`].

use alloc::vec;
use alloc::vec::Vec;
use iso7816::command::class::Class;
use iso7816::command::{CommandBuilder, ExpectedLen};
use iso7816::Instruction;

use super::{ClientError, Link, Side};
use crate::status::{Status, SW1_BYTES_REMAINING, SW_OK};

/// GET RESPONSE rounds (and Le corrections) before giving up on a card that keeps
/// answering `61xx` (or `6Cxx`).
pub const MAX_GET_RESPONSE: usize = 64;

/// SW1 of "wrong Le; SW2 is the exact length" (ISO 7816-4 5.6).
const SW1_WRONG_LE: u8 = 0x6C;

/// Encodes one command APDU (short when it fits, extended otherwise). `ne` 0 means no Le,
/// `u16::MAX` the maximum. Data longer than an extended APDU can carry (65535 bytes), or
/// CLA `FF`, gives an empty vector (which every card refuses as malformed).
pub fn command(cla: u8, ins: u8, p1: u8, p2: u8, data: &[u8], ne: u16) -> Vec<u8> {
    if data.len() > usize::from(u16::MAX) {
        return Vec::new();
    }
    let Ok(class) = Class::from_byte(cla) else {
        return Vec::new();
    };
    let le = if ne == u16::MAX {
        ExpectedLen::Max
    } else {
        ExpectedLen::Ne(ne)
    };
    let builder = CommandBuilder::new(class, Instruction::from(ins), p1, p2, data, le);
    let mut out = vec![0u8; builder.required_len()];
    let mut slice = out.as_mut_slice();
    // The buffer is exactly `required_len`, which is what serialization needs.
    if builder.serialize_into(&mut slice).is_err() {
        out.clear();
    }
    out
}

/// A response APDU's status word (0 for a response shorter than two bytes).
pub fn sw(response: &[u8]) -> u16 {
    match response {
        [.., a, b] => u16::from_be_bytes([*a, *b]),
        _ => 0,
    }
}

/// The same short command with Le set to `le` (for a `6Cxx` answer), or `None` when the
/// command is not a well-formed short APDU.
fn with_le(apdu: &[u8], le: u8) -> Option<Vec<u8>> {
    let mut out = apdu.to_vec();
    match apdu.len() {
        4 => out.push(le),
        5 => out[4] = le,
        n => {
            let lc = usize::from(*apdu.get(4)?);
            if lc == 0 {
                return None; // extended length: 6Cxx is a short-APDU answer
            }
            if n == 5 + lc {
                out.push(le);
            } else if n == 6 + lc {
                out[n - 1] = le;
            } else {
                return None;
            }
        }
    }
    Some(out)
}

/// Sends `apdu` to `side` over `link` and returns the response data of a `9000`. Data
/// that comes in pieces (`61xx`) is fetched with GET RESPONSE and joined; a `6Cxx` (wrong
/// Le) re-sends the command once with the length the card named. Any other status word is
/// the card's refusal, as a [`Status`] when the contract defines it. `step` names the
/// command in errors.
///
/// Why `dyn`: one copy of this loop serves every client and link type; generic, the browser
/// module carried three (~1 KB gzip of its size budget), and a virtual call per APDU costs
/// nothing next to the card's work.
pub fn exchange(
    link: &mut dyn Link,
    side: Side,
    step: &'static str,
    apdu: &[u8],
) -> Result<Vec<u8>, ClientError> {
    let mut send = |apdu: &[u8]| {
        let resp = link
            .transmit(apdu)
            .map_err(|e| ClientError::Link(side, e.0))?;
        if resp.len() < 2 {
            return Err(ClientError::BadResponse(side, step));
        }
        Ok(resp)
    };
    let mut resp = send(apdu)?;
    let mut data = Vec::new();
    let mut corrected = false;
    for _ in 0..MAX_GET_RESPONSE {
        let [sw1, sw2] = [resp[resp.len() - 2], resp[resp.len() - 1]];
        if sw1 == SW1_WRONG_LE && !corrected && data.is_empty() {
            corrected = true;
            let again = with_le(apdu, sw2).ok_or(ClientError::BadResponse(side, step))?;
            resp = send(&again)?;
            continue;
        }
        data.extend_from_slice(&resp[..resp.len() - 2]);
        let sw = u16::from_be_bytes([sw1, sw2]);
        if sw == SW_OK {
            return Ok(data);
        }
        if sw1 != SW1_BYTES_REMAINING {
            return Err(match Status::from_sw(sw) {
                Some(s) => ClientError::Refused(side, step, s),
                None => ClientError::UnknownStatus(side, step, sw),
            });
        }
        // ISO 7816-4 5.3.3: GET RESPONSE with Le = SW2 (00 means 256).
        resp = send(&[0x00, 0xC0, 0x00, 0x00, sw2])?;
    }
    Err(ClientError::BadResponse(side, step))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::LinkError;

    /// A card that answers `answers` in order and records what it was sent.
    struct Script {
        answers: Vec<Vec<u8>>,
        sent: Vec<Vec<u8>>,
    }

    impl Link for Script {
        fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, LinkError> {
            self.sent.push(apdu.to_vec());
            if self.answers.is_empty() {
                return Err("no more answers".into());
            }
            Ok(self.answers.remove(0))
        }
    }

    fn script(answers: &[&[u8]]) -> Script {
        Script {
            answers: answers.iter().map(|a| a.to_vec()).collect(),
            sent: Vec::new(),
        }
    }

    #[test]
    fn pieces_are_joined_with_get_response() {
        let mut card = script(&[&[1, 2, 0x61, 3], &[3, 4, 5, 0x61, 1], &[6, 0x90, 0x00]]);
        let data = exchange(&mut card, Side::Psd, "GET DATA", &[0x80, 0xCA, 0, 1, 0]).unwrap();
        assert_eq!(data, [1, 2, 3, 4, 5, 6]);
        assert_eq!(card.sent[1], [0x00, 0xC0, 0x00, 0x00, 3]);
        assert_eq!(card.sent[2], [0x00, 0xC0, 0x00, 0x00, 1]);
    }

    #[test]
    fn wrong_le_is_corrected_once() {
        let mut card = script(&[&[0x6C, 0x02], &[7, 8, 0x90, 0x00]]);
        let data = exchange(&mut card, Side::Purse, "GET DATA", &[0x80, 0xCA, 0, 1, 0]).unwrap();
        assert_eq!(data, [7, 8]);
        assert_eq!(card.sent[1], [0x80, 0xCA, 0, 1, 2]);
        // Case 3 (no Le): the corrected Le is appended; case 4: replaced.
        assert_eq!(
            with_le(&[0x80, 0x10, 0, 0, 1, 9], 4).unwrap(),
            [0x80, 0x10, 0, 0, 1, 9, 4]
        );
        assert_eq!(
            with_le(&[0x80, 0x10, 0, 0, 1, 9, 0], 4).unwrap(),
            [0x80, 0x10, 0, 0, 1, 9, 4]
        );
        assert_eq!(with_le(&[0x80, 0x10, 0, 0, 0, 0, 1, 9], 4), None);
        // A second 6Cxx is the card's answer, not a loop.
        let mut card = script(&[&[0x6C, 0x02], &[0x6C, 0x02]]);
        let err = exchange(&mut card, Side::Psd, "X", &[0x80, 0xCA, 0, 1, 0]).unwrap_err();
        assert_eq!(err, ClientError::UnknownStatus(Side::Psd, "X", 0x6C02));
    }

    #[test]
    fn refusals_map_to_status_and_unknown_words_stay_raw() {
        let mut card = script(&[&[0x6A, 0x82], &[0x12, 0x34], &[0x90]]);
        let apdu = [0x00, 0xA4, 0x04, 0x00, 0];
        assert_eq!(
            exchange(&mut card, Side::Psd, "SELECT", &apdu),
            Err(ClientError::Refused(Side::Psd, "SELECT", Status::NotFound))
        );
        assert_eq!(
            exchange(&mut card, Side::Psd, "SELECT", &apdu),
            Err(ClientError::UnknownStatus(Side::Psd, "SELECT", 0x1234))
        );
        assert_eq!(
            exchange(&mut card, Side::Psd, "SELECT", &apdu),
            Err(ClientError::BadResponse(Side::Psd, "SELECT"))
        );
        assert!(exchange(&mut card, Side::Psd, "SELECT", &apdu)
            .unwrap_err()
            .is_link());
    }

    #[test]
    fn endless_61xx_stops() {
        let mut card = script(&[&[0x61u8, 0x01][..]; 100]);
        let err = exchange(&mut card, Side::Psd, "GET DATA", &[0x80, 0xCA, 0, 1, 0]).unwrap_err();
        assert_eq!(err, ClientError::BadResponse(Side::Psd, "GET DATA"));
        assert_eq!(card.sent.len(), MAX_GET_RESPONSE + 1);
    }
}

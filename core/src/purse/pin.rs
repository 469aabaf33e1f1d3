//! The PIN commands: VERIFY, CHANGE REFERENCE DATA and the issuer's UNBLOCK PIN. The PIN
//! record itself is [`super::state::PinRecord`].
//!
//! The rule that beats tearing attacks: the try counter is decremented and committed
//! *before* the compare (in constant time) and restored only after a match, so cutting
//! power after a wrong guess still costs a try.

use crate::card::Ctx;
use crate::records::purse as rec;
use crate::status::Status;
use crate::store::Transaction;
use crate::wire::Reader;

use super::state::{PinRecord, PurseState};
use super::{PurseApplet, UNBLOCK_LABEL};

impl PurseApplet {
    /// VERIFY (00 20 00 81): the try counter is decremented and committed before the
    /// compare. Without data it reports the PIN's status.
    pub(super) fn verify(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> Result<(), Status> {
        let c = self.personalized()?;
        if data.is_empty() {
            // ISO 7816-4: VERIFY without data asks for the status.
            return match (self.volatile.pin_verified, c.pin.tries_left) {
                (true, _) => Ok(()),
                (false, 0) => Err(Status::AuthenticationBlocked),
                (false, n) => Err(Status::VerificationFailed(n)),
            };
        }
        self.volatile.pin_verified = false;
        self.check_pin(ctx, data)
    }

    /// The PIN rule: decrement and commit, compare in constant time, restore on a match.
    fn check_pin(&mut self, ctx: &mut Ctx<'_>, candidate: &[u8]) -> Result<(), Status> {
        let c = self.personalized_mut()?;
        if c.pin.tries_left == 0 {
            return Err(Status::AuthenticationBlocked);
        }
        let mut counted = c.pin.clone();
        counted.tries_left -= 1;
        let mut txn = Transaction::begin(ctx.store);
        txn.write(rec::PIN, counted.encode().to_vec());
        txn.commit()?;
        c.pin = counted;
        if !c.pin.matches(candidate) {
            return Err(Status::VerificationFailed(c.pin.tries_left));
        }
        let mut restored = c.pin.clone();
        restored.tries_left = c.id.pin_tries;
        let mut txn = Transaction::begin(ctx.store);
        txn.write(rec::PIN, restored.encode().to_vec());
        txn.commit()?;
        c.pin = restored;
        self.volatile.pin_verified = true;
        Ok(())
    }

    /// CHANGE REFERENCE DATA (00 24 00 81): old PIN ‖ new PIN (the card knows the old
    /// one's length).
    pub(super) fn change_pin(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> Result<(), Status> {
        let c = self.personalized()?;
        let old_len = usize::from(c.pin.len);
        let tries = c.id.pin_tries;
        self.volatile.pin_verified = false;
        // The old PIN is checked (and a try counted) before anything about the data is
        // judged, so no answer reveals the PIN's length for free.
        let old = data.get(..old_len).unwrap_or(data);
        self.check_pin(ctx, old)?;
        self.volatile.pin_verified = false;
        let new = data.get(old_len..).unwrap_or_default();
        let Some(mut next) = PinRecord::new(new, tries) else {
            return Err(Status::WrongData);
        };
        let c = self.personalized_mut()?;
        next.tries_left = tries;
        let mut txn = Transaction::begin(ctx.store);
        txn.write(rec::PIN, next.encode().to_vec());
        txn.commit()?;
        c.pin = next;
        Ok(())
    }

    /// UNBLOCK PIN (80 2C 00 81): counter ‖ new PIN (length-prefixed) ‖ MAC under the
    /// card's admin key.
    pub(super) fn unblock_pin(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> Result<(), Status> {
        let (counter, rest) = self.check_issuer(UNBLOCK_LABEL, data)?;
        let mut r = Reader::new(rest);
        let new = r.short_bytes()?;
        r.finish()?;
        let c = self.personalized_mut()?;
        let pin = PinRecord::new(new, c.id.pin_tries).ok_or(Status::WrongData)?;
        let state = PurseState {
            admin_counter: counter,
            ..c.state
        };
        let mut txn = Transaction::begin(ctx.store);
        txn.write(rec::PIN, pin.encode().to_vec());
        txn.write(rec::STATE, state.encode());
        txn.commit()?;
        c.pin = pin;
        c.state = state;
        Ok(())
    }
}

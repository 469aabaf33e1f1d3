//! The purse's money: every change of its balance and totalizer, in one place (as
//! `psd/registers.rs` is for the PSD's registers).
//!
//! Each step is checked arithmetic on [`Amount`] and returns a new [`PurseState`], so the
//! caller commits it before it replaces the old one; a refusal names the status word the
//! host sees. Nothing here panics or wraps.

use crate::status::Status;
use crate::types::{Amount, Date};

use super::state::PurseState;

/// The card's limits on value coming in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Highest balance.
    pub max_balance: Amount,
    /// Highest amount of one transfer.
    pub max_transfer: Amount,
}

impl PurseState {
    /// Whether a transfer of `amount` may be asked for (TRANSFER REQUEST): not zero
    /// (`6A80`), within the per-transfer limit (`9A22`), and the balance after it within the
    /// maximum (`9A21`). Checked before the PSD debits anything.
    pub fn check_request(&self, amount: Amount, limits: Limits) -> Result<(), Status> {
        if amount == Amount::ZERO {
            return Err(Status::WrongData);
        }
        if amount > limits.max_transfer {
            return Err(Status::TransferAboveLimit);
        }
        let after = self
            .balance
            .checked_add(amount)
            .ok_or(Status::BalanceAboveLimit)?;
        if after > limits.max_balance {
            return Err(Status::BalanceAboveLimit);
        }
        Ok(())
    }

    /// The state after crediting `amount` received from a PSD (TRANSFER CREDIT): balance up
    /// (at most `max_balance`, else `9A21`), one more transfer, totalizer up (`9A06` on
    /// overflow), and the date of the last transfer when the platform has a clock.
    pub fn credited(
        &self,
        amount: Amount,
        max_balance: Amount,
        today: Option<Date>,
    ) -> Result<PurseState, Status> {
        let balance = self
            .balance
            .checked_add(amount)
            .filter(|b| *b <= max_balance)
            .ok_or(Status::BalanceAboveLimit)?;
        Ok(PurseState {
            balance,
            transfers: self
                .transfers
                .checked_next()
                .ok_or(Status::CounterOverflow)?,
            total_in: self
                .total_in
                .checked_add(amount)
                .ok_or(Status::CounterOverflow)?,
            last_transfer: today.or(self.last_transfer),
            ..*self
        })
    }

    /// The state after paying `amount` (PURCHASE): not zero (`6A80`), balance down (`9A01`
    /// if short), one more purchase (`9A06` on overflow). The new purchase number is
    /// `purchases` of the result.
    pub fn debited(&self, amount: Amount) -> Result<PurseState, Status> {
        if amount == Amount::ZERO {
            return Err(Status::WrongData);
        }
        let balance = self
            .balance
            .checked_sub(amount)
            .ok_or(Status::InsufficientFunds)?;
        let purchases = self
            .purchases
            .checked_add(1)
            .ok_or(Status::CounterOverflow)?;
        Ok(PurseState {
            balance,
            purchases,
            ..*self
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_balance: Amount(1000),
        max_transfer: Amount(600),
    };

    fn with_balance(balance: u64) -> PurseState {
        PurseState {
            balance: Amount(balance),
            ..PurseState::default()
        }
    }

    #[test]
    fn requests_respect_the_limits() {
        let s = with_balance(500);
        assert_eq!(s.check_request(Amount(0), LIMITS), Err(Status::WrongData));
        assert_eq!(
            s.check_request(Amount(601), LIMITS),
            Err(Status::TransferAboveLimit)
        );
        assert_eq!(
            s.check_request(Amount(501), LIMITS),
            Err(Status::BalanceAboveLimit)
        );
        assert_eq!(s.check_request(Amount(500), LIMITS), Ok(()));
        let full = with_balance(u64::MAX);
        assert_eq!(
            full.check_request(Amount(1), LIMITS),
            Err(Status::BalanceAboveLimit)
        );
    }

    #[test]
    fn credit_and_debit_are_checked() {
        let s = with_balance(400).credited(Amount(600), Amount(1000), None);
        let s = s.as_ref().map(|s| (s.balance, s.transfers.0, s.total_in));
        assert_eq!(s, Ok((Amount(1000), 1, Amount(600))));
        assert_eq!(
            with_balance(401).credited(Amount(600), Amount(1000), None),
            Err(Status::BalanceAboveLimit)
        );
        let d = with_balance(10).debited(Amount(10));
        assert_eq!(d.map(|s| (s.balance, s.purchases)), Ok((Amount(0), 1)));
        assert_eq!(
            with_balance(10).debited(Amount(11)),
            Err(Status::InsufficientFunds)
        );
        assert_eq!(with_balance(10).debited(Amount(0)), Err(Status::WrongData));
        let stuck = PurseState {
            purchases: u32::MAX,
            ..with_balance(10)
        };
        assert_eq!(stuck.debited(Amount(1)), Err(Status::CounterOverflow));
    }
}

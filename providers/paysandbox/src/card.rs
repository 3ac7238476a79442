//! The card form of the payment page, parsed: number (Luhn-checked), expiry (`MM/YY`, not past) and CVC.
//!
//! Nothing here is kept beyond the last four digits; the sandbox only needs to know which test card was
//! used. The checks are the ones a real provider's form does first, so a shopper who mistypes gets the
//! same kind of answer they would get from a real one.

use tessera_contracts::payments::test_cards;

/// Why the card form was refused, in words for the shopper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    #[error("Enter a card number of 12 to 19 digits.")]
    NumberLength,
    #[error("That card number is not valid. Check it for typos.")]
    NumberChecksum,
    #[error("Enter the expiry date as MM/YY, for example 12/30.")]
    ExpiryFormat,
    #[error("That card has expired.")]
    Expired,
    #[error("Enter the 3 or 4 digit security code (CVC) from the back of the card.")]
    Cvc,
}

/// A card number as typed, without the spaces and dashes people put in it.
pub fn normalise_number(input: &str) -> String {
    input.chars().filter(|c| *c != ' ' && *c != '-').collect()
}

/// The Luhn checksum every card number carries (catches a mistyped digit and most swapped pairs).
pub fn passes_luhn(digits: &str) -> bool {
    let mut sum = 0u32;
    for (position, c) in digits.chars().rev().enumerate() {
        let Some(digit) = c.to_digit(10) else {
            return false;
        };
        let value = if position % 2 == 1 { digit * 2 } else { digit };
        sum += if value > 9 { value - 9 } else { value };
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// A well-formed card number: 12 to 19 digits that pass the Luhn check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardNumber(String);

impl CardNumber {
    pub fn parse(input: &str) -> Result<CardNumber, CardError> {
        let digits = normalise_number(input.trim());
        if !(12..=19).contains(&digits.len()) || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(CardError::NumberLength);
        }
        if !passes_luhn(&digits) {
            return Err(CardError::NumberChecksum);
        }
        Ok(CardNumber(digits))
    }

    /// The only part of the number the sandbox stores.
    pub fn last4(&self) -> &str {
        // At least 12 ASCII digits, so the slice is in bounds and on a character boundary.
        &self.0[self.0.len() - 4..]
    }
}

/// A card's expiry month. The card is valid through the end of that month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Expiry {
    pub year: i64,
    pub month: u32,
}

impl Expiry {
    /// `MM/YY` (spaces around the parts allowed; a one-digit month too).
    pub fn parse(input: &str) -> Result<Expiry, CardError> {
        let (month, year) = input.trim().split_once('/').ok_or(CardError::ExpiryFormat)?;
        let (month, year) = (month.trim(), year.trim());
        let digits = |text: &str, lengths: std::ops::RangeInclusive<usize>| lengths.contains(&text.len()) && text.chars().all(|c| c.is_ascii_digit());
        if !digits(month, 1..=2) || !digits(year, 2..=2) {
            return Err(CardError::ExpiryFormat);
        }
        let month: u32 = month.parse().map_err(|_| CardError::ExpiryFormat)?;
        let year: i64 = year.parse().map_err(|_| CardError::ExpiryFormat)?;
        if !(1..=12).contains(&month) {
            return Err(CardError::ExpiryFormat);
        }
        Ok(Expiry { year: 2000 + year, month })
    }

    /// Whether the card has expired by `today`'s month.
    pub fn is_past(self, today: Expiry) -> bool {
        self < today
    }
}

/// The calendar month (UTC) of a unix time in milliseconds, as an [`Expiry`] to compare with.
pub fn month_of(unix_ms: i64) -> Expiry {
    // Days since 1970-01-01 mapped to the proleptic Gregorian calendar, counting eras of 400 years
    // (146,097 days) from 0000-03-01 so the leap day falls at the end of each computed year.
    let days = unix_ms.div_euclid(86_400_000) + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // 0 = March … 11 = February
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = era * 400 + year_of_era + i64::from(month <= 2);
    Expiry { year, month: month as u32 }
}

/// A card security code: 3 or 4 digits.
fn check_cvc(input: &str) -> Result<(), CardError> {
    let cvc = input.trim();
    if (3..=4).contains(&cvc.len()) && cvc.chars().all(|c| c.is_ascii_digit()) {
        Ok(())
    } else {
        Err(CardError::Cvc)
    }
}

/// Checks the whole form at `now_ms` and returns the card number (the expiry and CVC are not kept).
pub fn parse_card(number: &str, expiry: &str, cvc: &str, now_ms: i64) -> Result<CardNumber, CardError> {
    let number = CardNumber::parse(number)?;
    if Expiry::parse(expiry)?.is_past(month_of(now_ms)) {
        return Err(CardError::Expired);
    }
    check_cvc(cvc)?;
    Ok(number)
}

/// What a sandbox test card does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestCard {
    Succeeds,
    Declined,
    NeedsConfirmation,
}

impl TestCard {
    /// Every test card with its number as shown to shoppers and what it does, in words.
    pub const ALL: [(TestCard, &'static str, &'static str); 3] = [
        (TestCard::Succeeds, test_cards::SUCCEEDS, "always succeeds"),
        (TestCard::Declined, test_cards::DECLINED, "always declined"),
        (TestCard::NeedsConfirmation, test_cards::NEEDS_CONFIRMATION, "asks you to confirm with your bank"),
    ];

    /// The test card with this number; `None` for any other (valid) number.
    pub fn of(number: &CardNumber) -> Option<TestCard> {
        TestCard::ALL.into_iter().find(|(_, shown, _)| normalise_number(shown) == number.0).map(|(card, _, _)| card)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_normalised_and_luhn_checked() {
        assert_eq!(normalise_number("4242 4242-4242 4242"), "4242424242424242");
        assert!(passes_luhn("4242424242424242"));
        assert!(passes_luhn("79927398713"));
        assert!(!passes_luhn("4242424242424241"));
        assert!(!passes_luhn(""));
        assert!(!passes_luhn("42x2"));
        let number = CardNumber::parse(" 4242-4242-4242-4242 ").unwrap();
        assert_eq!(number.last4(), "4242");
        assert_eq!(CardNumber::parse("4242 4242 4242 4241"), Err(CardError::NumberChecksum));
        for bad in ["", "42", "4242 4242 4242 424a", "12345678901234567890", "４２４２４２４２４２４２４２４２"] {
            assert_eq!(CardNumber::parse(bad), Err(CardError::NumberLength), "{bad:?}");
        }
    }

    #[test]
    fn every_test_card_is_a_valid_number_with_its_behaviour() {
        for (card, shown, _) in TestCard::ALL {
            let number = CardNumber::parse(shown).unwrap_or_else(|error| panic!("{shown}: {error}"));
            assert_eq!(TestCard::of(&number), Some(card));
        }
        // A valid number that is no test card.
        assert_eq!(TestCard::of(&CardNumber::parse("5555 5555 5555 4444").unwrap()), None);
    }

    #[test]
    fn expiry_dates_are_month_and_two_digit_year() {
        assert_eq!(Expiry::parse("12/30"), Ok(Expiry { year: 2030, month: 12 }));
        assert_eq!(Expiry::parse(" 1 / 27 "), Ok(Expiry { year: 2027, month: 1 }));
        for bad in ["", "12", "13/30", "00/30", "12/2030", "1230", "ab/cd", "-1/30", "+1/30", "12/3"] {
            assert_eq!(Expiry::parse(bad), Err(CardError::ExpiryFormat), "{bad:?}");
        }
        let today = Expiry { year: 2026, month: 5 };
        assert!(!Expiry { year: 2026, month: 5 }.is_past(today), "valid through the end of its month");
        assert!(Expiry { year: 2026, month: 4 }.is_past(today));
        assert!(Expiry { year: 2025, month: 12 }.is_past(today));
        assert!(!Expiry { year: 2027, month: 1 }.is_past(today));
    }

    #[test]
    fn unix_times_map_to_their_utc_month() {
        const DAY: i64 = 86_400_000;
        assert_eq!(month_of(0), Expiry { year: 1970, month: 1 });
        assert_eq!(month_of(10_957 * DAY), Expiry { year: 2000, month: 1 });
        assert_eq!(month_of(19_782 * DAY), Expiry { year: 2024, month: 2 }, "2024-02-29");
        assert_eq!(month_of(19_783 * DAY), Expiry { year: 2024, month: 3 }, "2024-03-01");
        assert_eq!(month_of(20_454 * DAY - 1), Expiry { year: 2025, month: 12 }, "last millisecond of 2025");
        assert_eq!(month_of(20_454 * DAY), Expiry { year: 2026, month: 1 });
        assert_eq!(month_of(-1), Expiry { year: 1969, month: 12 });
    }

    #[test]
    fn the_whole_form_is_checked_in_order() {
        let may_2026 = 20_574 * 86_400_000; // 2026-05-01
        assert!(parse_card("4242 4242 4242 4242", "05/26", "123", may_2026).is_ok());
        assert!(parse_card("4242 4242 4242 4242", "12/99", "1234", may_2026).is_ok());
        assert_eq!(parse_card("4242 4242 4242 4242", "04/26", "123", may_2026), Err(CardError::Expired));
        assert_eq!(parse_card("4242 4242 4242 4242", "05/26", "12", may_2026), Err(CardError::Cvc));
        assert_eq!(parse_card("4242 4242 4242 4242", "05/26", "12345", may_2026), Err(CardError::Cvc));
        assert_eq!(parse_card("4242", "05/26", "123", may_2026), Err(CardError::NumberLength));
        assert_eq!(parse_card("4242 4242 4242 4242", "5-26", "123", may_2026), Err(CardError::ExpiryFormat));
    }
}

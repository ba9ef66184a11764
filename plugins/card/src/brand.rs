//! Card networks from the issuer identification number, and the Luhn checksum.

/// A card network the plugin accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Brand {
    /// 4
    Visa,
    /// 51-55, 2221-2720
    Mastercard,
    /// 34, 37
    Amex,
    /// 6011, 644-649, 65
    Discover,
}

impl Brand {
    /// The network of a card number (digits only), from its leading digits.
    pub fn from_pan(digits: &str) -> Option<Brand> {
        let prefix = |n: usize| digits.get(..n).and_then(|p| p.parse::<u32>().ok());
        match (prefix(1)?, prefix(2)?, prefix(3)?, prefix(4)?) {
            (4, _, _, _) => Some(Brand::Visa),
            (_, 51..=55, _, _) | (_, _, _, 2221..=2720) => Some(Brand::Mastercard),
            (_, 34 | 37, _, _) => Some(Brand::Amex),
            (_, 65, _, _) | (_, _, 644..=649, _) | (_, _, _, 6011) => Some(Brand::Discover),
            _ => None,
        }
    }

    /// The network named by a token's `brand` detail.
    pub fn from_name(name: &str) -> Option<Brand> {
        match name.to_ascii_lowercase().as_str() {
            "visa" => Some(Brand::Visa),
            "mastercard" => Some(Brand::Mastercard),
            "amex" => Some(Brand::Amex),
            "discover" => Some(Brand::Discover),
            _ => None,
        }
    }
}

/// The Luhn (mod 10) checksum over a string of ASCII digits. Anything else is invalid.
pub fn luhn_valid(digits: &str) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum = 0_u32;
    for (index, c) in digits.bytes().rev().enumerate() {
        if !c.is_ascii_digit() {
            return false;
        }
        let mut digit = u32::from(c - b'0');
        if index % 2 == 1 {
            digit *= 2;
            if digit > 9 {
                digit -= 9;
            }
        }
        sum += digit;
    }
    sum.is_multiple_of(10)
}

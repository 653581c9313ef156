//! Kubernetes resource quantities ("500m", "64Mi", "1.5G", "129e6"), parsed exactly — no
//! floating point — with the apiserver's grammar and error messages, and printed in the
//! apiserver's canonical form. The one quantity parser of the code base: the node, the runtime,
//! the config and the apiserver's admission all use it.
//!
//! quantity ::= sign? number suffix ; number ::= digits | digits "." digits? | "." digits
//! suffix ::= "" | binary (Ki Mi Gi Ti Pi Ei) | decimal (n u m k M G T P E) | ("e"|"E") sign? digits

/// The value in billionths of a unit (exact for every suffix down to "n").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Quantity {
    nanos: i128,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    Format,
    #[error("unable to parse quantity's suffix")]
    Suffix,
    #[error("quantity is too large")]
    TooLarge,
}

const NANO: i128 = 1_000_000_000;

fn pow10(e: u32) -> Option<i128> {
    10i128.checked_pow(e)
}

impl Quantity {
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        let b = s.as_bytes();
        let mut i = 0;
        let negative = match b.first() {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let mut digits: i128 = 0;
        let mut scale: u32 = 0;
        let mut seen_digit = false;
        let mut seen_point = false;
        while i < b.len() {
            match b[i] {
                c @ b'0'..=b'9' => {
                    seen_digit = true;
                    // Digits beyond what i128 holds only matter as overflow.
                    digits = digits.checked_mul(10).and_then(|d| d.checked_add((c - b'0') as i128)).ok_or(QuantityError::TooLarge)?;
                    if seen_point {
                        scale += 1;
                    }
                }
                b'.' if !seen_point => seen_point = true,
                _ => break,
            }
            i += 1;
        }
        if !seen_digit {
            return Err(QuantityError::Format);
        }
        let suffix = &s[i..];
        // The suffix must at least look like one (the apiserver's regular expression).
        let (letters, rest) = suffix.split_at(suffix.find(|c: char| !"eEinumkKMGTP".contains(c)).unwrap_or(suffix.len()));
        let rest_ok = {
            let r = rest.strip_prefix(['+', '-']).unwrap_or(rest);
            r.bytes().all(|c| c.is_ascii_digit())
        };
        if !rest_ok {
            return Err(QuantityError::Format);
        }
        // value = digits / 10^scale * multiplier, where multiplier = 2^pow2 * 10^pow10
        let (pow2, pow10_exp): (u32, i64) = match (letters, rest) {
            ("", "") => (0, 0),
            ("Ki", "") => (10, 0),
            ("Mi", "") => (20, 0),
            ("Gi", "") => (30, 0),
            ("Ti", "") => (40, 0),
            ("Pi", "") => (50, 0),
            ("Ei", "") => (60, 0),
            ("n", "") => (0, -9),
            ("u", "") => (0, -6),
            ("m", "") => (0, -3),
            ("k", "") => (0, 3),
            ("M", "") => (0, 6),
            ("G", "") => (0, 9),
            ("T", "") => (0, 12),
            ("P", "") => (0, 15),
            ("E", "") => (0, 18),
            ("e" | "E", exp) if !exp.is_empty() => (0, exp.parse::<i64>().map_err(|_| QuantityError::Suffix)?),
            _ => return Err(QuantityError::Suffix),
        };
        // nanos = digits * 2^pow2 * 10^(pow10 + 9 - scale), rounded up when it is a fraction.
        let mut v = digits.checked_mul(1i128 << pow2).ok_or(QuantityError::TooLarge)?;
        let exp = pow10_exp + 9 - scale as i64;
        if exp >= 0 {
            v = v.checked_mul(pow10(exp as u32).ok_or(QuantityError::TooLarge)?).ok_or(QuantityError::TooLarge)?;
        } else {
            let div = pow10((-exp) as u32).unwrap_or(i128::MAX);
            v = v / div + i128::from(v % div != 0);
        }
        Ok(Quantity { nanos: if negative { -v } else { v } })
    }

    /// Whole units, rounded up (the apiserver's Value()): bytes for memory.
    pub fn value(&self) -> i64 {
        clamp(ceil_div(self.nanos, NANO))
    }

    /// Thousandths of a unit, rounded up (MilliValue()): millicores for CPU.
    pub fn milli_value(&self) -> i64 {
        clamp(ceil_div(self.nanos, 1_000_000))
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// The quantity of `n` whole units.
    pub fn from_units(n: i64) -> Quantity {
        Quantity { nanos: i128::from(n) * NANO }
    }

    /// The quantity of `n` thousandths of a unit.
    pub fn from_millis(n: i64) -> Quantity {
        Quantity { nanos: i128::from(n) * 1_000_000 }
    }

    /// The quantity of `n` billionths of a unit (nano-cores of CPU).
    pub fn from_nanos(n: i128) -> Quantity {
        Quantity { nanos: n }
    }

    /// The value in billionths of a unit.
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// The canonical form upstream prints (`Quantity.String()`): the largest suffix of the
    /// format that keeps the number whole, binary (`Ki`..`Ei`) for binary-format values that
    /// are whole multiples of 1024, decimal (`n`, `u`, `m`, ``, `k`, `M`, `G`, `T`, `P`, `E`) else.
    pub fn canonical(&self, format: Format) -> String {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let n = self.nanos.unsigned_abs();
        if n == 0 {
            return "0".into();
        }
        let nano = NANO as u128;
        if format == Format::BinarySi && n.is_multiple_of(nano) {
            let mut units = n / nano;
            if units >= 1024 && units.is_multiple_of(1024) {
                let mut i = 0;
                const BIN: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
                while units.is_multiple_of(1024) && units >= 1024 && i < BIN.len() {
                    units /= 1024;
                    i += 1;
                }
                return format!("{sign}{units}{}", BIN[i - 1]);
            }
        }
        // decimal: exponent of 10 in steps of 3, from nano (-9) up
        const DEC: [&str; 10] = ["n", "u", "m", "", "k", "M", "G", "T", "P", "E"];
        let mut v = n;
        let mut i = 0;
        while i + 1 < DEC.len() && v.is_multiple_of(1000) {
            v /= 1000;
            i += 1;
        }
        format!("{sign}{v}{}", DEC[i])
    }

    /// The format of a written quantity (upstream keeps the format it was parsed in).
    pub fn format_of(s: &str) -> Format {
        if s.ends_with('i') {
            Format::BinarySi
        } else if s.contains(['e', 'E']) && !s.ends_with('E') {
            Format::DecimalExponent
        } else {
            Format::DecimalSi
        }
    }
}

impl std::ops::Add for Quantity {
    type Output = Quantity;
    /// The sum (saturating).
    fn add(self, other: Quantity) -> Quantity {
        Quantity { nanos: self.nanos.saturating_add(other.nanos) }
    }
}

impl std::ops::Sub for Quantity {
    type Output = Quantity;
    /// The difference (saturating).
    fn sub(self, other: Quantity) -> Quantity {
        Quantity { nanos: self.nanos.saturating_sub(other.nanos) }
    }
}

/// How a quantity is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    DecimalSi,
    BinarySi,
    DecimalExponent,
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Quantity, QuantityError> {
        Quantity::parse(s)
    }
}

fn ceil_div(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b > 0 {
        q + 1
    } else {
        q
    }
}

fn clamp(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_exactly() {
        assert_eq!(q("500m").milli_value(), 500);
        assert_eq!(q("2").milli_value(), 2000);
        assert_eq!(q("0.1").milli_value(), 100);
        assert_eq!(q("0.0001").milli_value(), 1, "rounded up");
        assert_eq!(q("64Mi").value(), 64 << 20);
        assert_eq!(q("1G").value(), 1_000_000_000);
        assert_eq!(q("129e6").value(), 129_000_000);
        assert_eq!(q("1.5Gi").value(), 3 << 29);
        assert_eq!(q("12345").value(), 12345);
        assert_eq!(q("100n").milli_value(), 1);
        assert_eq!(q("+1k").value(), 1000);
        assert_eq!(q(".5").milli_value(), 500);
        assert_eq!(q("5.").value(), 5);
        assert_eq!(q("1E").value(), 1_000_000_000_000_000_000);
        assert_eq!(q("2E3").value(), 2000);
        assert_eq!(q("1e-3").milli_value(), 1);
        assert!(q("-1").is_negative() && q("0").is_zero() && q("0Mi").is_zero());
        assert_eq!(q("1Gi"), q("1073741824"), "equal values compare equal whatever their spelling");
        assert!(q("1Gi") > q("1G"));
    }

    #[test]
    fn prints_the_canonical_form() {
        assert_eq!(q("500m").canonical(Format::DecimalSi), "500m");
        assert_eq!(q("1000m").canonical(Format::DecimalSi), "1");
        assert_eq!(q("1.5").canonical(Format::DecimalSi), "1500m");
        assert_eq!(q("2000").canonical(Format::DecimalSi), "2k");
        assert_eq!(q("128Mi").canonical(Format::BinarySi), "128Mi");
        assert_eq!(q("1536Mi").canonical(Format::BinarySi), "1536Mi");
        assert_eq!(q("1000").canonical(Format::BinarySi), "1k");
        assert_eq!(q("0").canonical(Format::BinarySi), "0");
        assert_eq!((q("2") + q("500m")).canonical(Format::DecimalSi), "2500m");
        assert_eq!(Quantity::format_of("64Mi"), Format::BinarySi);
    }

    #[test]
    fn refuses_what_the_apiserver_refuses() {
        for bad in ["512MB", "", "Mi", "1 Gi", "1.2.3", "lots", "--1", "0x10"] {
            assert_eq!(Quantity::parse(bad), Err(QuantityError::Format), "{bad:?}");
        }
        for bad in ["5Mk", "1ki", "1Kk", "2mi", "1Gi1"] {
            assert_eq!(Quantity::parse(bad), Err(QuantityError::Suffix), "{bad:?}");
        }
        assert_eq!(Quantity::parse("1e40"), Err(QuantityError::TooLarge));
        assert!(QuantityError::Format.to_string().starts_with("quantities must match the regular expression"));
    }
}

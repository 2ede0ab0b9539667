//! Syntax of Kubernetes resource quantities (`500m`, `64Gi`, `1e3`), checked
//! before anything is stored so a bad value is a 422 naming the field.

/// Whether `text` is a valid quantity: a signed decimal number followed by
/// an optional binary suffix (Ki..Ei), decimal suffix (n, u, m, k, M..E) or
/// decimal exponent (e3, E-2).
pub fn is_valid(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let split = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(split);
    let digits = number.chars().filter(char::is_ascii_digit).count();
    let dots = number.matches('.').count();
    if digits == 0 || dots > 1 {
        return false;
    }
    const SUFFIXES: &[&str] = &[
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E",
    ];
    if SUFFIXES.contains(&suffix) {
        return true;
    }
    match suffix.strip_prefix(['e', 'E']) {
        Some(exponent) => {
            let exponent = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            !exponent.is_empty() && exponent.chars().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

/// Whether the quantity is negative (quota limits must not be).
pub fn is_negative(text: &str) -> bool {
    text.starts_with('-') && text.chars().any(|c| matches!(c, '1'..='9'))
}

/// Thousandths of a quantity (`250m` is 250, `1Ki` is 1,024,000), rounded
/// up as quota rounds; `None` when the text is not a quantity or the value
/// does not fit.
pub fn to_milli(text: &str) -> Option<i128> {
    if !is_valid(text) {
        return None;
    }
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let split = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(split);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 30 {
        return None;
    }
    let mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let (binary_power, decimal_exponent): (u32, i32) = match suffix {
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "" => (0, 0),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        exponent => (0, exponent[1..].parse().ok()?),
    };
    let scaled = mantissa.checked_mul(1i128.checked_shl(binary_power)?)?;
    // value = scaled * 10^(exponent + 3 - fraction digits), in thousandths
    let shift = i64::from(decimal_exponent) + 3 - fraction.len() as i64;
    let milli = if shift >= 0 {
        scaled.checked_mul(10i128.checked_pow(u32::try_from(shift).ok()?)?)?
    } else {
        match 10i128.checked_pow(u32::try_from(-shift).ok()?) {
            Some(divisor) => (scaled + divisor - 1) / divisor,
            None => i128::from(scaled > 0),
        }
    };
    Some(if negative { -milli } else { milli })
}

/// A quantity from thousandths, in the plainest form (`2`, `250m`).
pub fn from_milli(milli: i128) -> String {
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_kubernetes_accepts() {
        for ok in [
            "1", "0", "500m", "64Gi", "1.5", ".5", "2k", "1e3", "1E-2", "+3", "10Ei", "100n",
        ] {
            assert!(is_valid(ok), "{ok}");
        }
    }

    #[test]
    fn rejects_the_rest() {
        for bad in [
            "", "Gi", "1.2.3", "1GB", "one", "1 Gi", "1e", "1e+", "1ki", "--1", "1.5.Gi",
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
        assert!(is_negative("-1"));
        assert!(!is_negative("-0"));
        assert!(!is_negative("5"));
    }

    #[test]
    fn reads_thousandths_rounding_up() {
        for (text, milli) in [
            ("1", 1000),
            ("250m", 250),
            ("1.5", 1500),
            ("0.0001", 1),
            ("1Ki", 1_024_000),
            ("64Gi", 64 * (1i128 << 30) * 1000),
            ("2k", 2_000_000),
            ("1e3", 1_000_000),
            ("100n", 1),
            ("0", 0),
            ("-2", -2000),
        ] {
            assert_eq!(to_milli(text), Some(milli), "{text}");
        }
        assert_eq!(to_milli("1GB"), None);
        assert_eq!(from_milli(2000), "2");
        assert_eq!(from_milli(250), "250m");
    }
}

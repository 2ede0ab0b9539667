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
}

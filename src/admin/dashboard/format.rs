//! Numbers and times as the dashboard shows them.

use chrono::{DateTime, Utc};

/// `1,234,567`.
pub fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('−');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `$1,234.56`, `−$3.20`; amounts under a cent are not shown as zero.
pub fn usd(x: f64) -> String {
    let sign = if x < 0.0 { "−" } else { "" };
    let abs = x.abs();
    if abs > 0.0 && abs < 0.005 {
        return format!("{sign}<$0.01");
    }
    let cents = (abs * 100.0).round() as i64;
    format!("{sign}${}.{:02}", count(cents / 100), cents % 100)
}

pub fn percent(x: f64) -> String {
    let sign = if x < 0.0 { "−" } else { "" };
    let abs = x.abs();
    if abs != 0.0 && abs < 0.1 { format!("{sign}{abs:.2}%") } else { format!("{sign}{abs:.1}%") }
}

/// A duration in microseconds, in the unit that reads best.
pub fn micros(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.1} ms", us / 1_000.0)
    } else {
        format!("{:.2} s", us / 1_000_000.0)
    }
}

pub fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_numbers() {
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(-12), "−12");
        assert_eq!(count(999), "999");
        assert_eq!(usd(1234.5), "$1,234.50");
        assert_eq!(usd(-3.2), "−$3.20");
        assert_eq!(usd(0.0004), "<$0.01");
        assert_eq!(usd(0.0), "$0.00");
        assert_eq!(percent(-829.5), "−829.5%");
        assert_eq!(percent(0.05), "0.05%");
        assert_eq!(micros(850.0), "850 µs");
        assert_eq!(micros(12_345.0), "12.3 ms");
        assert_eq!(micros(1_250_000.0), "1.25 s");
    }
}

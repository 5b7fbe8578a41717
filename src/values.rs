//! Parsers for the values of flags and of the API server's `?timeout=`: Go
//! durations, periods, byte sizes. A leaf: it imports nothing of this
//! crate, so the CLI, the server and the TLS set-up all use it without
//! pointing at each other.

use std::time::Duration;

/// `10s`, `1m30s`, `500ms`, `1.5s`: a Go duration, read by kube's parser.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    // That parser reads "" as 0s, and panics on a negative part (`1s-2s`) or
    // on a sum too large for a Duration: numbers of at most nine digits
    // cannot get there in the few thousand parts an argument or a request
    // line can hold.
    let unsigned = s
        .chars()
        .all(|c| c.is_ascii_digit() || c == '.' || c.is_alphabetic());
    let small = s.split(|c: char| !c.is_ascii_digit()).all(|n| n.len() <= 9);
    if s.is_empty() || !unsigned || !small {
        return None;
    }
    let d = Duration::from(s.parse::<kube::core::Duration>().ok()?);
    (d < Duration::from_secs(1_000_000_000)).then_some(d)
}

/// A Go duration, for clap: the error says what is expected.
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    parse_go_duration(s).ok_or_else(|| format!("{s:?} is not a duration like 5s, 500ms or 1m"))
}

/// A duration above zero (a period: zero would mean "check all the time").
pub(crate) fn period(s: &str) -> Result<Duration, String> {
    duration(s).and_then(|d| {
        if d.is_zero() {
            Err(format!(
                "{s:?} is not a period above zero, like 1s or 500ms"
            ))
        } else {
            Ok(d)
        }
    })
}

/// A byte count: plain bytes, or with a Kubernetes binary suffix
/// (`Ki`, `Mi`, `Gi`), as in `16Mi`.
pub(crate) fn byte_size(s: &str) -> Result<usize, String> {
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let shift = match unit {
        "" => 0,
        "Ki" => 10,
        "Mi" => 20,
        "Gi" => 30,
        _ => return Err(format!("{s:?} is not a size like 16Mi, 512Ki or 1048576")),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{s:?} is not a positive size like 16Mi, 512Ki or 1048576"))
}

#[cfg(test)]
mod tests {
    use super::{byte_size, parse_go_duration, period};
    use std::time::Duration;

    #[test]
    fn go_durations() {
        for (s, want) in [
            ("10s", Some(10_000)),
            ("1m30s", Some(90_000)),
            ("500ms", Some(500)),
            ("1.5s", Some(1500)),
            ("", None),
            ("10", None),
            ("s", None),
            ("10x", None),
        ] {
            assert_eq!(
                parse_go_duration(s).map(|d| d.as_millis() as u64),
                want,
                "{s:?}"
            );
        }
    }

    #[test]
    fn go_durations_kube_would_panic_on_are_refused() {
        for s in ["1s-2s", "-5s", "+5s", "9999999999h", "1s 2s"] {
            assert_eq!(parse_go_duration(s), None, "{s:?}");
        }
        assert_eq!(
            parse_go_duration("999999999ms"),
            Some(Duration::from_millis(999_999_999))
        );
        assert_eq!(parse_go_duration("1.5µs"), Some(Duration::from_nanos(1500)));
        assert_eq!(
            parse_go_duration("0"),
            Some(Duration::ZERO),
            "as Go reads it"
        );
        assert_eq!(parse_go_duration("277778h"), None, "over 1e9 s");
    }

    #[test]
    fn periods_are_above_zero() {
        assert_eq!(period("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(period("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["0", "0s", "0ms", "", "1x"] {
            assert!(period(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(byte_size("16Mi"), Ok(16 << 20));
        assert_eq!(byte_size("512Ki"), Ok(512 << 10));
        assert_eq!(byte_size("1Gi"), Ok(1 << 30));
        assert_eq!(byte_size("1048576"), Ok(1 << 20));
        for bad in [
            "",
            "0",
            "0Mi",
            "16M",
            "16MB",
            "Mi",
            "-1",
            "1.5Mi",
            "99999999999999999999Gi",
            "17179869184Gi",
        ] {
            assert!(byte_size(bad).is_err(), "{bad:?}");
        }
    }
}

//! Kubernetes resource quantities (`100m`, `64Mi`, `1.5`, `2e3`), read far enough to check
//! an annotation before the API server rejects the pod with a message about a container the
//! user never wrote, and to compare a request with a limit.

/// A quantity's value in base units (cores, bytes). Negative quantities are refused: none of
/// the sidecar's resources can be negative.
pub fn parse(s: &str) -> Result<f64, String> {
    let bad = || format!("{s:?} is not a Kubernetes quantity (e.g. 100m, 0.5, 64Mi, 1G)");
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    let number = number.strip_prefix('+').unwrap_or(number);
    let digits_ok = !number.is_empty()
        && number.chars().filter(|c| *c == '.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit())
        && number.chars().all(|c| c.is_ascii_digit() || c == '.');
    if !digits_ok {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let multiplier = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0_f64.powi(2),
        "Gi" => 1024.0_f64.powi(3),
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        "Ei" => 1024.0_f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => {
            let e: i32 = exp[1..].parse().map_err(|_| bad())?;
            if !(-30..=30).contains(&e) {
                return Err(bad());
            }
            10f64.powi(e)
        }
        _ => return Err(bad()),
    };
    Ok(value * multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_suffixes_kubernetes_accepts() {
        let cases = [
            ("100m", 0.1),
            ("1", 1.0),
            ("1.5", 1.5),
            (".5", 0.5),
            ("+2", 2.0),
            ("64Mi", 64.0 * 1024.0 * 1024.0),
            ("1G", 1e9),
            ("2e3", 2000.0),
            ("1Ki", 1024.0),
        ];
        for (s, want) in cases {
            let got = parse(s).unwrap();
            assert!(
                (got - want).abs() < 1e-9 * want.max(1.0),
                "{s}: {got} != {want}"
            );
        }
    }

    #[test]
    fn refuses_what_the_api_server_would() {
        for s in [
            "", "m", "1.2.3", "-1", "10 Mi", "10MB", "1e", "abc", "1ki", ".", "1e99",
        ] {
            assert!(parse(s).is_err(), "{s:?} accepted");
        }
        assert!(parse("64MB").unwrap_err().contains("64MB"));
    }
}

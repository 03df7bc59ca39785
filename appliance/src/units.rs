//! Parsing of the sizes and percentages users type, shared by the command line and the
//! daemon's config.

/// Parses sizes like `4096`, `512K`, `2G`, `1.5T` (binary units).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let upper = trimmed.to_ascii_uppercase();
    let number_part = upper.trim_end_matches(['B', 'I']);
    let (digits, multiplier) = match number_part.chars().last() {
        Some('K') => (&number_part[..number_part.len() - 1], 1u64 << 10),
        Some('M') => (&number_part[..number_part.len() - 1], 1 << 20),
        Some('G') => (&number_part[..number_part.len() - 1], 1 << 30),
        Some('T') => (&number_part[..number_part.len() - 1], 1 << 40),
        _ => (number_part, 1),
    };
    let value: f64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a size (examples: 4096, 512M, 2G)"))?;
    if !value.is_finite() || value <= 0.0 {
        return Err(format!("'{text}' is not a positive size"));
    }
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let bytes = (value * multiplier as f64) as u64;
    Ok(bytes)
}

/// `LOW:HIGH` in percent, as fractions; `0 <= LOW <= HIGH <= 100`.
pub fn parse_watermarks(text: &str) -> Result<(f64, f64), String> {
    let (low, high) = text
        .split_once(':')
        .ok_or_else(|| format!("'{text}' is not LOW:HIGH (e.g. 70:85)"))?;
    let percent = |part: &str| -> Result<f64, String> {
        part.trim()
            .parse::<f64>()
            .ok()
            .filter(|p| (0.0..=100.0).contains(p))
            .map(|p| p / 100.0)
            .ok_or_else(|| format!("'{part}' is not a percentage from 0 to 100"))
    };
    let (low, high) = (percent(low)?, percent(high)?);
    if low > high {
        return Err(format!(
            "the low watermark ({}) is above the high one ({})",
            low * 100.0,
            high * 100.0
        ));
    }
    Ok((low, high))
}

//! Parsers for the two answers that are not JSON: the live statistics stream (server-sent
//! events, `GET /v1/stats/stream`) and the Prometheus text of `GET /metrics`, from which the
//! console takes the per-tier latency histograms' sums and counts. Pure, fed line by line.

use appliance::api::IoSecond;

use crate::state::LatencyTotals;

/// Reads server-sent events one line at a time and yields each `io` event's second.
#[derive(Debug, Default)]
pub struct SseReader {
    event: String,
    data: String,
}

impl SseReader {
    /// Feeds one line (its line ending may be left on). Returns the event a blank line
    /// completes: the second, or why its data did not parse.
    pub fn line(&mut self, line: &str) -> Option<Result<IoSecond, String>> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            if data.is_empty() || !(event.is_empty() || event == "io") {
                return None;
            }
            return Some(serde_json::from_str(&data).map_err(|e| e.to_string()));
        }
        if let Some(value) = line.strip_prefix("event:") {
            value.trim_start().clone_into(&mut self.event);
        } else if let Some(value) = line.strip_prefix("data:") {
            if !self.data.is_empty() {
                self.data.push('\n');
            }
            self.data.push_str(value.strip_prefix(' ').unwrap_or(value));
        }
        None
    }
}

/// The latency histograms' `_sum` and `_count` per pool and tier, from `/metrics` text.
pub fn latency_totals(metrics: &str) -> Vec<LatencyTotals> {
    let mut totals: Vec<LatencyTotals> = Vec::new();
    for line in metrics.lines() {
        let Some((name_labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some((name, labels)) = name_labels.split_once('{') else {
            continue;
        };
        let field = match name {
            "aegis_tier_read_latency_seconds_sum" => Field::ReadSeconds,
            "aegis_tier_read_latency_seconds_count" => Field::Reads,
            "aegis_tier_write_latency_seconds_sum" => Field::WriteSeconds,
            "aegis_tier_write_latency_seconds_count" => Field::Writes,
            _ => continue,
        };
        let labels = labels.trim_end_matches('}');
        let (Some(pool), Some(tier)) = (label(labels, "pool"), label(labels, "tier")) else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let index = match totals.iter().position(|t| t.pool == pool && t.tier == tier) {
            Some(index) => index,
            None => {
                totals.push(LatencyTotals {
                    pool,
                    tier,
                    ..LatencyTotals::default()
                });
                totals.len() - 1
            }
        };
        let entry = &mut totals[index];
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        match field {
            Field::ReadSeconds => entry.read_seconds = value,
            Field::Reads => entry.reads = value as u64,
            Field::WriteSeconds => entry.write_seconds = value,
            Field::Writes => entry.writes = value as u64,
        }
    }
    totals
}

enum Field {
    ReadSeconds,
    Reads,
    WriteSeconds,
    Writes,
}

/// The value of `name="…"` in a Prometheus label set (escapes undone).
fn label(labels: &str, name: &str) -> Option<String> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let mut value = String::new();
    let mut chars = labels[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            other => value.push(other),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_yields_each_io_event() {
        let stream = "retry: 1000\n\nevent: io\ndata: {\"time\":5,\"pools\":[{\"pool\":\"tank\",\"tiers\":[{\"tier\":\"fast\",\"read_bytes\":0,\"write_bytes\":41943040,\"read_ops\":0,\"write_ops\":320}]}]}\n\nevent: io\r\ndata: {\"time\":6,\"pools\":[]}\r\n\r\n";
        let mut reader = SseReader::default();
        let seconds: Vec<IoSecond> = stream
            .split_inclusive('\n')
            .filter_map(|line| reader.line(line))
            .collect::<Result<_, _>>()
            .expect("events parse");
        assert_eq!(seconds.len(), 2);
        assert_eq!(seconds[0].time, 5);
        assert_eq!(seconds[0].pools[0].tiers[0].write_bytes, 41_943_040);
        assert_eq!(seconds[1].time, 6);
    }

    #[test]
    fn sse_reports_bad_data_and_skips_other_events() {
        let mut reader = SseReader::default();
        assert!(reader.line("event: other").is_none());
        assert!(reader.line("data: {}").is_none());
        assert!(reader.line("").is_none());
        assert!(reader.line("data: not json").is_none());
        assert!(matches!(reader.line(""), Some(Err(_))));
    }

    #[test]
    fn latency_comes_from_histogram_sums_and_counts() {
        let text = "# TYPE aegis_tier_read_latency_seconds histogram\n\
            aegis_tier_read_latency_seconds_bucket{pool=\"tank\",tier=\"fast\",le=\"0.001\"} 41\n\
            aegis_tier_read_latency_seconds_sum{pool=\"tank\",tier=\"fast\"} 0.066482\n\
            aegis_tier_read_latency_seconds_count{pool=\"tank\",tier=\"fast\"} 53\n\
            aegis_tier_write_latency_seconds_sum{pool=\"tank\",tier=\"fast\"} 16.78496\n\
            aegis_tier_write_latency_seconds_count{pool=\"tank\",tier=\"fast\"} 320\n\
            aegis_tier_read_latency_seconds_count{pool=\"t\\\"q\",tier=\"slow\"} 2\n";
        let totals = latency_totals(text);
        assert_eq!(totals.len(), 2);
        assert_eq!(totals[0].pool, "tank");
        assert_eq!(totals[0].reads, 53);
        assert!((totals[0].read_seconds - 0.066_482).abs() < 1e-9);
        assert_eq!(totals[0].writes, 320);
        assert_eq!(totals[1].pool, "t\"q");
        assert_eq!(totals[1].tier, "slow");
    }
}

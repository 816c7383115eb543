//! A small parser for the Prometheus text exposition format (the subset exporters emit:
//! `# HELP`/`# TYPE` comments and `name{label="value",...} value [timestamp]` samples).
//! Malformed lines are skipped, never fatal: a bot's output must not crash the operator.

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Parse every well-formed sample of an exposition.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if rest.starts_with('{') {
        let (parsed, after) = parse_labels(&rest[1..])?;
        labels = parsed;
        rest = after;
    }
    let value_text = rest.split_whitespace().next()?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        text => text.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parse `key="value",...}`; returns the labels and the text after the closing brace.
fn parse_labels(mut text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start_matches([' ', ',']);
        if let Some(after) = text.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = text.find('=')?;
        let key = text[..eq].trim().to_string();
        let mut chars = text[eq + 1..].trim_start().char_indices();
        let (_, '"') = chars.next()? else { return None };
        let start = text.len() - text[eq + 1..].trim_start().len();
        let mut value = String::new();
        let mut escaped = false;
        let mut end = None;
        for (i, c) in chars {
            match (escaped, c) {
                (true, 'n') => {
                    value.push('\n');
                    escaped = false;
                }
                (true, c) => {
                    value.push(c);
                    escaped = false;
                }
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(start + i + 1);
                    break;
                }
                (false, c) => value.push(c),
            }
        }
        labels.push((key, value));
        text = &text[end?..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples_labels_and_special_values() {
        let text = "# HELP x help\n# TYPE x gauge\nx 1.5\ny{a=\"1\",b=\"two words\"} 2 1700000000\nz{q=\"a\\\"b\"} NaN\nw +Inf\n";
        let samples = parse(text);
        assert_eq!(samples.len(), 4);
        assert_eq!(
            samples[0],
            Sample {
                name: "x".into(),
                labels: vec![],
                value: 1.5
            }
        );
        assert_eq!(samples[1].label("b"), Some("two words"));
        assert_eq!(samples[2].label("q"), Some("a\"b"));
        assert!(samples[2].value.is_nan());
        assert_eq!(samples[3].value, f64::INFINITY);
    }

    #[test]
    fn garbage_is_skipped_not_fatal() {
        let samples = parse("not a metric line at all\n{}\nx{a=\"unterminated 1\nok 3\n\u{0}\u{1} 2\n");
        assert_eq!(
            samples,
            vec![Sample {
                name: "ok".into(),
                labels: vec![],
                value: 3.0
            }]
        );
    }
}

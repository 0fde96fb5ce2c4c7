//! The Prometheus text exposition, parsed into samples.

/// One sample line.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the text format (labels with `\\`, `\"`, `\n` escapes).
pub fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name, rest) = match line.find('{') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => {
                let (n, v) = line.split_once(' ').unwrap();
                out.push(Sample {
                    name: n.to_owned(),
                    labels: vec![],
                    value: v.trim().parse().unwrap(),
                });
                continue;
            }
        };
        let mut labels = Vec::new();
        let mut chars = rest.chars().peekable();
        loop {
            let mut key = String::new();
            for c in chars.by_ref() {
                if c == '=' {
                    break;
                }
                if c != ',' {
                    key.push(c);
                }
            }
            if key.is_empty() || key == "}" {
                break;
            }
            assert_eq!(chars.next(), Some('"'), "{line}");
            let mut value = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some(o) => value.push(o),
                        None => {}
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.push((key.trim().to_owned(), value));
            match chars.next() {
                Some(',') => {
                    if chars.peek() == Some(&'}') {
                        chars.next();
                        break;
                    }
                }
                _ => break,
            }
        }
        let value: String = chars.collect();
        out.push(Sample {
            name: name.to_owned(),
            labels,
            value: value.trim().parse().unwrap(),
        });
    }
    out
}

/// Samples of `name` whose labels include every `(label, value)` given.
pub fn find<'a>(samples: &'a [Sample], name: &str, want: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name && want.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .collect()
}

/// The value of the one sample matching; 0 when there is none.
pub fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    let found = find(samples, name, want);
    assert!(found.len() <= 1, "{name} {want:?} ambiguous: {found:?}");
    found.first().map_or(0.0, |s| s.value)
}

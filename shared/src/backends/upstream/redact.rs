//! What of an upstream's error description reaches the platform: the text without URLs, host names and IP
//! addresses (the upstream's internals are not the platform's business), printable, bounded.

/// Longest description passed on.
pub const MAX_DESCRIPTION: usize = 500;

/// `text` with every URL, host name and IP address replaced, control characters dropped, at most
/// [`MAX_DESCRIPTION`] characters. `host` (the upstream's, from its configured URL) is replaced wherever
/// it appears.
pub fn redact(text: &str, host: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_DESCRIPTION));
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&redact_word(word, host));
    }
    let cleaned: String = out
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut short: String = cleaned.chars().take(MAX_DESCRIPTION).collect();
    if cleaned.chars().count() > MAX_DESCRIPTION {
        short.push('…');
    }
    short
}

fn redact_word(word: &str, host: &str) -> String {
    // Punctuation around a word stays ("(see https://x/y)." → "(see [url]).").
    let start = word
        .find(|c: char| c.is_alphanumeric() || c == '[')
        .unwrap_or(word.len());
    let end = word
        .rfind(|c: char| c.is_alphanumeric() || c == '/' || c == ']')
        .map_or(start, |i| i + 1)
        .max(start);
    let (pre, core, post) = (&word[..start], &word[start..end], &word[end..]);
    let replaced = if core.contains("://") {
        "[url]".to_owned()
    } else if !host.is_empty() && core.contains(host) {
        core.replace(host, "[host]")
    } else if looks_like_host(core) {
        "[host]".to_owned()
    } else {
        core.to_owned()
    };
    format!("{pre}{replaced}{post}")
}

/// `a.b.example`, `db-1.internal:5432`, `10.0.0.7`, `[::1]:80`: dotted labels with a final label of letters
/// (or four numbers), optionally a port.
fn looks_like_host(s: &str) -> bool {
    if s.starts_with('[') && s.contains("]") && s.contains(':') {
        return true;
    }
    let s = s.split('/').next().unwrap_or(s);
    let name = match s.rsplit_once(':') {
        Some((n, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => s,
    };
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2
        || labels
            .iter()
            .any(|l| l.is_empty() || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    {
        return false;
    }
    let numeric = labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_digit()));
    if numeric {
        return labels.len() == 4;
    }
    let last = labels[labels.len() - 1];
    last.len() >= 2 && last.bytes().all(|b| b.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_hosts_and_addresses_are_redacted() {
        let host = "broker.internal.corp";
        assert_eq!(
            redact(
                "cannot reach https://db.internal.corp:5432/x?token=1 (see http://wiki/y).",
                host
            ),
            "cannot reach [url] (see [url])."
        );
        assert_eq!(
            redact(
                "broker.internal.corp refused: db-1.prod.example:5432 is down",
                host
            ),
            "[host] refused: [host] is down"
        );
        assert_eq!(
            redact("connect to 10.1.2.3 failed", host),
            "connect to [host] failed"
        );
        assert_eq!(redact("at [fd00::1]:80", host), "at [host]");
    }

    #[test]
    fn ordinary_text_stays() {
        let text = "plan quota exceeded: version 1.2.0 allows 3 instances, e.g. delete one.";
        assert_eq!(redact(text, "127.0.0.1"), text);
    }

    #[test]
    fn long_and_control_text_is_bounded() {
        let long = "x".repeat(2000);
        assert_eq!(redact(&long, "h").chars().count(), MAX_DESCRIPTION + 1);
        assert_eq!(redact("a\nb\u{7}c", "h"), "a b c");
    }
}

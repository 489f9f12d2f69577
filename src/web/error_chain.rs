//! Errors shown with their causes, for logs and operator-facing messages.

use std::error::Error;

/// An error and all its sources on one line. reqwest's and hyper-util's `Display` stop at
/// "error sending request" or "client error (Connect)", hiding the "connection refused" an
/// operator needs; lettre's already includes its direct source, so text already present is
/// not repeated.
pub fn error_chain(err: &(dyn Error + 'static)) -> String {
    let mut out = err.to_string();
    for cause in causes(err).skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

/// `err`, then its source, its source's source and so on.
pub fn causes<'a>(err: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(err), |&e| e.source())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Layer(&'static str, #[source] Option<Box<Layer>>);

    #[test]
    fn every_cause_is_said_once_in_order() {
        let inner = Layer("connection refused", None);
        let middle = Layer("tcp connect error", Some(Box::new(inner)));
        let outer = Layer("client error (Connect)", Some(Box::new(middle)));
        assert_eq!(causes(&outer).count(), 3);
        assert_eq!(error_chain(&outer), "client error (Connect): tcp connect error: connection refused");
        let repeated = Layer("smtp: connection refused", Some(Box::new(Layer("connection refused", None))));
        assert_eq!(error_chain(&repeated), "smtp: connection refused", "text already said is not repeated");
    }
}

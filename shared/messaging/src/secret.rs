//! Values that must never print: passwords in connection URLs, tokens.
//! Here, the lowest crate that holds such values, so that the services'
//! configuration, the messaging plumbing and the tools share one type.

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `url` with its password replaced by `***`, for `Debug` output and error
/// messages that should still say where a connection goes. A value that
/// does not parse as a URL is replaced whole: it may be all password.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        // Without `//` all after the scheme is one opaque path, which may
        // hold a password all the same.
        Ok(parsed) if parsed.cannot_be_a_base() => "<an opaque URL>".to_owned(),
        Ok(mut parsed) if parsed.password().is_some() => match parsed.set_password(Some("***")) {
            Ok(()) => parsed.to_string(),
            Err(()) => "<a URL with a password>".to_owned(),
        },
        Ok(_) => url.to_owned(),
        Err(_) => "<not a URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_does_not_print() {
        let secret = Secret::new("amqp://guest:hunter2@127.0.0.1:5672/%2f");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(secret.expose(), "amqp://guest:hunter2@127.0.0.1:5672/%2f");
    }

    #[test]
    fn a_redacted_url_keeps_everything_but_the_password() {
        assert_eq!(redact_url("amqp://guest:hunter2@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact_url("postgres://postgres:p%40ss@db:5432/order"), "postgres://postgres:***@db:5432/order");
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:21432/order"),
            "postgres://postgres@127.0.0.1:21432/order"
        );
        assert_eq!(redact_url("amqp:guest:hunter2@host"), "<an opaque URL>");
        assert_eq!(redact_url("hunter2"), "<not a URL>");
    }
}

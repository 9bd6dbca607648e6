//! The machine's host name, looked up in one place: the mDNS instance
//! name, the default public URL and the Message-ID of mails use it.

/// The host name as the system reports it (`nas.example.org`), `None`
/// when it is unknown, empty or not UTF-8.
pub fn name() -> Option<String> {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
}

/// Its first label (`nas` of `nas.example.org`), `None` when empty.
pub fn short_name() -> Option<String> {
    name()
        .map(|h| h.split('.').next().unwrap_or("").to_string())
        .filter(|h| !h.is_empty())
}

/// [`name`], or `healthchecker` when there is none (a Message-ID needs a
/// domain part).
pub fn name_or_default() -> String {
    name().unwrap_or_else(|| "healthchecker".into())
}

//! Reading the dashboard's HTML and posting its forms as a browser on the
//! daemon's own page would, for the dashboard tests.

use healthchecker_testkit::TestDaemon;
use scraper::{Html, Selector};

/// A CSS selector (panics on a typo in the test).
pub fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

/// The text of every element matching `s`, joined with `|`.
pub fn text(doc: &Html, s: &str) -> String {
    doc.select(&sel(s))
        .map(|e| e.text().collect::<String>())
        .collect::<Vec<_>>()
        .join("|")
        .trim()
        .to_string()
}

/// Attribute `a` of the first element matching `s`.
pub fn attr(doc: &Html, s: &str, a: &str) -> Option<String> {
    doc.select(&sel(s))
        .next()
        .and_then(|e| e.value().attr(a).map(str::to_string))
}

/// A form post as a browser sends it from the daemon's own page (with the
/// session `cookie`, if any); returns the status, the final path and query
/// (redirects followed) and the page's text.
pub async fn form_post(
    http: &reqwest::Client,
    d: &TestDaemon,
    path: &str,
    form: &[(&str, &str)],
    cookie: Option<&str>,
) -> (u16, String, String) {
    let mut req = http.post(d.at(path));
    if let Some(cookie) = cookie {
        req = req.header("Cookie", cookie);
    }
    let r = req
        .header("Origin", &d.url)
        .header("Sec-Fetch-Site", "same-origin")
        .form(form)
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    let url =
        r.url().path().to_string() + &r.url().query().map(|q| format!("?{q}")).unwrap_or_default();
    (st, url, r.text().await.unwrap())
}

//! `serve --status-page` (SPEC section 17): the public status page is off
//! unless asked for, on the command line or in the environment.

use crate::daemon::Proc;

async fn status_of(url: &str) -> u16 {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    http.get(format!("{url}/status"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn status_page_is_served_only_with_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let off = Proc::start(&dir.path().join("a.db"), &[]);
    assert_eq!(status_of(&off.url).await, 404);
    drop(off);
    let on = Proc::start(&dir.path().join("b.db"), &["--status-page"]);
    assert_eq!(status_of(&on.url).await, 200);
}

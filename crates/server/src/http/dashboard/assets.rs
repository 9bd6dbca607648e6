//! The dashboard's stylesheet and its one script, both served as files of
//! the daemon's own (the pages' Content-Security-Policy allows no inline
//! script). No framework and no build step: the script only refreshes the
//! live part of a page and rewrites `<time>` elements into the viewer's
//! time zone with a relative time; every page is complete without it.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// Where the script is served.
pub(super) const SCRIPT_PATH: &str = "/assets/dashboard.js";
/// Where the stylesheet is served.
pub(super) const STYLE_PATH: &str = "/assets/dashboard.css";

pub(super) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub(super) async fn style() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Light by default, dark when the system is (`prefers-color-scheme`);
/// tables scroll sideways and forms stack on a 360 px wide phone.
const CSS: &str = r#"
:root{--fg:#1f2328;--bg:#f6f8fa;--card:#fff;--line:#d0d7de;--head:#eaeef2;--muted:#57606a;--link:#0969da;
--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--unk:#6e7781;--bar:#24292f}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--bg:#0d1117;--card:#161b22;--line:#30363d;--head:#21262d;
--muted:#9198a1;--link:#58a6ff;--ok:#3fb950;--warn:#d29922;--bad:#f85149;--unk:#8b949e;--bar:#010409}}
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0;color:var(--fg);background:var(--bg)}
a{color:var(--link)}
header{background:var(--bar);color:#fff;padding:.6rem 1rem;display:flex;flex-wrap:wrap;gap:.4rem 1rem;align-items:baseline}
header a{color:#fff;text-decoration:none;font-weight:600}
header nav{margin-left:auto;display:flex;flex-wrap:wrap;gap:.4rem 1rem;align-items:baseline}
header form{display:inline}
header button{background:none;border:0;color:#fff;text-decoration:underline;cursor:pointer;font:inherit;padding:0}
main{padding:1rem;max-width:1400px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;background:var(--card)}
th,td{padding:.35rem .5rem;border-bottom:1px solid var(--line);text-align:left;vertical-align:middle;font-size:.9rem}
th{background:var(--head)}
th a{color:inherit}
.state{display:inline-block;padding:.1rem .5rem;border-radius:1rem;color:#fff;font-weight:600;font-size:.8rem}
.healthy{background:var(--ok)}.degraded{background:var(--warn)}.unhealthy{background:var(--bad)}.unknown{background:var(--unk)}
.state.paused,.state.silenced{background:var(--card);color:var(--muted);border:1px solid var(--unk)}
.counts{display:flex;flex-wrap:wrap;gap:.5rem;margin:.5rem 0 1rem}
.counts a{text-decoration:none}
.reason,.hint{color:var(--muted);font-size:.8rem}
.fail{color:var(--bad)}.warn{color:var(--warn)}.pass{color:var(--ok)}
form.filter{margin:.5rem 0;display:flex;flex-wrap:wrap;gap:.5rem}
section{margin-top:1.5rem}
code{font-size:.85rem;word-break:break-all}
.notice{background:var(--card);border-left:4px solid var(--link);padding:.5rem .8rem;margin:.5rem 0}
.problem{background:var(--card);border-left:4px solid var(--bad);padding:.5rem .8rem;margin:.5rem 0}
.actions{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;margin:.5rem 0}
.actions form{display:inline}
button,.button{font:inherit;padding:.35rem .8rem;border:1px solid var(--line);border-radius:.4rem;background:var(--card);color:var(--fg);cursor:pointer;text-decoration:none}
button.primary{background:var(--ok);color:#fff;border-color:var(--ok)}
button.danger{background:var(--bad);color:#fff;border-color:var(--bad)}
form.edit{max-width:40rem;background:var(--card);padding:1rem;border:1px solid var(--line);border-radius:.4rem}
.field{margin-bottom:.8rem}
.field label{display:block;font-weight:600;margin-bottom:.2rem}
.field input[type=text],.field input[type=url],.field input[type=number],.field input[type=password],.field select{width:100%;max-width:100%;padding:.35rem;font:inherit;color:var(--fg);background:var(--bg);border:1px solid var(--line);border-radius:.3rem}
.field.invalid input,.field.invalid select{border-color:var(--bad)}
.field .error{color:var(--bad);font-weight:600;margin:.2rem 0}
.checkbar{display:flex;gap:2px;height:1.6rem;max-width:40rem}
.checkbar span{flex:1;min-width:3px;border-radius:2px;background:var(--line)}
.checkbar .r-pass{background:var(--ok)}.checkbar .r-warn{background:var(--warn)}.checkbar .r-fail{background:var(--bad)}
.chart text{fill:var(--muted);font-size:11px}
.chart .axis{stroke:var(--muted)}
.chart .grid{stroke:var(--line)}
.chart .line{stroke:var(--link);fill:none;stroke-width:1.5}
.chart .pt{fill:var(--link)}.chart .pt.fail{fill:var(--bad)}
.uptimes{display:flex;flex-wrap:wrap;gap:1rem}
.uptimes div{background:var(--card);border:1px solid var(--line);border-radius:.4rem;padding:.4rem .8rem}
.uptimes strong{display:block;font-size:1.2rem}
.statusbar{display:flex;gap:1px;height:1.4rem}
.statusbar span{flex:1;min-width:1px;background:var(--line)}
.statusbar .d-ok{background:var(--ok)}.statusbar .d-some{background:var(--warn)}.statusbar .d-bad{background:var(--bad)}
.status-list{list-style:none;padding:0;max-width:60rem}
.status-row{background:var(--card);border:1px solid var(--line);border-radius:.4rem;padding:.5rem .8rem;margin-bottom:.5rem}
.status-head{display:flex;flex-wrap:wrap;gap:.5rem;align-items:baseline;margin-bottom:.3rem}
@media (max-width:600px){main{padding:.5rem}th,td{padding:.25rem;font-size:.8rem}.state{padding:.1rem .3rem;font-size:.7rem}.hide-narrow,time .abs{display:none}header nav{margin-left:0}}
"#;

const SCRIPT: &str = r#"
(function () {
  function rel(ms) {
    var s = Math.round((Date.now() - ms) / 1000), a = Math.abs(s), v, u;
    if (a < 45) return s >= 0 ? 'just now' : 'in a moment';
    if (a < 3600) { v = Math.round(a / 60); u = 'min'; }
    else if (a < 86400) { v = Math.round(a / 3600); u = 'h'; }
    else { v = Math.round(a / 86400); u = v === 1 ? 'day' : 'days'; }
    return s >= 0 ? v + ' ' + u + ' ago' : 'in ' + v + ' ' + u;
  }
  function localize(root) {
    var ts = (root || document).querySelectorAll('time[datetime]');
    for (var i = 0; i < ts.length; i++) {
      var t = ts[i], ms = Date.parse(t.getAttribute('datetime'));
      if (isNaN(ms)) continue;
      if (!t.title) t.title = t.textContent;
      var abs = document.createElement('span'), r = document.createElement('span');
      abs.className = 'abs'; abs.textContent = new Date(ms).toLocaleString() + ' ';
      r.className = 'rel'; r.textContent = '(' + rel(ms) + ')';
      t.textContent = ''; t.appendChild(abs); t.appendChild(r);
      t.setAttribute('data-local', '1');
    }
  }
  localize(document);
  var el = document.getElementById('live');
  if (!el || !window.fetch) return;
  var src = el.getAttribute('data-src');
  var period = parseInt(el.getAttribute('data-refresh'), 10) || 3000;
  function tick() {
    fetch(src, { headers: { 'Accept': 'text/html' }, cache: 'no-store', credentials: 'same-origin' })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (t) {
        if (t !== null) { el.innerHTML = t; localize(el); el.setAttribute('data-refreshed', Date.now()); }
      })
      .catch(function () {})
      .then(function () { setTimeout(tick, period); });
  }
  setTimeout(tick, period);
})();
"#;

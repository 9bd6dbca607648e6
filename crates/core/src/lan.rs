//! What to monitor of a device found on the LAN (SPEC section 16): from a
//! DNS-SD service type, its address, port and TXT `path`, a suggested name
//! and target. Pure: the daemon browses, this only decides.

use std::net::IpAddr;

/// The DNS-SD types the daemon browses (SPEC section 16).
pub const BROWSE_TYPES: &[&str] = &[
    "_http._tcp",
    "_https._tcp",
    "_ipp._tcp",
    "_printer._tcp",
    "_smb._tcp",
    "_ssh._tcp",
    "_hap._tcp",
    "_googlecast._tcp",
    "_home-assistant._tcp",
    "_workstation._tcp",
];

/// A suggested service for a found device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestion {
    /// A service name: the instance name, and what it is when the type
    /// says more than the name (`Office printer (printer)`).
    pub name: String,
    /// The target URL, as a registration takes it.
    pub url: String,
}

/// The suggestion for an instance of `service_type` (`_ipp._tcp`, with or
/// without `.local.`) at `ip:port`; `path` is its TXT `path`, if any.
/// `None` for a type this does not know.
///
/// Web interfaces (`_http._tcp`, `_https._tcp`, Home Assistant) are checked
/// over HTTP(S) at their TXT path (or `/`); printers, file shares, SSH,
/// HomeKit and Cast devices by a TCP connection to the announced port (they
/// speak no HTTP worth judging there); a workstation announces no service
/// port, so it is pinged.
pub fn suggest(
    service_type: &str,
    instance: &str,
    ip: IpAddr,
    port: u16,
    path: Option<&str>,
) -> Option<Suggestion> {
    let ty = service_type
        .trim_end_matches('.')
        .trim_end_matches(".local");
    let host = match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    let path = match path.map(str::trim) {
        Some(p) if p.starts_with('/') && !p.contains(char::is_whitespace) => p,
        _ => "/",
    };
    let (url, what) = match ty {
        "_http._tcp" => (format!("http://{host}:{port}{path}"), "web"),
        "_https._tcp" => (format!("https://{host}:{port}{path}"), "web"),
        "_home-assistant._tcp" => (format!("http://{host}:{port}/"), "Home Assistant"),
        "_ipp._tcp" | "_printer._tcp" => (format!("tcp://{host}:{port}"), "printer"),
        "_smb._tcp" => (format!("tcp://{host}:{port}"), "file share"),
        "_ssh._tcp" => (format!("tcp://{host}:{port}"), "ssh"),
        "_hap._tcp" => (format!("tcp://{host}:{port}"), "HomeKit"),
        "_googlecast._tcp" => (format!("tcp://{host}:{port}"), "Cast"),
        "_workstation._tcp" => (format!("icmp://{host}"), "ping"),
        _ => return None,
    };
    let instance = instance.trim();
    let name = if instance.is_empty() {
        format!("{host} ({what})")
    } else {
        format!("{instance} ({what})")
    };
    // Names are at most 200 characters (spec::NAME_LEN).
    let name: String = name.chars().take(200).collect();
    Some(Suggestion { name, url })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_gets_a_target_that_fits() {
        let ip: IpAddr = "192.168.1.20".parse().unwrap();
        let cases = [
            (
                "_http._tcp.local.",
                5000,
                Some("/webman/"),
                "http://192.168.1.20:5000/webman/",
            ),
            ("_http._tcp", 80, None, "http://192.168.1.20:80/"),
            (
                "_https._tcp",
                5001,
                Some("not a path"),
                "https://192.168.1.20:5001/",
            ),
            ("_ipp._tcp.local.", 631, None, "tcp://192.168.1.20:631"),
            ("_smb._tcp", 445, None, "tcp://192.168.1.20:445"),
            (
                "_home-assistant._tcp",
                8123,
                None,
                "http://192.168.1.20:8123/",
            ),
            ("_workstation._tcp", 9, None, "icmp://192.168.1.20"),
        ];
        for (ty, port, path, url) in cases {
            let s = suggest(ty, "NAS", ip, port, path).unwrap();
            assert_eq!(s.url, url, "{ty}");
        }
        assert_eq!(
            suggest("_ipp._tcp", "Office printer", ip, 631, None)
                .unwrap()
                .name,
            "Office printer (printer)"
        );
        assert!(suggest("_airplay._tcp", "TV", ip, 7000, None).is_none());
        let v6: IpAddr = "fd00::5".parse().unwrap();
        assert_eq!(
            suggest("_ssh._tcp", "pi", v6, 22, None).unwrap().url,
            "tcp://[fd00::5]:22"
        );
    }

    #[test]
    fn suggestions_register_as_they_are() {
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        for ty in BROWSE_TYPES {
            let s = suggest(ty, "Device", ip, 8080, Some("/status")).unwrap();
            let body = serde_json::json!({"name": s.name, "url": s.url});
            let req = crate::RegisterRequest::from_json(body.to_string().as_bytes()).unwrap();
            let spec = crate::ServiceSpec::try_from(req).unwrap_or_else(|e| panic!("{ty}: {e}"));
            assert_eq!(spec.target.url(), s.url, "{ty}");
        }
    }
}

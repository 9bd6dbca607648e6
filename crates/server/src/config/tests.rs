//! The configuration's layers, precedence and messages.

use super::*;

fn s(key: &str, v: &str, source: Source) -> Setting {
    Setting {
        key: key.into(),
        values: vec![v.into()],
        source,
    }
}

#[test]
fn defaults_are_the_spec_s() {
    let c = Config::resolve_with_env(vec![], |_| None).unwrap();
    assert_eq!(c.bind.to_string(), "0.0.0.0:8484");
    assert!(c.db.ends_with("healthchecker/healthchecker.db"));
    assert!(c.mdns && c.legacy_mdns);
    assert_eq!(c.notify_min_gap, Duration::from_secs(60));
    assert!(c.smtp.is_none());
    assert_eq!(c.digest_threshold, 5);
    assert_eq!(c.digest_window, Duration::from_secs(30));
}

#[test]
fn digest_options_come_from_every_layer_and_are_bounded() {
    let c = Config::resolve_with_env(
        vec![
            s("digest-threshold", "0", Source::Cli),
            s(
                "digest-window",
                "90",
                Source::Env("HEALTHCHECKER_DIGEST_WINDOW".into()),
            ),
        ],
        |_| None,
    )
    .unwrap();
    assert_eq!((c.digest_threshold, c.digest_window.as_secs()), (0, 90));
    let e = Config::resolve_with_env(vec![s("digest-window", "0", Source::Cli)], |_| None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--digest-window"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hc.toml");
    std::fs::write(&file, "digest_threshold = 12\ndigest-window = 60\n").unwrap();
    let c = Config::resolve_with_env(
        vec![s("config", file.to_str().unwrap(), Source::Cli)],
        |_| None,
    )
    .unwrap();
    assert_eq!((c.digest_threshold, c.digest_window.as_secs()), (12, 60));
}

#[test]
fn keep_checks_is_bounded_and_names_the_option() {
    let keep = |v: &str| {
        Config::resolve_with_env(vec![s("keep-checks", v, Source::Cli)], |_| None)
            .map(|c| c.keep_checks)
    };
    assert_eq!(
        Config::resolve_with_env(vec![], |_| None)
            .unwrap()
            .keep_checks,
        100
    );
    assert_eq!(keep("10").unwrap(), 10);
    assert_eq!(keep("100000").unwrap(), 100_000);
    for bad in ["9", "100001", "-1", "many"] {
        let e = keep(bad).unwrap_err().to_string();
        assert!(e.contains("--keep-checks") && e.contains(bad), "{e}");
    }
}

#[test]
fn deny_targets_add_to_the_default_list_and_none_empties_it() {
    let deny = |v: &str| {
        Config::resolve_with_env(vec![s("deny-targets", v, Source::Cli)], |_| None)
            .map(|c| c.targets.deny)
    };
    let defaults = crate::probe::TargetPolicy::default_deny();
    assert_eq!(
        Config::resolve_with_env(vec![], |_| None)
            .unwrap()
            .targets
            .deny,
        defaults
    );
    let more = deny("10.0.0.0/8").unwrap();
    assert_eq!(more.len(), defaults.len() + 1);
    assert!(more.starts_with(&defaults));
    assert!(deny("none").unwrap().is_empty());
    let e = deny("none,10.0.0.0/8").unwrap_err().to_string();
    assert!(e.contains("--deny-targets") && e.contains("none"), "{e}");
}

#[test]
fn an_api_certificate_needs_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("cert.pem");
    std::fs::write(&f, "x").unwrap();
    let f = f.to_str().unwrap();
    let e = Config::resolve_with_env(vec![s("tls-cert", f, Source::Cli)], |_| None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--tls-cert needs --tls-key"), "{e}");
    let e = Config::resolve_with_env(vec![s("tls-key", "/no/such/key", Source::Cli)], |_| None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--tls-key") && e.contains("no such file"), "{e}");
    let c = Config::resolve_with_env(
        vec![s("tls-cert", f, Source::Cli), s("tls-key", f, Source::Cli)],
        |_| None,
    )
    .unwrap();
    assert!(c.api_tls.is_some());
}

#[test]
fn a_password_in_the_smtp_url_is_never_echoed() {
    let e = Config::resolve_with_env(
        vec![s(
            "smtp-url",
            "smtp://me:hunter2@mail.example:587",
            Source::Cli,
        )],
        |_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--smtp-url") && !e.contains("hunter2"), "{e}");
}

#[test]
fn cli_beats_env_beats_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hc.toml");
    std::fs::write(
        &file,
        "bind = \"127.0.0.1:1111\"\nlog_format = \"json\"\nmax-concurrent-probes = 7\n",
    )
    .unwrap();
    let cfg = |extra: Vec<Setting>| {
        let mut v = vec![s("config", file.to_str().unwrap(), Source::Cli)];
        v.extend(extra);
        Config::resolve_with_env(v, |_| None).unwrap()
    };
    let c = cfg(vec![]);
    assert_eq!(c.bind.port(), 1111);
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.max_concurrent_probes, 7);
    let c = cfg(vec![s(
        "bind",
        "127.0.0.1:2222",
        Source::Env("HEALTHCHECKER_BIND".into()),
    )]);
    assert_eq!(c.bind.port(), 2222);
}

#[test]
fn the_command_line_struct_is_merged_over_the_file_option_by_option() {
    use clap::{Args, FromArgMatches};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hc.toml");
    std::fs::write(
        &file,
        "log_format = \"json\"\nno-mdns = true\nkeep_checks = 500\n",
    )
    .unwrap();
    let m = RawOptions::augment_args(clap::Command::new("serve"))
        .try_get_matches_from([
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--log-format",
            "text",
            "--auto-monitor",
            "_ipp._tcp,_smb._tcp",
        ])
        .unwrap();
    let raw = RawOptions::from_arg_matches(&m).unwrap();
    let c = Config::resolve(Layer::from_cli(&raw, &m)).unwrap();
    assert_eq!(c.log_format, LogFormat::Text, "the command line wins");
    assert!(
        !c.mdns,
        "a flag the command line does not give comes from the file"
    );
    assert_eq!(c.keep_checks, 500);
    assert_eq!(c.auto_monitor, ["_ipp._tcp", "_smb._tcp"]);
    let m = RawOptions::augment_args(clap::Command::new("serve"))
        .try_get_matches_from(["serve", "--keep-checks", "5"])
        .unwrap();
    let raw = RawOptions::from_arg_matches(&m).unwrap();
    let e = Config::resolve(Layer::from_cli(&raw, &m))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--keep-checks") && e.contains("command line"),
        "{e}"
    );
}

#[test]
fn every_option_is_a_key() {
    let keys = keys();
    assert_eq!(keys.len(), 35, "{keys:?}");
    assert!(keys.contains(&"max-connections-per-client".to_string()));
    assert!(keys.contains(&"no-mdns".to_string()));
}

#[test]
fn errors_name_option_value_and_source() {
    let e = Config::resolve_with_env(
        vec![s("bind", "nope", Source::Env("HEALTHCHECKER_BIND".into()))],
        |_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("--bind")
            && e.contains("\"nope\"")
            && e.contains("environment variable HEALTHCHECKER_BIND"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hc.toml");
    std::fs::write(&file, "notify_min_gap = -5\n").unwrap();
    let e = Config::resolve_with_env(
        vec![s("config", file.to_str().unwrap(), Source::Cli)],
        |_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("--notify-min-gap") && e.contains("config file"),
        "{e}"
    );
    std::fs::write(&file, "bnid = 1\n").unwrap();
    let e = Config::resolve_with_env(
        vec![s("config", file.to_str().unwrap(), Source::Cli)],
        |_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown key \"bnid\""), "{e}");
    let e = Config::resolve_with_env(vec![s("config", "/nonexistent.toml", Source::Cli)], |_| {
        None
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("cannot read config file"), "{e}");
}

#[test]
fn metrics_per_service_comes_from_every_layer() {
    use super::{Config, Setting, Source};
    let resolve = |settings: Vec<Setting>| Config::resolve_with_env(settings, |_| None);
    let cli = |v: &str, source: Source| Setting {
        key: "metrics-per-service".into(),
        values: vec![v.into()],
        source,
    };
    assert!(resolve(vec![]).unwrap().metrics_per_service);
    assert!(
        !resolve(vec![cli("false", Source::Cli)])
            .unwrap()
            .metrics_per_service
    );
    let env = Source::Env("HEALTHCHECKER_METRICS_PER_SERVICE".into());
    assert!(!resolve(vec![cli("0", env)]).unwrap().metrics_per_service);
    let e = resolve(vec![cli("sometimes", Source::Cli)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("metrics-per-service"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hc.toml");
    std::fs::write(&file, "metrics_per_service = false\n").unwrap();
    let c = resolve(vec![Setting {
        key: "config".into(),
        values: vec![file.display().to_string()],
        source: Source::Cli,
    }])
    .unwrap();
    assert!(!c.metrics_per_service);
}

#[test]
fn a_postgres_url_in_db_is_a_cluster_database_with_its_password() {
    let url = "postgres://hc@db.example:5433/hc";
    let c = Config::resolve_with_env(vec![s("db", url, Source::Cli)], |k| {
        (k == "HEALTHCHECKER_DB_PASSWORD").then(|| "from-env".to_string())
    })
    .unwrap();
    let pg = c.postgres.expect("a postgres URL is not a SQLite path");
    assert_eq!(pg.to_string(), url);
    assert_eq!(pg.config().get_password(), Some(&b"from-env"[..]));
    assert!(c.db.ends_with("healthchecker/healthchecker.db"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "from-file\n").unwrap();
    let c = Config::resolve_with_env(
        vec![
            s("db", url, Source::Cli),
            s("db-password-file", file.to_str().unwrap(), Source::Cli),
        ],
        |k| (k == "HEALTHCHECKER_DB_PASSWORD").then(|| "from-env".to_string()),
    )
    .unwrap();
    let pg = c.postgres.unwrap();
    assert_eq!(pg.config().get_password(), Some(&b"from-file"[..]));

    let c = Config::resolve_with_env(vec![s("db", "hc.db", Source::Cli)], |_| None).unwrap();
    assert!(c.postgres.is_none());
    assert_eq!(c.db, PathBuf::from("hc.db"));
}

#[test]
fn a_bad_postgres_url_names_db_without_the_password() {
    let e = Config::resolve_with_env(
        vec![s("db", "postgres://hc:s3cret@db.example/", Source::Cli)],
        |_| None,
    );
    // A URL without a database name is valid (the user's name is used).
    assert!(e.is_ok());
    let e = Config::resolve_with_env(
        vec![s("db", "postgres://:s3cret@db.example/hc", Source::Cli)],
        |_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--db") && e.contains("user"), "{e}");
    assert!(!e.contains("s3cret"), "{e}");
    let e = Config::resolve_with_env(
        vec![s("db-password-file", "/etc/hostname", Source::Cli)],
        |_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--db-password-file"), "{e}");
}

#[test]
fn node_id_is_given_or_the_host_and_port() {
    let c = Config::resolve_with_env(vec![s("node-id", "nas-1", Source::Cli)], |_| None).unwrap();
    assert_eq!(c.node_id_for(8484), "nas-1");
    let c = Config::resolve_with_env(Vec::new(), |_| None).unwrap();
    assert_eq!(
        c.node_id_for(8484),
        format!("{}:8484", crate::host::name_or_default())
    );
    for bad in ["", "two words", &"x".repeat(101)] {
        let e = Config::resolve_with_env(vec![s("node-id", bad, Source::Cli)], |_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--node-id"), "{bad:?}: {e}");
    }
}

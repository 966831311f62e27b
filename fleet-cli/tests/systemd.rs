//! The units in systemd/ pass `systemd-analyze verify` (with the installed binary's path
//! pointed at the one cargo built), run what the README says, and are hardened alike.
//! `make test` installs systemd-analyze (scripts/ensure-systemd-analyze); without it the
//! test fails and names it, rather than skipping.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fleet-cli");
const UNITS: [&str; 3] = ["fleet.service", "fleet.timer", "fleet-serve.service"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn unit(name: &str) -> String {
    std::fs::read_to_string(repo().join("systemd").join(name)).unwrap()
}

/// `key=value` lines of a unit, in order.
fn settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    for name in UNITS {
        // The units name the installed binary; verify checks that it exists.
        let text = unit(name).replace("/usr/local/bin/fleet-cli", BIN);
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let out = match Command::new("systemd-analyze")
        .arg("verify")
        .args(UNITS.iter().map(|u| dir.path().join(u)))
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!(
            "systemd-analyze is missing ({e}): install the Debian package `systemd` (make test does, through scripts/ensure-systemd-analyze)"
        ),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: exit {:?}\n{stderr}",
        out.status
    );
}

#[test]
fn the_timer_runs_make_up_with_the_installed_binary_and_a_random_delay() {
    let timer = settings(&unit("fleet.timer"));
    assert!(timer.contains(&("Unit".into(), "fleet.service".into())));
    assert!(timer.iter().any(|(k, _)| k == "RandomizedDelaySec"));
    let service = settings(&unit("fleet.service"));
    let exec = &service.iter().find(|(k, _)| k == "ExecStart").unwrap().1;
    // What make would run for that command line: the Makefile's own `up` recipe.
    let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    let out = Command::new("make")
        .arg("-n")
        .args(&args)
        .current_dir(repo())
        .output()
        .expect("make is missing: install the Debian package `make`");
    let dry = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        dry.trim(),
        "/usr/local/bin/fleet-cli up --stack /etc/fleet/stack.yaml --yes",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn both_services_are_hardened_alike_and_keep_state_writable() {
    let hardening = |name: &str| -> Vec<(String, String)> {
        let skip = [
            "Description",
            "Documentation",
            "Wants",
            "After",
            "Conflicts",
            "Type",
            "ExecStart",
            "TimeoutStartSec",
            "TimeoutStopSec",
            "KillSignal",
            "KillMode",
            "Restart",
            "RestartSec",
            "WantedBy",
        ];
        settings(&unit(name))
            .into_iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .collect()
    };
    let oneshot = hardening("fleet.service");
    assert_eq!(oneshot, hardening("fleet-serve.service"));
    for want in [
        ("User", "fleet"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ReadWritePaths", "/var/lib/fleet"),
        ("StateDirectory", "fleet"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        ("CapabilityBoundingSet", ""),
        ("EnvironmentFile", "/etc/fleet/fleet.env"),
    ] {
        assert!(
            oneshot.contains(&(want.0.into(), want.1.into())),
            "missing {}={}",
            want.0,
            want.1
        );
    }
}

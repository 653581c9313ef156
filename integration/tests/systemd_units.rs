//! The systemd units of hack/systemd: `systemd-analyze verify` accepts them (with ExecStart
//! pointing at the binary under test), and the binary accepts the command lines they run.
use std::path::PathBuf;
use std::process::Command;

fn unit(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../hack/systemd").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn value<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines().filter_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('='))).collect()
}

#[test]
fn unit_files_verify_and_their_command_lines_parse() {
    let bin = berth_integration::berth_bin();
    let dir = berth_integration::TempDir::new("units");
    for name in ["berth-server.service", "berth-agent.service"] {
        let text = unit(name);
        // what the issue asks of both units
        assert_eq!(value(&text, "Type"), ["notify"], "{name}");
        assert_eq!(value(&text, "KillMode"), ["process"], "{name}");
        assert_eq!(value(&text, "Delegate"), ["yes"], "{name}");
        assert_eq!(value(&text, "Restart"), ["always"], "{name}");
        assert_eq!(value(&text, "WatchdogSec").len(), 1, "{name}");
        let exec = value(&text, "ExecStart")[0];
        assert!(exec.contains("--cgroup-driver systemd"), "{exec}");
        let local = text
            .replace("/usr/local/bin/berth", bin.to_str().unwrap())
            .replace("EnvironmentFile=/etc/berth/agent.env", "EnvironmentFile=-/etc/berth/agent.env");
        let path = dir.path().join(name);
        std::fs::write(&path, &local).unwrap();
        let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&path).output().expect("systemd-analyze");
        assert!(out.status.success() && out.stderr.is_empty(), "systemd-analyze verify {name}: {}", String::from_utf8_lossy(&out.stderr));
        // the binary takes the unit's flags (${BERTH_SERVER} as the agent's env file sets it)
        let args: Vec<String> = exec.split_whitespace().skip(1).map(|a| a.replace("${BERTH_SERVER}", "https://127.0.0.1:6443")).collect();
        let out = Command::new(&bin).args(&args).arg("--help").output().unwrap();
        assert!(out.status.success(), "berth {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

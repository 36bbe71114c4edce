//! The `leeway` binary's operator commands against a fresh SQLite database.

#![expect(clippy::unwrap_used, reason = "the helper outside #[test] fails loudly")]

use std::process::Command;

fn leeway(db: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_leeway"))
        .args(args)
        .env("LEEWAY_DATABASE_URL", db)
        .env_remove("LEEWAY_JWT_SECRET")
        .env("LEEWAY_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn migrate_token_and_jobs_run_once_work_on_a_fresh_database() {
    let dir = std::env::temp_dir().join(format!("leeway-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}/cli.db", dir.display());
    let (ok, out, err) = leeway(&db, &["migrate"]);
    assert!(ok, "{err}");
    assert!(out.contains("7 migration(s) applied on sqlite"), "{out}");
    let (ok, out, _) = leeway(&db, &["migrate"]);
    assert!(ok && out.contains("0 migration(s)"), "migrations apply once: {out}");
    let (ok, token, err) = leeway(&db, &["token", "--sub", "alice", "--roles", "requester,analyst", "--ttl", "5m"]);
    assert!(ok, "{err}");
    assert_eq!(token.trim().split('.').count(), 3, "a JWT: {token}");
    let secret = dir.join("cli.db.jwt-secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let (ok, _, err) = leeway(&db, &["token", "--sub", "x", "--roles", "wizard"]);
    assert!(!ok && err.contains("unknown role"), "{err}");
    let (ok, out, err) = leeway(&db, &["jobs", "run-once"]);
    assert!(ok, "{err}");
    assert!(out.contains("0 exception(s)"), "{out}");
    assert!(out.contains("0 event(s) entered the change feed"), "jobs run-once also runs the webhook worker: {out}");
    let (ok, out, _) = leeway(&db, &["--help"]);
    for cmd in ["serve", "migrate", "token", "openapi", "jobs"] {
        assert!(ok && out.contains(cmd), "--help explains {cmd}: {out}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

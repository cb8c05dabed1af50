//! Schema versions: whether a database has every migration this build was made with.

use sqlx::migrate::Migrator;

use crate::{Result, StoreError};

/// Compares the migrations recorded as applied (`(version, success)`) with the ones `migrator`
/// carries: `SchemaBehind` naming each missing or failed one. Migrations the database has and
/// this build does not know (a newer build migrated it) are fine: migrations only add.
pub fn check(migrator: &Migrator, applied: &[(i64, bool)]) -> Result<()> {
    let missing: Vec<String> = migrator
        .iter()
        .filter(|m| !applied.iter().any(|&(v, ok)| v == m.version && ok))
        .map(|m| format!("{} ({})", m.version, m.description))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let what = if missing.len() == 1 { "migration" } else { "migrations" };
    Err(StoreError::SchemaBehind(format!("{what} {}", missing.join(", "))))
}

#[cfg(test)]
mod tests {
    use super::*;

    static SQLITE: Migrator = sqlx::migrate!("../../migrations/sqlite");

    #[test]
    fn behind_names_each_missing_migration() {
        let all = [(1, true), (2, true), (3, true), (4, true), (5, true), (6, true), (7, true)];
        assert!(check(&SQLITE, &all).is_ok());
        // A newer build's migration in the database does not stop an older build.
        assert!(check(&SQLITE, &[&all[..], &[(8, true)]].concat()).is_ok());
        let err = check(&SQLITE, &[(1, true), (3, true), (4, true), (5, true), (6, true), (7, true)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("migration 2 (api keys and owners) not applied"), "{err}");
        assert!(err.contains("vllm-batch migrate"), "{err}");
        let err = check(&SQLITE, &[]).unwrap_err().to_string();
        assert!(
            err.contains(
                "migrations 1 (init), 2 (api keys and owners), 3 (chunk checkpoints), 4 (idempotency keys), 5 (expiry and gc), 6 (batch priority), 7 (webhooks)"
            ),
            "{err}"
        );
        // A failed (dirty) migration is not applied.
        assert!(check(&SQLITE, &[(1, true), (2, true), (3, false)]).is_err());
    }
}

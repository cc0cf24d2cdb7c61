//! What the server does on signals: SIGHUP reloads the policy, the
//! certificates and the audit file (and changed certificate files reload by
//! themselves); SIGTERM and SIGINT begin the shutdown.

use std::sync::Arc;
use std::time::Duration;

use crate::edge::gate::Gate;
use crate::edge::tls::ReloadableTls;

/// Reloads policy, certificates and the audit file on SIGHUP, and the
/// certificates when their files change (failures keep what was loaded),
/// and prunes the policy's rate-limit state once a minute.
pub(crate) fn spawn_reloaders(gate: Arc<Gate>, tls: Option<ReloadableTls>, poll: Duration) {
    let reload_tls = |tls: &ReloadableTls, why: &str| match tls.reload() {
        Ok(()) => tracing::info!(why, "TLS certificates and trust bundle reloaded"),
        Err(e) => tracing::error!(why, error = %e, "TLS reload failed; keeping the previous certificates"),
    };
    if let Some(tls) = tls.clone().filter(|_| !poll.is_zero()) {
        tokio::spawn(async move {
            let mut seen = tls.modified();
            let mut tick = tokio::time::interval(poll);
            loop {
                tick.tick().await;
                let now = tls.modified();
                if now != seen {
                    seen = now;
                    reload_tls(&tls, "files changed");
                }
            }
        });
    }
    // Rate-limit state of identities that stopped calling is dropped once
    // a minute, so it cannot grow with every identity ever seen.
    let policy = gate.policy.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            if let Some(policy) = policy.current() {
                let tracked = policy.forget_idle_identities();
                tracing::debug!(tracked, "rate-limit state pruned to the identities calling now");
            }
        }
    });
    tokio::spawn(async move {
        let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload by restarting");
            return;
        };
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading policy, certificates and audit log");
            match gate.policy.reload() {
                Ok(rules) => tracing::info!(rules, "policy reloaded"),
                Err(e) => tracing::error!(error = %e, "policy reload failed; keeping the previous policy"),
            }
            if let Some(tls) = &tls {
                reload_tls(tls, "SIGHUP");
            }
            if let Some(audit) = &gate.audit
                && let Err(e) = audit.reopen().await
            {
                tracing::error!(error = %e, "audit log reopen failed");
            }
        }
    });
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

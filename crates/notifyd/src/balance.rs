//! Provider balances: each instance whose plugin supports `balance` is asked every
//! `balance.interval`; the answer is exported as `notifyd_provider_balance{provider,currency}`, and
//! an instance with `low_balance` set also gets `notifyd_provider_balance_low{provider}` (1 while
//! the balance is below the threshold) and a warning in the log.

use crate::metrics::Metrics;
use crate::plugin::Op;
use crate::provider::{Provider, Providers};
use crate::shutdown::Shutdown;
use notifyd_plugin::wire::{BalanceResult, ErrorCode, ProviderError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// One instance's balance, or why there is none.
pub async fn query(provider: &Provider) -> Result<(f64, String), ProviderError> {
    match provider.run::<_, BalanceResult>(Op::Balance, &serde_json::json!({})).await {
        Ok(BalanceResult::Balance { amount, currency }) if amount.is_finite() => Ok((amount, currency)),
        Ok(BalanceResult::Balance { .. }) => {
            Err(ProviderError::new(ErrorCode::PluginError, "the balance is not a number"))
        }
        Ok(BalanceResult::Failed { error }) => Err(error),
        Err(e) => Err(e.to_provider_error()),
    }
}

/// Polls every balance-capable provider until shutdown begins. `thresholds`: the
/// instances' `low_balance`.
pub async fn run(
    providers: Arc<Providers>,
    interval: Duration,
    thresholds: HashMap<String, f64>,
    metrics: Metrics,
    shutdown: Shutdown,
) {
    if interval.is_zero() {
        return;
    }
    let polled: Vec<_> = providers.list.iter().filter(|p| p.supports(Op::Balance)).cloned().collect();
    if polled.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.signalled() => return,
            _ = tick.tick() => {}
        }
        for p in &polled {
            match query(p).await {
                Ok((amount, currency)) => {
                    metrics.balance.with_label_values(&[&*p.name, currency.as_str()]).set(amount);
                    if let Some(&low) = thresholds.get(&*p.name) {
                        let is_low = amount < low;
                        metrics.balance_low.with_label_values(&[&p.name]).set(if is_low { 1.0 } else { 0.0 });
                        if is_low {
                            tracing::warn!(provider = %p.name, amount, currency = %currency, threshold = low,
                                "the provider balance is below its low_balance threshold; top up the account");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(provider = %p.name, code = %e.code, "balance query failed: {}", e.message)
                }
            }
        }
    }
}

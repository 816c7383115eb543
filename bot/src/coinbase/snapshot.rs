//! The account snapshot (`perps-bot account snapshot`, `--account-snapshot`): an audit of the
//! key and the account as JSON, with warnings a human should act on.

use super::broker::all_accounts;
use super::rest::RestClient;
use super::wire;
use crate::broker::BrokerError;
use serde_json::{Value, json};

/// Clock skew beyond this is flagged: JWTs are valid for 120 s from `nbf`, and the exchange
/// tolerates only a few seconds of `nbf` in the future.
const SKEW_WARNING_MS: i64 = 5_000;

/// Build the snapshot. Fails when the key is rejected (or has no credentials); any other
/// part that cannot be read is `null` with a warning naming why.
pub async fn build(rest: &RestClient) -> Result<Value, BrokerError> {
    let credentials = rest
        .credentials()
        .ok_or_else(|| BrokerError::Unauthorized("the account snapshot needs Coinbase credentials".into()))?;
    let mut warnings: Vec<String> = Vec::new();

    let permissions_raw: Value = wire::decode("key_permissions", &rest.get("/key_permissions", &[]).await?)?;
    let permissions: wire::KeyPermissions = serde_json::from_value(permissions_raw.clone()).unwrap_or_default();
    if permissions.can_transfer.is_true() {
        warnings.push(
            "can_transfer: true: this key can move funds off the account; a trading key should not (create one without the transfer permission)"
                .into(),
        );
    }
    if !permissions.can_trade.is_true() {
        warnings.push("can_trade is not true: this key cannot place orders".into());
    }
    if !permissions.can_view.is_true() {
        warnings.push("can_view is not true: this key cannot read balances or orders".into());
    }

    // Everything else is best effort, but a rejected key is an error wherever it shows.
    let mut part = |name: &str, result: Result<Value, BrokerError>| -> Result<Value, BrokerError> {
        match result {
            Ok(value) => Ok(value),
            Err(e @ BrokerError::Unauthorized(_)) => Err(e),
            Err(error) => {
                warnings.push(format!("{name} unavailable: {error}"));
                Ok(Value::Null)
            }
        }
    };

    let summary = part("transaction_summary", get_json(rest, "/transaction_summary").await)?;
    let fee_tier = summary.get("fee_tier").cloned().unwrap_or(Value::Null);

    let balances = match all_accounts(rest).await {
        Ok(accounts) => balances_json(&accounts),
        Err(error) => part("balances", Err(error))?,
    };
    let portfolios = part("portfolios", get_json(rest, "/portfolios").await)?;
    let portfolios = portfolios.get("portfolios").cloned().unwrap_or(portfolios);

    let before = crate::clock::unix_ms();
    let server_time = part("server_time", get_public_json(rest, "/time").await)?;
    let after = crate::clock::unix_ms();
    let local_ms = before + (after - before) / 2;
    let server_ms = server_millis(&server_time);
    let skew_ms = server_ms.map(|s| s - local_ms);
    if let Some(skew) = skew_ms
        && skew.abs() > SKEW_WARNING_MS
    {
        warnings.push(format!(
            "clock skew {skew} ms against the exchange: signed requests may be refused; fix the host clock (NTP)"
        ));
    }

    Ok(json!({
        "broker": "coinbase",
        "timestamp": crate::clock::rfc3339_now(),
        "api_base_url": rest.base_url(),
        "key": {
            "name": credentials.key_name(),
            "algorithm": credentials.algorithm().jwt_alg(),
            "source": credentials.source(),
        },
        "key_permissions": permissions_raw,
        "warnings": warnings,
        "fee_tier": fee_tier,
        "transaction_summary": summary,
        "balances": balances,
        "portfolios": portfolios,
        "server_time": server_time,
        "local_time": crate::clock::rfc3339_ms(local_ms),
        "clock_skew_ms": skew_ms,
    }))
}

async fn get_json(rest: &RestClient, path: &str) -> Result<Value, BrokerError> {
    wire::decode(path, &rest.get(path, &[]).await?)
}

async fn get_public_json(rest: &RestClient, path: &str) -> Result<Value, BrokerError> {
    wire::decode(path, &rest.get_public(path, &[]).await?)
}

fn server_millis(time: &Value) -> Option<i64> {
    let parsed: wire::ServerTime = serde_json::from_value(time.clone()).ok()?;
    if let Ok(ms) = parsed.epoch_millis.int("epochMillis") {
        return Some(ms);
    }
    if let Ok(Some(secs)) = parsed.epoch_seconds.opt("epochSeconds") {
        return (secs * rust_decimal::Decimal::from(1000)).trunc().try_into().ok();
    }
    parsed
        .iso
        .as_deref()
        .and_then(|iso| wire::parse_time_ms("iso", iso).ok())
}

fn balances_json(accounts: &[wire::Account]) -> Value {
    let rows: Vec<Value> = accounts
        .iter()
        .map(|a| {
            let currency = a.currency.clone().unwrap_or_default();
            let available = a.available_balance.value.opt("available_balance").ok().flatten();
            let hold = a.hold.value.opt("hold").ok().flatten();
            let total = match (available, hold) {
                (Some(x), Some(y)) => x.checked_add(y),
                (x, y) => x.or(y),
            };
            json!({
                "currency": currency,
                "available": available.map(|d| d.to_string()),
                "hold": hold.map(|d| d.to_string()),
                "total": total.map(|d| d.to_string()),
                "account_uuid": a.uuid,
                "type": a.kind,
                "portfolio_uuid": a.retail_portfolio_id,
            })
        })
        .collect();
    Value::Array(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_time_in_any_of_its_forms() {
        assert_eq!(
            server_millis(&json!({"epochMillis": "1700000000123"})),
            Some(1_700_000_000_123)
        );
        assert_eq!(
            server_millis(&json!({"epochSeconds": "1700000000.5"})),
            Some(1_700_000_000_500)
        );
        assert_eq!(
            server_millis(&json!({"iso": "2023-11-14T22:13:20Z"})),
            Some(1_700_000_000_000)
        );
        assert_eq!(server_millis(&json!({"iso": 5})), None);
    }
}

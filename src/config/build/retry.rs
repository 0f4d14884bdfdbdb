//! `[retry]`: how many retries, the full-jitter backoff between them, the
//! retry budget, the deadline of the whole fetch, and which failures may be
//! retried at all.

use crate::config::check::{int_in, positive_duration};
use crate::config::defaults;
use crate::config::error::{ConfigError, Locator};
use crate::config::file::RawRetry;
use crate::config::{RetryConfig, RetryOn};

/// `[retry]`: `backoff_max` may not be below `backoff_base`.
pub(super) fn build(r: &RawRetry, loc: &Locator<'_>) -> Result<RetryConfig, ConfigError> {
    let max_retries = int_in(
        r.max_retries.as_ref(),
        i64::from(defaults::MAX_RETRIES),
        0..=100,
        "a number of retries",
        loc,
    )? as u32;
    let backoff_base = positive_duration(r.backoff_base.as_ref(), defaults::BACKOFF_BASE, loc)?;
    let backoff_max = positive_duration(r.backoff_max.as_ref(), defaults::BACKOFF_MAX, loc)?;
    if backoff_max < backoff_base {
        let at = r
            .backoff_max
            .as_ref()
            .or(r.backoff_base.as_ref())
            .map(|v| v.span());
        return Err(loc.error_at_key(
            at,
            "retry.backoff_max",
            format!("expected backoff_max ({backoff_max:?}) to be at least backoff_base ({backoff_base:?})"),
        ));
    }
    let budget_percent = int_in(
        r.budget_percent.as_ref(),
        i64::from(defaults::BUDGET_PERCENT),
        0..=100,
        "a percentage",
        loc,
    )? as u32;
    // "0s" means off, as leaving it out does.
    let deadline = match &r.deadline {
        None => defaults::RETRY_DEADLINE,
        Some(d) => Some(d.get_ref().0).filter(|d| !d.is_zero()),
    };
    Ok(RetryConfig {
        max_retries,
        backoff_base,
        backoff_max,
        budget_percent,
        deadline,
        retry_on: retry_on(r, loc)?,
    })
}

/// `retry_on`: the words of [`RetryOn::WORDS`] and statuses from 400 to 599.
fn retry_on(r: &RawRetry, loc: &Locator<'_>) -> Result<RetryOn, ConfigError> {
    let mut retry_on = RetryOn::default();
    let words: Vec<String> = match &r.retry_on {
        None => defaults::RETRY_ON.iter().map(|w| w.to_string()).collect(),
        Some(list) => list.get_ref().iter().map(|w| w.get_ref().clone()).collect(),
    };
    for (i, word) in words.iter().enumerate() {
        match word.as_str() {
            "connect" => retry_on.connect = true,
            "first_byte_timeout" => retry_on.first_byte_timeout = true,
            "invalid_response" => retry_on.invalid_response = true,
            status => match status.parse::<u16>() {
                Ok(code) if (400..=599).contains(&code) => retry_on.statuses.push(code),
                _ => {
                    let at = r
                        .retry_on
                        .as_ref()
                        .and_then(|list| list.get_ref().get(i))
                        .map(|w| w.span());
                    return Err(loc.error_at_key(
                        at,
                        "retry.retry_on",
                        format!(
                            "expected {} or a status from 400 to 599, found {status:?}",
                            RetryOn::WORDS.join(", ")
                        ),
                    ));
                }
            },
        }
    }
    Ok(retry_on)
}

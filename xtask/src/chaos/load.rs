//! The order stream of a chaos run: mixed orders (completing, declined, out
//! of stock, scarce), each sent with an idempotency key and retried until the
//! API gives a definitive answer, so an order whose response was lost in a
//! crash is still known.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// What one order request ended as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accepted(String),
    /// 503 after every retry, with no attempt of unknown outcome before:
    /// the API shed load; nothing was created.
    Rejected,
    /// A 4xx, or no definitive answer before the deadline (then the order
    /// may exist without the load knowing it: the run fails loudly).
    Failed(String),
}

#[derive(Debug, Default, Clone)]
pub struct LoadResult {
    /// Request index → outcome.
    pub outcomes: BTreeMap<usize, Outcome>,
    /// Responses 503 seen (including ones later retried successfully).
    pub responses_503: usize,
    /// Connection errors and 5xx retried.
    pub retries: usize,
    pub elapsed: Duration,
}

impl LoadResult {
    pub fn accepted_ids(&self) -> Vec<String> {
        self.outcomes
            .values()
            .filter_map(|o| match o {
                Outcome::Accepted(id) => Some(id.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.outcomes.values().filter(|o| f(o)).count()
    }
}

/// The body of order number `index`, the same for the same seed.
pub fn order_body(seed: u64, index: usize) -> Value {
    let mut rng = StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let customer = format!("chaos-c{}", rng.random_range(0..40));
    let roll = rng.random_range(0..100);
    let (lines, method): (Vec<(String, i64)>, &str) = match roll {
        // Declined by the payment provider.
        0..=14 => (vec![(format!("SKU-00{}", rng.random_range(1..=8)), 1)], "card_declined"),
        // Out of stock.
        15..=24 => (vec![("SKU-EMPTY".to_owned(), 1)], "card"),
        // Scarce: some are reserved, the rest rejected.
        25..=29 => (vec![("SKU-RARE".to_owned(), rng.random_range(1..=3))], "card"),
        _ => {
            let count = rng.random_range(1..=3);
            let mut skus: Vec<u32> = (1..=8).collect();
            let lines = (0..count)
                .map(|_| {
                    let sku = skus.swap_remove(rng.random_range(0..skus.len()));
                    (format!("SKU-00{sku}"), rng.random_range(1..=3))
                })
                .collect();
            (lines, "card")
        }
    };
    json!({
        "customer_id": customer,
        "payment_method": method,
        "lines": lines.iter().map(|(sku, q)| json!({"sku": sku, "quantity": q})).collect::<Vec<_>>(),
    })
}

/// Places `orders` orders with `concurrency` workers at about `rate` per
/// second, retrying each until a definitive answer or `give_up_after`.
pub async fn place_orders(
    order_url: &str,
    seed: u64,
    orders: usize,
    concurrency: usize,
    rate: f64,
    give_up_after: Duration,
) -> LoadResult {
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_else(|_| reqwest::Client::new());
    let next = Arc::new(AtomicUsize::new(0));
    let result = Arc::new(Mutex::new(LoadResult::default()));
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, next, result) = (client.clone(), next.clone(), result.clone());
        let url = format!("{}/orders", order_url.trim_end_matches('/'));
        workers.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                if index >= orders {
                    return;
                }
                // Pace the stream: order i goes out at about i / rate.
                let due = started + interval.mul_f64(index as f64);
                tokio::time::sleep_until(due.into()).await;
                let outcome = place_one(&client, &url, seed, index, give_up_after, &result).await;
                result.lock().await.outcomes.insert(index, outcome);
            }
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
    let mut result = result.lock().await.clone();
    result.elapsed = started.elapsed();
    result
}

/// 503s (in all, with no attempt of unknown outcome among the attempts)
/// after which an order counts as rejected.
const MAX_REJECTIONS: usize = 5;

/// What one request attempt told us.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Accepted(String),
    /// 503: the API shed the request before creating anything.
    Unavailable {
        retry_after: Duration,
    },
    /// A definitive refusal (4xx) or an answer that cannot be used.
    Refused(String),
    /// No answer or a 5xx other than 503: the order may or may not exist.
    Unknown,
}

/// The decision after each answer: retry the same key, or stop with an outcome.
#[derive(Debug, Default)]
struct Attempts {
    rejections: usize,
    /// Once an attempt may have created the order, a 503 no longer means
    /// "nothing was created": only a 202 (the same order, by its key) or a
    /// 4xx ends the retries, or the deadline, as a failure.
    outcome_unknown: bool,
}

impl Attempts {
    /// `Ok(outcome)` to stop, `Err(pause)` to retry after `pause`.
    fn after(&mut self, answer: Answer) -> Result<Outcome, Duration> {
        match answer {
            Answer::Accepted(id) => Ok(Outcome::Accepted(id)),
            Answer::Refused(why) => Ok(Outcome::Failed(why)),
            Answer::Unavailable { retry_after } => {
                self.rejections += 1;
                if !self.outcome_unknown && self.rejections >= MAX_REJECTIONS {
                    Ok(Outcome::Rejected)
                } else {
                    Err(retry_after)
                }
            }
            Answer::Unknown => {
                self.outcome_unknown = true;
                Err(Duration::from_millis(300))
            }
        }
    }

    /// The outcome when the deadline leaves no room for another attempt.
    fn give_up(&self, give_up_after: Duration) -> Outcome {
        if self.outcome_unknown {
            Outcome::Failed(format!(
                "no definitive answer within {give_up_after:?} after an attempt of unknown outcome (the order may exist)"
            ))
        } else {
            Outcome::Failed(format!("no definitive answer within {give_up_after:?}"))
        }
    }
}

async fn place_one(
    client: &reqwest::Client,
    url: &str,
    seed: u64,
    index: usize,
    give_up_after: Duration,
    result: &Mutex<LoadResult>,
) -> Outcome {
    let body = order_body(seed, index);
    let key = format!("chaos-{seed}-{index}");
    let deadline = Instant::now() + give_up_after;
    let mut attempts = Attempts::default();
    loop {
        let response = client.post(url).header("Idempotency-Key", &key).json(&body).send().await;
        let answer = match response {
            Ok(r) if r.status().as_u16() == 202 => {
                let body: Value = r.json().await.unwrap_or(Value::Null);
                match body["order_id"].as_str() {
                    Some(id) => Answer::Accepted(id.to_owned()),
                    None => Answer::Refused(format!("202 without an order id: {body}")),
                }
            }
            Ok(r) if r.status().as_u16() == 503 => {
                result.lock().await.responses_503 += 1;
                let seconds = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                Answer::Unavailable { retry_after: Duration::from_secs(seconds) }
            }
            Ok(r) if r.status().is_client_error() => {
                let status = r.status();
                Answer::Refused(format!("{status}: {}", r.text().await.unwrap_or_default()))
            }
            // 5xx or no answer (the order service is down or was killed
            // mid-request): the same key makes the retry safe.
            _ => {
                result.lock().await.retries += 1;
                Answer::Unknown
            }
        };
        let pause = match attempts.after(answer) {
            Ok(outcome) => return outcome,
            Err(pause) => pause,
        };
        if Instant::now() + pause > deadline {
            return attempts.give_up(give_up_after);
        }
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_reproducible_and_mixed() {
        assert_eq!(order_body(1, 5), order_body(1, 5));
        let bodies: Vec<Value> = (0..300).map(|i| order_body(3, i)).collect();
        let declined = bodies.iter().filter(|b| b["payment_method"] == "card_declined").count();
        let empty = bodies.iter().filter(|b| b["lines"][0]["sku"] == "SKU-EMPTY").count();
        assert!(declined > 20 && empty > 10, "declined {declined}, out of stock {empty}");
    }

    const PAUSE: Duration = Duration::from_secs(1);

    fn unavailable() -> Answer {
        Answer::Unavailable { retry_after: PAUSE }
    }

    #[test]
    fn only_503s_end_as_rejected() {
        let mut attempts = Attempts::default();
        for _ in 1..MAX_REJECTIONS {
            assert_eq!(attempts.after(unavailable()), Err(PAUSE));
        }
        assert_eq!(attempts.after(unavailable()), Ok(Outcome::Rejected));
    }

    #[test]
    fn after_an_attempt_of_unknown_outcome_503s_never_reject() {
        let mut attempts = Attempts::default();
        assert!(attempts.after(Answer::Unknown).is_err());
        for _ in 0..3 * MAX_REJECTIONS {
            assert_eq!(attempts.after(unavailable()), Err(PAUSE), "the order may exist: keep asking");
        }
        assert_eq!(attempts.after(Answer::Accepted("o-1".into())), Ok(Outcome::Accepted("o-1".into())));
        let Outcome::Failed(why) = attempts.give_up(Duration::from_secs(30)) else { panic!("not a failure") };
        assert!(why.contains("may exist"), "{why}");
    }

    #[test]
    fn an_unknown_outcome_after_some_503s_also_stops_rejection() {
        let mut attempts = Attempts::default();
        for _ in 1..MAX_REJECTIONS {
            assert!(attempts.after(unavailable()).is_err());
        }
        assert!(attempts.after(Answer::Unknown).is_err());
        assert_eq!(attempts.after(unavailable()), Err(PAUSE));
        assert_eq!(attempts.after(Answer::Refused("422".into())), Ok(Outcome::Failed("422".into())));
    }
}

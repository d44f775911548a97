//! `sleep`: payload `{"ms": N}`, waits N ms, reporting progress (demos,
//! tests, benchmarks of long tasks).

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use skein_raft::fsm::Outcome;
use skein_transport::LeasedTask;

use super::{TaskContext, Transform};

pub struct Sleep;

impl Transform for Sleep {
    fn kind(&self) -> &'static str {
        "sleep"
    }

    fn run<'a>(&'a self, task: &'a LeasedTask, ctx: &'a TaskContext) -> BoxFuture<'a, Option<Outcome>> {
        Box::pin(sleep(task, ctx))
    }
}

#[derive(Deserialize)]
struct SleepPayload {
    ms: u64,
}

async fn sleep(task: &LeasedTask, ctx: &TaskContext) -> Option<Outcome> {
    let ms = match serde_json::from_str::<SleepPayload>(&task.payload) {
        Ok(p) => p.ms,
        Err(e) => return Some(Outcome::Permanent { error: format!("sleep payload must be {{\"ms\": N}}: {e}") }),
    };
    let total = Duration::from_millis(ms);
    let start = tokio::time::Instant::now();
    let step = Duration::from_millis(500).min(total.max(Duration::from_millis(1)));
    loop {
        let elapsed = start.elapsed();
        if elapsed >= total {
            return Some(Outcome::Succeeded { result: format!("{{\"slept_ms\":{ms}}}") });
        }
        tokio::select! {
            _ = ctx.cancel.cancelled() => return None,
            _ = tokio::time::sleep(step.min(total - elapsed)) => {}
        }
        let done = start.elapsed().as_secs_f32() / total.as_secs_f32().max(f32::EPSILON);
        ctx.report(done.min(1.0), format!("slept {} of {ms} ms", start.elapsed().as_millis().min(ms as u128)));
    }
}

//! The fleet's allow lists applied to what a caller asks for: the programs
//! of `exec` tasks and `exec` steps, and the datasets of plans (see
//! `skein_raft::fsm::policy`). The API checks them before it proposes an
//! enqueue or a plan (403); the worker checks them again right before it
//! starts a program, against its own applied state.

use serde::Deserialize;
use skein_plan::{Entity, MigrationSpec, Step};
use skein_raft::fsm::policy::PolicyState;
use skein_raft::fsm::NewTask;

/// The kind of task that runs a program.
pub const EXEC_KIND: &str = "exec";

/// The program (and arguments) an `exec` task's payload names.
pub fn exec_command(payload: &str) -> Result<Vec<String>, String> {
    #[derive(Deserialize)]
    struct Payload {
        command: Vec<String>,
    }
    let p: Payload = serde_json::from_str(payload)
        .map_err(|e| format!("an exec payload is {{\"command\": [\"/abs/program\", \"arg\", ...]}}: {e}"))?;
    if p.command.is_empty() {
        return Err("an exec payload's command is empty".into());
    }
    Ok(p.command)
}

/// Whether every `exec` task of a batch names an allowed program. The
/// message names the task (by its place in the batch) and the program.
pub fn check_tasks(policy: &PolicyState, tasks: &[NewTask]) -> Result<(), String> {
    if !policy.enforce {
        return Ok(());
    }
    for (i, t) in tasks.iter().enumerate() {
        if t.kind != EXEC_KIND {
            continue;
        }
        let command = exec_command(&t.payload).map_err(|e| format!("task {i}: {e}"))?;
        policy.check_exec(&command).map_err(|e| if tasks.len() > 1 { format!("task {i}: {e}") } else { e })?;
    }
    Ok(())
}

/// Whether a migration may run: its source and target under allowed roots
/// (lexically: the worker resolves links too), its `exec` steps allowed.
pub fn check_migration(policy: &PolicyState, spec: &MigrationSpec) -> Result<(), String> {
    let mut datasets: Vec<(String, &str)> = spec
        .sources
        .iter()
        .map(|(name, d)| {
            (if spec.sources.len() == 1 { "source".to_string() } else { format!("source {name}") }, d.url.as_str())
        })
        .collect();
    datasets.push(("target".to_string(), spec.target.url.as_str()));
    for (which, url) in datasets {
        let which = which.as_str();
        let root = policy.root_of(url).map_err(|e| format!("{which}: {e}"))?;
        // A local path is also resolved on this node (links included), as
        // the worker does again before it opens it.
        if let (Some(root), Some(path)) = (root, url.trim().strip_prefix("file://").or(Some(url.trim()))) {
            if root.root.url.starts_with("file://") && path.starts_with('/') {
                skein_migrate::roots::confine(std::path::Path::new(path), root, which, false)
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    for (i, step) in spec.steps.iter().enumerate() {
        let at = |e: String| format!("step {} ({}): {e}", i + 1, step.type_name());
        match step {
            Step::Exec(exec) => policy.check_exec(&exec.command).map_err(at)?,
            Step::Sql { query } => skein_migrate::check_query(query).map_err(at)?,
            Step::Validate(v) => {
                for sql in [v.row_count.as_deref(), v.assert.as_deref()].into_iter().flatten() {
                    skein_migrate::check_query(sql).or_else(|e| expression_or(sql, e)).map_err(at)?;
                }
            }
            Step::Copy { .. } => {}
        }
    }
    Ok(())
}

/// A validation's `row_count` is `equal` or an expression, not a query:
/// only text that parses as a statement other than a query is refused.
fn expression_or(sql: &str, refused: String) -> Result<(), String> {
    let first = sql.split_whitespace().next().unwrap_or("").to_ascii_lowercase();
    if matches!(first.as_str(), "copy" | "create" | "insert" | "set" | "drop" | "delete" | "update" | "prepare") {
        Err(refused)
    } else {
        Ok(())
    }
}

/// [`check_migration`] for a catalog entity (entities that are not plans
/// pass). The message names the plan.
pub fn check_entity(policy: &PolicyState, entity: &Entity) -> Result<(), String> {
    if !entity.is_plan() {
        return Ok(());
    }
    let spec = entity.migration().map_err(|e| e.to_string())?;
    check_migration(policy, &spec).map_err(|e| format!("plan {}: {e}", entity.entity_ref()))
}

/// [`check_entity`] for a stored document (a plan about to run).
pub fn check_document(policy: &PolicyState, document: &str, entity_ref: &str) -> Result<(), String> {
    if !policy.enforce {
        return Ok(());
    }
    let entity = Entity::from_json(document, entity_ref).map_err(|e| e.to_string())?;
    check_entity(policy, &entity)
}

#[cfg(test)]
mod tests {
    use skein_raft::fsm::policy::ExecRule;

    use super::*;

    #[test]
    fn exec_tasks_are_checked_and_others_pass() {
        let mut p = PolicyState { enforce: true, ..Default::default() };
        let exec = |cmd: &str| NewTask::new("q", "exec", &format!("{{\"command\": {cmd}}}"));
        let tasks = vec![NewTask::new("q", "noop", "{}"), exec(r#"["/usr/bin/touch", "/tmp/x"]"#)];
        let e = check_tasks(&p, &tasks).unwrap_err();
        assert!(e.starts_with("task 1: program /usr/bin/touch is not on the exec allow list"), "{e}");
        p.programs.push(ExecRule {
            program: "/usr/bin/touch".into(),
            args: vec![],
            created_ms: 0,
            created_by: "t".into(),
        });
        check_tasks(&p, &tasks).unwrap();
        assert!(check_tasks(&p, &[exec("[]")]).unwrap_err().contains("empty"));
        assert!(check_tasks(&p, &[NewTask::new("q", "exec", "{}")]).unwrap_err().contains("exec payload"));
        p.enforce = false;
        check_tasks(&p, &[NewTask::new("q", "exec", "{}")]).unwrap();
    }
}

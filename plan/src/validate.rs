//! Checks over a set of entities before anything is stored: no entity twice,
//! every `dependsOn` names an entity in the set or already in the catalog,
//! and no dependency cycle (counting the catalog's own edges).

use std::collections::BTreeMap;

use crate::entity::Entity;
use crate::entity_ref::EntityRef;
use crate::error::{PlanError, PlanErrors};

/// What the catalog already holds: each entity's `dependsOn`.
pub type Catalog = BTreeMap<EntityRef, Vec<EntityRef>>;

/// Checks `entities` as one batch to store on top of `catalog`. Reports
/// every problem found.
pub fn validate_set(entities: &[Entity], catalog: &Catalog) -> Result<(), PlanErrors> {
    let mut errors = Vec::new();
    let mut seen: BTreeMap<EntityRef, &Entity> = BTreeMap::new();
    for e in entities {
        let r = e.entity_ref();
        if let Some(first) = seen.get(&r) {
            errors.push(PlanError::new(
                &e.origin,
                Some(r.to_string()),
                Some("metadata.name"),
                format!("defined twice (also in {})", first.origin),
            ));
            continue;
        }
        if e.is_plan() {
            if let Some(q) = e.queue() {
                if !valid_queue(&q) {
                    errors.push(PlanError::new(
                        &e.origin,
                        Some(r.to_string()),
                        Some("metadata.annotations.honk/queue"),
                        format!("{q:?} is not a valid queue name (1-200 letters, digits and . _ : / -)"),
                    ));
                }
            }
        }
        seen.insert(r, e);
    }
    // The graph after the batch: the catalog's edges, replaced by the batch's.
    let mut graph: Catalog = catalog.clone();
    for (r, e) in &seen {
        graph.insert(r.clone(), e.depends_on().unwrap_or_default());
    }
    for (r, e) in &seen {
        let deps = match e.depends_on() {
            Ok(d) => d,
            Err(err) => {
                errors.push(err);
                continue;
            }
        };
        for (i, d) in deps.iter().enumerate() {
            if !graph.contains_key(d) {
                errors.push(PlanError::new(
                    &e.origin,
                    Some(r.to_string()),
                    Some(&format!("spec.dependsOn[{i}]")),
                    format!("{d} is neither in this batch nor in the catalog"),
                ));
            }
        }
    }
    if let Some(cycle) = find_cycle(&graph, seen.keys()) {
        let first = &cycle[0];
        let origin = seen.get(first).map_or("", |e| e.origin.as_str());
        let path: Vec<String> = cycle.iter().map(ToString::to_string).collect();
        errors.push(PlanError::new(
            origin,
            Some(first.to_string()),
            Some("spec.dependsOn"),
            format!("dependency cycle: {} -> {}", path.join(" -> "), first),
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(PlanErrors(errors))
    }
}

/// Queue names as the state machine accepts them.
pub fn valid_queue(q: &str) -> bool {
    !q.is_empty() && q.len() <= 200 && q.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b))
}

/// A cycle through any of `starts`, as the list of its entities, if the
/// graph has one. Iterative depth-first search (no recursion limit).
pub fn find_cycle<'a>(graph: &Catalog, starts: impl IntoIterator<Item = &'a EntityRef>) -> Option<Vec<EntityRef>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Active,
        Done,
    }
    let mut marks: BTreeMap<&EntityRef, Mark> = BTreeMap::new();
    for start in starts {
        if marks.contains_key(start) {
            continue;
        }
        // (node, index of the next edge to follow)
        let mut stack: Vec<(&EntityRef, usize)> = vec![(start, 0)];
        marks.insert(start, Mark::Active);
        while let Some((node, next)) = stack.last_mut() {
            let edges = graph.get(*node).map(Vec::as_slice).unwrap_or(&[]);
            if let Some(dep) = edges.get(*next) {
                *next += 1;
                let Some((dep, _)) = graph.get_key_value(dep) else { continue };
                match marks.get(dep) {
                    Some(Mark::Active) => {
                        let pos = stack.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                        return Some(stack[pos..].iter().map(|(n, _)| (*n).clone()).collect());
                    }
                    Some(Mark::Done) => {}
                    None => {
                        marks.insert(dep, Mark::Active);
                        stack.push((dep, 0));
                    }
                }
            } else {
                marks.insert(node, Mark::Done);
                stack.pop();
            }
        }
    }
    None
}

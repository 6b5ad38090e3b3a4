//! Runs the model checker over one configuration and reports what it found:
//! states, time, and each counterexample as readable steps.

use crate::actions::Action;
use crate::config::ModelConfig;
use crate::describe;
use crate::model::OutboxProtocol;
use crate::properties::SAFETY;
use crate::state::SystemState;
use stateright::{Checker, HasDiscoveries, Model, Path};
use std::fmt;
use std::time::{Duration, Instant};

/// Checker threads: the machines this runs on have two cores.
const THREADS: usize = 2;

pub struct CheckReport {
    pub config: ModelConfig,
    pub states: usize,
    pub unique_states: usize,
    pub max_depth: usize,
    pub elapsed: Duration,
    /// Each safety property broken, with the shortest path that breaks it.
    pub counterexamples: Vec<Counterexample>,
    /// The `sometimes` properties for which an example was found.
    pub examples_found: Vec<&'static str>,
}

pub struct Counterexample {
    pub property: &'static str,
    pub steps: Vec<String>,
}

/// How to search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Search {
    /// Every state, depth first, with the relays' symmetry reduced
    /// (stateright reduces symmetry in depth-first search only).
    Exhaustive,
    /// Breadth first until there is a counterexample to each of these
    /// properties: for the variants expected to break them.
    CounterexamplesTo(&'static [&'static str]),
}

pub fn run(config: ModelConfig, search: Search) -> CheckReport {
    let started = Instant::now();
    match search {
        Search::Exhaustive => {
            let model = OutboxProtocol::new(config);
            let checker = model.checker().threads(THREADS).symmetry_fn(SystemState::with_relays_sorted).spawn_dfs();
            report(checker.join(), started)
        }
        Search::CounterexamplesTo(properties) => {
            // One search per property, each stopping as soon as it has a
            // counterexample: stateright keeps the last one it met, which
            // grows longer the longer a search goes on. Short, then, though
            // not always the shortest.
            let mut combined = CheckReport::empty(config.clone());
            for &property in properties {
                let model = OutboxProtocol::new(config.clone());
                let wanted = HasDiscoveries::AnyOf([property].into_iter().collect());
                let mut found = report(model.checker().finish_when(wanted).spawn_bfs().join(), started);
                found.counterexamples.retain(|c| c.property == property);
                combined.merge(found);
            }
            combined
        }
    }
}

fn report(checker: impl Checker<OutboxProtocol>, started: Instant) -> CheckReport {
    let elapsed = started.elapsed();
    let model = checker.model();
    let discoveries = checker.discoveries();
    let counterexamples = SAFETY
        .iter()
        .filter_map(|&property| {
            discoveries.get(property).map(|path| Counterexample { property, steps: steps(model, path.clone()) })
        })
        .collect();
    let examples_found = model
        .properties()
        .iter()
        .map(|p| p.name)
        .filter(|name| !SAFETY.contains(name) && discoveries.contains_key(name))
        .collect();
    CheckReport {
        config: model.config.clone(),
        states: checker.state_count(),
        unique_states: checker.unique_state_count(),
        max_depth: checker.max_depth(),
        elapsed,
        counterexamples,
        examples_found,
    }
}

fn steps(model: &OutboxProtocol, path: Path<SystemState, Action>) -> Vec<String> {
    let mut steps = Vec::new();
    for (state, action) in path.into_vec() {
        let Some(action) = action else { continue };
        match model.format_step(&state, action) {
            Some(step) => steps.push(step),
            None => steps.push(describe::step(&state, action)),
        }
    }
    steps
}

impl CheckReport {
    fn empty(config: ModelConfig) -> Self {
        Self {
            config,
            states: 0,
            unique_states: 0,
            max_depth: 0,
            elapsed: Duration::ZERO,
            counterexamples: Vec::new(),
            examples_found: Vec::new(),
        }
    }

    /// Adds another search of the same model: its states, its findings.
    fn merge(&mut self, other: CheckReport) {
        self.states += other.states;
        self.unique_states += other.unique_states;
        self.max_depth = self.max_depth.max(other.max_depth);
        self.elapsed = other.elapsed;
        self.counterexamples.extend(other.counterexamples);
        for example in other.examples_found {
            if !self.examples_found.contains(&example) {
                self.examples_found.push(example);
            }
        }
    }

    pub fn counterexample(&self, property: &str) -> Option<&Counterexample> {
        self.counterexamples.iter().find(|c| c.property == property)
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:?}: {} unique states ({} visited), depth {}, {:.2?}",
            self.config.variant, self.unique_states, self.states, self.max_depth, self.elapsed
        )?;
        if self.counterexamples.is_empty() {
            writeln!(f, "  no counterexample")?;
        }
        for counterexample in &self.counterexamples {
            write!(f, "{counterexample}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  counterexample to \"{}\":", self.property)?;
        for (i, step) in self.steps.iter().enumerate() {
            writeln!(f, "  {:>2}. {step}", i + 1)?;
        }
        Ok(())
    }
}

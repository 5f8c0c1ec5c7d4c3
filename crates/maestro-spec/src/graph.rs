//! The job graph. A [`Graph`] is only ever built sealed: ids are valid, there is no cycle,
//! and the topological order and dispatch priorities are computed once.

use crate::gate::Gate;
use crate::model::{Job, JobId};

/// A dependency cycle, as job ids in order (the first needs the second … the last needs
/// the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle(pub Vec<JobId>);

/// An acyclic job graph.
#[derive(Clone, Debug)]
pub struct Graph {
    jobs: Vec<Job>,
    dependents: Vec<Vec<JobId>>,
    topo: Vec<JobId>,
    priority: Vec<usize>,
}

impl Graph {
    /// Seals a list of jobs whose `needs` are indices into the list.
    ///
    /// # Errors
    /// The first dependency cycle found.
    ///
    /// # Panics
    /// When a `needs` id is out of range or a job's id is not its index (a bug in the caller).
    pub fn seal(jobs: Vec<Job>) -> Result<Graph, Cycle> {
        let n = jobs.len();
        for (i, j) in jobs.iter().enumerate() {
            assert_eq!(j.id.0, i, "job ids must be their index");
            assert!(j.needs.iter().all(|d| d.0 < n), "needs out of range");
        }
        let mut dependents = vec![Vec::new(); n];
        for j in &jobs {
            for d in &j.needs {
                dependents[d.0].push(j.id);
            }
        }
        // Kahn's algorithm, stable by declaration order.
        let mut indegree: Vec<usize> = jobs.iter().map(|j| j.needs.len()).collect();
        let mut ready: std::collections::VecDeque<usize> =
            (0..n).filter(|i| indegree[*i] == 0).collect();
        let mut topo = Vec::with_capacity(n);
        while let Some(i) = ready.pop_front() {
            topo.push(JobId(i));
            for d in &dependents[i] {
                indegree[d.0] -= 1;
                if indegree[d.0] == 0 {
                    ready.push_back(d.0);
                }
            }
        }
        if topo.len() != n {
            return Err(find_cycle(&jobs, &indegree));
        }
        // Priority: a gated job's gate index; an ungated job takes the most urgent priority
        // of the jobs that need it; a job nothing gated needs runs last.
        let mut priority = vec![Gate::ALL.len(); n];
        for id in topo.iter().rev() {
            let own = jobs[id.0].gate.map(Gate::index);
            priority[id.0] = match own {
                Some(p) => p,
                None => dependents[id.0]
                    .iter()
                    .map(|d| priority[d.0])
                    .min()
                    .unwrap_or(Gate::ALL.len()),
            };
        }
        Ok(Graph {
            jobs,
            dependents,
            topo,
            priority,
        })
    }

    #[must_use]
    pub fn jobs(&self) -> &[Job] {
        &self.jobs
    }

    #[must_use]
    pub fn job(&self, id: JobId) -> &Job {
        &self.jobs[id.0]
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Jobs that list `id` in their `needs`.
    #[must_use]
    pub fn dependents(&self, id: JobId) -> &[JobId] {
        &self.dependents[id.0]
    }

    /// Every job, dependencies before dependents.
    #[must_use]
    pub fn topo_order(&self) -> &[JobId] {
        &self.topo
    }

    /// Dispatch priority: lower runs first; equals the gate index for gated jobs.
    #[must_use]
    pub fn priority(&self, id: JobId) -> usize {
        self.priority[id.0]
    }

    /// Looks a job up by name.
    #[must_use]
    pub fn find(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// Jobs named `name`, or the shards of the job written as `name`.
    #[must_use]
    pub fn select(&self, name: &str) -> Vec<JobId> {
        self.jobs
            .iter()
            .filter(|j| j.name == name || j.base_name == name)
            .map(|j| j.id)
            .collect()
    }

    /// `targets` and everything they need, transitively, in topological order.
    #[must_use]
    pub fn closure(&self, targets: &[JobId]) -> Vec<JobId> {
        let mut keep = vec![false; self.jobs.len()];
        let mut stack: Vec<JobId> = targets.to_vec();
        while let Some(id) = stack.pop() {
            if !keep[id.0] {
                keep[id.0] = true;
                stack.extend(self.jobs[id.0].needs.iter().copied());
            }
        }
        self.topo.iter().copied().filter(|id| keep[id.0]).collect()
    }
}

/// Finds one cycle among the jobs Kahn's algorithm could not order.
fn find_cycle(jobs: &[Job], indegree: &[usize]) -> Cycle {
    let stuck: Vec<bool> = indegree.iter().map(|d| *d > 0).collect();
    // Every stuck job has a stuck dependency (otherwise it would have been ordered), so
    // walking needs among stuck jobs must revisit a job: that closes a cycle.
    let Some(start) = stuck.iter().position(|s| *s) else {
        return Cycle(Vec::new());
    };
    let mut seen_at = vec![usize::MAX; jobs.len()];
    let mut path = Vec::new();
    let mut cur = start;
    loop {
        if seen_at[cur] != usize::MAX {
            return Cycle(path[seen_at[cur]..].iter().copied().map(JobId).collect());
        }
        seen_at[cur] = path.len();
        path.push(cur);
        match jobs[cur].needs.iter().find(|d| stuck[d.0]) {
            Some(next) => cur = next.0,
            None => return Cycle(path.into_iter().map(JobId).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    pub(crate) fn job(i: usize, needs: &[usize], gate: Option<Gate>) -> Job {
        Job {
            id: JobId(i),
            name: format!("j{i}"),
            base_name: format!("j{i}"),
            description: None,
            run: "true".into(),
            gate,
            needs: needs.iter().copied().map(JobId).collect(),
            inputs: vec![],
            outputs: vec![],
            reports: vec![],
            env: BTreeMap::new(),
            dir: None,
            timeout: crate::model::DEFAULT_TIMEOUT,
            retries: 0,
            shard: None,
            cache: true,
            toolchains: BTreeMap::new(),
            module: None,
            deploys: vec![],
        }
    }

    #[test]
    fn topo_order_respects_needs() {
        let g = Graph::seal(vec![
            job(0, &[2], None),
            job(1, &[], None),
            job(2, &[1], None),
        ])
        .expect("acyclic");
        let pos = |i: usize| {
            g.topo_order()
                .iter()
                .position(|j| j.0 == i)
                .expect("present")
        };
        assert!(pos(1) < pos(2) && pos(2) < pos(0));
        assert_eq!(g.dependents(JobId(1)), &[JobId(2)]);
    }

    #[test]
    fn cycle_is_named_in_order() {
        let err = Graph::seal(vec![
            job(0, &[], None),
            job(1, &[3], None),
            job(2, &[1], None),
            job(3, &[2, 0], None),
        ])
        .expect_err("cycle");
        let mut ids: Vec<usize> = err.0.iter().map(|j| j.0).collect();
        assert_eq!(ids.len(), 3);
        // Each job in the cycle needs the next one.
        ids.push(ids[0]);
        assert!(
            ids.windows(2)
                .all(|w| [(1, 3), (3, 2), (2, 1)].contains(&(w[0], w[1])))
        );
    }

    #[test]
    fn ungated_jobs_take_priority_of_their_dependents() {
        let g = Graph::seal(vec![
            job(0, &[], None),
            job(1, &[0], Some(Gate::Unit)),
            job(2, &[], Some(Gate::Lint)),
            job(3, &[], None),
        ])
        .expect("acyclic");
        assert_eq!(g.priority(JobId(0)), Gate::Unit.index());
        assert_eq!(g.priority(JobId(2)), 0);
        assert_eq!(g.priority(JobId(3)), Gate::ALL.len());
        assert_eq!(g.closure(&[JobId(1)]), vec![JobId(0), JobId(1)]);
    }
}

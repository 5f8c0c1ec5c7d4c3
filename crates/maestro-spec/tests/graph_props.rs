//! Property tests of the sealed graph: random DAGs always seal with a valid topological
//! order; adding a back edge always yields a cycle that really is one.

use std::collections::BTreeMap;

use maestro_spec::graph::Graph;
use maestro_spec::{Job, JobId};
use proptest::prelude::*;

fn job(i: usize, needs: Vec<usize>) -> Job {
    Job {
        id: JobId(i),
        name: format!("j{i}"),
        base_name: format!("j{i}"),
        description: None,
        run: "true".into(),
        gate: None,
        needs: needs.into_iter().map(JobId).collect(),
        inputs: vec![],
        outputs: vec![],
        reports: vec![],
        env: BTreeMap::new(),
        dir: None,
        timeout: maestro_spec::model::DEFAULT_TIMEOUT,
        retries: 0,
        shard: None,
        cache: true,
        toolchains: BTreeMap::new(),
        module: None,
        deploys: vec![],
    }
}

/// Edges only from a job to earlier jobs: acyclic by construction.
fn dag() -> impl Strategy<Value = Vec<Vec<usize>>> {
    (1usize..60).prop_flat_map(|n| {
        (0..n)
            .map(|i| {
                if i == 0 {
                    Just(Vec::new()).boxed()
                } else {
                    prop::collection::btree_set(0..i, 0..4.min(i) + 1)
                        .prop_map(|s| s.into_iter().collect())
                        .boxed()
                }
            })
            .collect::<Vec<_>>()
    })
}

proptest! {
    #[test]
    fn dags_seal_in_topological_order(needs in dag()) {
        let jobs: Vec<Job> = needs.iter().cloned().enumerate().map(|(i, n)| job(i, n)).collect();
        let g = Graph::seal(jobs).expect("a DAG seals");
        let mut pos = vec![0; needs.len()];
        for (p, id) in g.topo_order().iter().enumerate() {
            pos[id.0] = p;
        }
        prop_assert_eq!(g.topo_order().len(), needs.len());
        for (i, ns) in needs.iter().enumerate() {
            for n in ns {
                prop_assert!(pos[*n] < pos[i], "{} must come before {}", n, i);
            }
        }
    }

    #[test]
    fn a_back_edge_is_reported_as_a_real_cycle(needs in dag(), pick in any::<prop::sample::Index>()) {
        // Find an edge i -> n and add n -> i: that closes a cycle.
        let edges: Vec<(usize, usize)> = needs.iter().enumerate().flat_map(|(i, ns)| ns.iter().map(move |n| (i, *n))).collect();
        prop_assume!(!edges.is_empty());
        let (i, n) = edges[pick.index(edges.len())];
        let mut needs = needs;
        needs[n].push(i);
        let jobs: Vec<Job> = needs.iter().cloned().enumerate().map(|(k, ns)| job(k, ns)).collect();
        let cycle = Graph::seal(jobs).expect_err("must find the cycle").0;
        prop_assert!(!cycle.is_empty());
        for w in 0..cycle.len() {
            let (a, b) = (cycle[w].0, cycle[(w + 1) % cycle.len()].0);
            prop_assert!(needs[a].contains(&b), "reported edge {} -> {} does not exist", a, b);
        }
    }
}

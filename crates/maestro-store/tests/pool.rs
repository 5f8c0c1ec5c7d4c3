//! The pool after the database dropped its connections (a restart, a failover, backends
//! terminated): one call may fail, and the next ones get fresh connections — no stale
//! pooled connection is handed out again.

use maestro_store::pg::Throwaway;
use maestro_store::pool::StorePool;

fn terminate_backends(db: &str) -> usize {
    let mut admin =
        postgres::Client::connect(Throwaway::ADMIN, postgres::NoTls).expect("admin connection");
    admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db],
        )
        .expect("terminate")
        .len()
}

#[test]
fn after_the_backends_are_terminated_at_most_one_call_fails() {
    let db = Throwaway::new("pool");
    let name = db.url.rsplit('/').next().expect("name").to_owned();
    let pool = StorePool::open(&db.url, 4).expect("pool");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for round in 0..3 {
        // Four connections in the pool, all idle.
        rt.block_on(async {
            let calls: Vec<_> = (0..4)
                .map(|_| {
                    let p = std::sync::Arc::clone(&pool);
                    tokio::spawn(async move {
                        p.with(|s| {
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            s.list_runs(None, 1)
                        })
                        .await
                    })
                })
                .collect();
            for c in calls {
                c.await.expect("task").expect("a healthy call");
            }
        });
        assert!(
            terminate_backends(&name) >= 1,
            "round {round}: backends were there"
        );
        let failures = rt.block_on(async {
            let mut failures = 0;
            for _ in 0..4 {
                if pool.with(|s| s.list_runs(None, 1)).await.is_err() {
                    failures += 1;
                }
            }
            failures
        });
        assert!(
            failures <= 1,
            "round {round}: {failures} of 4 calls failed on stale connections"
        );
    }
    drop(rt);
    drop(pool);
}

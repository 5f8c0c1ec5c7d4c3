//! Command-line arguments (clap derive). No logic here: `settings` validates and merges.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "maestro",
    version,
    about = "Maestro Conductor: from pull request to production, the same way every time"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct Common {
    /// The pipeline file.
    #[arg(long, short = 'f', default_value = "maestro.yaml", global = true)]
    pub file: PathBuf,
    /// Maestro's working directory (store, cache, logs). Default: `.maestro/` beside the
    /// pipeline file.
    #[arg(long, env = "MAESTRO_HOME", global = true)]
    pub home: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// Live progress on a terminal, plain lines otherwise (and when CI=true).
    Auto,
    /// Live progress with colours.
    Human,
    /// One line per finished job.
    Plain,
    /// One JSON object per event.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the pipeline: gates in order, cached where nothing changed.
    Run(RunArgs),
    /// Check maestro.yaml and the modules it uses; print every problem.
    Validate {
        #[command(flatten)]
        common: Common,
        /// Machine-readable diagnostics.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of maestro.yaml (or of module files).
    Schema {
        /// The schema of module files instead.
        #[arg(long)]
        module: bool,
    },
    /// Past runs.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// The content-addressed cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Signing keys: ECDSA P-256 (cosign-compatible) or Ed25519.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Sign artifacts: one Sigstore bundle (v0.3 JSON) per artifact.
    Sign(SignArgs),
    /// Attest how artifacts were built: SLSA v1 provenance from the run that built them,
    /// signed in a DSSE envelope inside a Sigstore bundle.
    Attest(AttestArgs),
    /// Verify an artifact's signature and, when given, its provenance against a policy;
    /// or (`verify bundle FILE`) a release's evidence bundle, offline.
    Verify(VerifyCmd),
    /// Software bill of materials from lockfiles: CycloneDX 1.6 or SPDX 2.3 JSON.
    Sbom(SbomArgs),
    /// Known vulnerabilities: lockfiles against OSV advisories in a local directory.
    Sca(ScaArgs),
    /// License policy: each package's declared SPDX expression against allow/deny lists.
    Licenses(LicensesArgs),
    /// Secrets in files (and, with --git, in every commit), with gitleaks-format rules.
    Secrets(SecretsArgs),
    /// Build a job twice from the same commit in two clean directories and compare its
    /// outputs.
    Repro(ReproArgs),
    /// Policy as code: Rego policies (OPA-compatible, conftest conventions) over files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The migration gate: up/down/plan per migration, up→down→up on a shadow database,
    /// schema diff and SQL lint.
    Migrate {
        #[command(subcommand)]
        command: MigrateCommand,
    },
    /// The audit log: append-only, Merkle-hashed (RFC 6962), signed checkpoints (C2SP),
    /// proofs, verification and offline exports.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The conductor: an HTTP API over the store, every endpoint behind an API token and
    /// the Rego authorization policy.
    Serve(ServeArgs),
    /// The conductor's API tokens: create (shown once), list, revoke.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The conductor's API: the persisted-operation manifest, the policy matrix check and
    /// the coverage reports.
    Api {
        #[command(subcommand)]
        command: ApiCommand,
    },
    /// Deploy an artifact to an environment of a conductor, by canary: the conductor
    /// verifies its signature, provenance and SBOM, then steps traffic over while it
    /// compares the canary with stable, and rolls back by itself on a regression.
    Deploy(DeployArgs),
    /// Roll an environment back to its last good release (the one promoted before the
    /// current stable release, or `--to VERSION`), at once.
    Rollback(RollbackArgs),
    /// A deployment's canary: show its report, or pause, resume, abort or promote it (each
    /// with a reason, audited).
    Canary {
        #[command(subcommand)]
        command: CanaryCommand,
    },
    /// Service level objectives (OpenSLO v1).
    Slo {
        #[command(subcommand)]
        command: SloCommand,
    },
    /// Releases: the next version and its notes from the Conventional Commits since the
    /// last release tag; the release train on the conductor (cut, promote through the
    /// stages, status, rollback).
    Release {
        #[command(subcommand)]
        command: ReleaseCommand,
    },
    /// Feature flags: the registry (flagd format, with owners, safe defaults, kill
    /// switches and expiry) checked, listed and evaluated.
    Flags {
        #[command(subcommand)]
        command: FlagsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum FlagsCommand {
    /// Check the registry: every problem, named by its JSON path.
    Validate {
        #[arg(long, short = 'f', default_value = maestro_flags::DEFAULT_PATH)]
        file: PathBuf,
    },
    /// Every flag with its state, safe default, kill variant, owner, risk and expiry.
    List {
        #[arg(long, short = 'f', default_value = maestro_flags::DEFAULT_PATH)]
        file: PathBuf,
        #[arg(long)]
        json: bool,
        /// Days an expired flag warns before it counts as failing.
        #[arg(long, default_value_t = 14)]
        grace_days: i64,
    },
    /// The flag lint, a pipeline gate: changes to risky paths (`--risky` globs, or files
    /// marked `maestro:risky`) since BASE must reference a registered flag; flags past
    /// their expiry warn for `--grace-days`, then fail. Exit 1 on a failure.
    Lint {
        #[arg(long, short = 'f', default_value = maestro_flags::DEFAULT_PATH)]
        file: PathBuf,
        /// The repository.
        #[arg(long, short = 'C', default_value = ".")]
        repo: PathBuf,
        /// Compare with this revision's merge base (the target branch of a PR).
        #[arg(long, env = "MAESTRO_BASE", default_value = "HEAD~1")]
        base: String,
        /// A risky path glob (repeatable), e.g. 'app/payments/**'.
        #[arg(long = "risky", value_name = "GLOB")]
        risky: Vec<String>,
        /// A file containing this text is risky wherever it is.
        #[arg(long, default_value = "maestro:risky")]
        annotation: String,
        #[arg(long, default_value_t = 14)]
        grace_days: i64,
        #[arg(long)]
        json: bool,
    },
    /// Evaluate a flag as flagd would, for an evaluation context (JSON object).
    Eval {
        key: String,
        #[arg(long, short = 'f', default_value = maestro_flags::DEFAULT_PATH)]
        file: PathBuf,
        /// The evaluation context, e.g. '{"targetingKey": "user-1", "region": "GB-WLS"}'.
        #[arg(long, default_value = "{}")]
        context: String,
    },
}

/// What a release is computed from.
#[derive(Debug, Args)]
pub(crate) struct ReleaseFrom {
    /// The repository.
    #[arg(long, short = 'C', default_value = ".")]
    pub repo: PathBuf,
    /// The commit to release.
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
    /// A pre-release: `rc` makes `1.3.0-rc.N`, N one more than the last.
    #[arg(long, value_name = "ID")]
    pub pre: Option<String>,
    /// PR labels: `gh pr list --state merged --json number,labels` output, or
    /// `{"12": ["skip-changelog"]}`. `skip-changelog`/`no-changelog` leave a PR out,
    /// `breaking-change`/`breaking` make it breaking.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Release tags are PREFIX + version (default: `release.tag-prefix`, else `v`).
    #[arg(long)]
    pub tag_prefix: Option<String>,
    /// The pipeline whose `release:` block configures versions and notes (default:
    /// `maestro.yaml` in the repository, when there is one).
    #[arg(long, value_name = "FILE")]
    pub pipeline: Option<PathBuf>,
    /// Web address of the repository for links (default: from `origin`).
    #[arg(long, value_name = "URL")]
    pub repository_url: Option<String>,
}

/// Where the conductor is, and who we are to it (`MAESTRO_TOKEN`).
#[derive(Debug, Args, Clone)]
pub(crate) struct ServerArgs {
    /// The conductor's URL (https, or http on loopback).
    #[arg(long, env = "MAESTRO_SERVER")]
    pub server: String,
}

#[derive(Debug, Args)]
pub(crate) struct DeployArgs {
    /// The environment (`[[environments]]` of the conductor's configuration).
    pub environment: String,
    /// The artifact (`.tar.gz`) with its evidence bundles beside it; the conductor reads
    /// it from this path (same host).
    pub artifact: PathBuf,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Why (required: deploys are audited).
    #[arg(long)]
    pub reason: String,
    /// A variable for this release's processes, KEY=VALUE (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Follow the canary until it is promoted (exit 0) or rolled back (exit 1).
    #[arg(long)]
    pub wait: bool,
    /// The conductor's run this deploy belongs to: set for the jobs of
    /// `maestro run --server`, so the run links to the canary's report.
    #[arg(long, env = "MAESTRO_CONDUCTOR_RUN", value_name = "RUN")]
    pub run: Option<i64>,
}

#[derive(Debug, Args)]
pub(crate) struct RollbackArgs {
    pub environment: String,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Why (required: audited).
    #[arg(long)]
    pub reason: String,
    /// The release (version) to go back to.
    #[arg(long)]
    pub to: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CanaryCommand {
    /// The canary report: status, steps, analyses and the verdict.
    Show {
        id: i64,
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long)]
        json: bool,
    },
    /// Hold the canary at its step (it is still analysed, and rolled back on failure).
    Pause(CanaryControl),
    /// Go on from a pause (the step's health window starts again).
    Resume(CanaryControl),
    /// Stop it: all traffic back on stable at once, the canary stopped.
    Abort(CanaryControl),
    /// Promote now, whatever the analysis says (to ship a fix when stable itself is broken).
    Promote(CanaryControl),
}

#[derive(Debug, Args)]
pub(crate) struct CanaryControl {
    pub id: i64,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Why (required: audited).
    #[arg(long)]
    pub reason: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ReleaseCommand {
    /// The dry run: the next version and its notes (Markdown, or `--json`). Changes
    /// nothing; exits 1 when nothing since the last release makes a new one.
    Plan {
        #[command(flatten)]
        from: ReleaseFrom,
        #[arg(long)]
        json: bool,
    },
    /// Puts the next release's notes on top of the changelog (atomically; a version
    /// already in it is refused).
    Changelog {
        #[command(flatten)]
        from: ReleaseFrom,
        /// The changelog (relative to the repository).
        #[arg(long, default_value = "CHANGELOG.md")]
        file: PathBuf,
    },
    /// Cut the next release on the conductor: refused unless the commit's required gates
    /// are green there and the artifact's evidence verifies; then tags the commit.
    Cut {
        #[command(flatten)]
        from: ReleaseFrom,
        /// The service (the conductor's `[[trains]]` service).
        #[arg(long, env = "MAESTRO_SERVICE")]
        service: String,
        /// The artifact built from the commit, evidence beside it; the conductor reads it
        /// from this path (same host).
        #[arg(long)]
        artifact: PathBuf,
        /// The conductor's URL (https, or http on loopback).
        #[arg(long, env = "MAESTRO_SERVER")]
        server: Option<String>,
        /// Why (required: audited).
        #[arg(long)]
        reason: String,
        /// Do not create the release tag in the repository.
        #[arg(long)]
        no_tag: bool,
        /// The branch a release is cut from: the commit must be on it (locally, or as
        /// `origin/BRANCH`).
        #[arg(long, env = "MAESTRO_RELEASE_BRANCH", default_value = "main")]
        branch: String,
        /// Compute everything the cut sends (version, commit, notes, changed paths) and
        /// print it as JSON; send nothing, tag nothing.
        #[arg(long, conflicts_with = "promote")]
        dry_run: bool,
        /// Go on with `promote` at once, following it to the end.
        #[arg(long)]
        promote: bool,
    },
    /// Promote a release through every stage (canary, post-deploy verification, soak),
    /// following it to the end; run again to resume a blocked or interrupted train.
    /// Exit 0 when released, 1 when rolled back or blocked.
    Promote {
        #[command(flatten)]
        release: ReleaseRef,
        /// Why (required: audited).
        #[arg(long)]
        reason: String,
        /// Start it and return.
        #[arg(long)]
        detach: bool,
    },
    /// A release's progress: each stage's step, checks, smoke results and events.
    Status {
        #[command(flatten)]
        release: ReleaseRef,
        #[arg(long)]
        json: bool,
    },
    /// Download the release's evidence bundle (signed by the conductor's audit log key);
    /// check it offline with `maestro verify bundle FILE --key VKEY`.
    Evidence {
        #[command(flatten)]
        release: ReleaseRef,
        /// Where to write it (default: SERVICE-VERSION.evidence.tar.gz).
        #[arg(long, short = 'o')]
        out: Option<PathBuf>,
    },
    /// Return every stage the release reached to the release before it.
    Rollback {
        #[command(flatten)]
        release: ReleaseRef,
        /// Why (required: audited).
        #[arg(long)]
        reason: String,
    },
}

/// A release on the conductor.
#[derive(Debug, Args)]
pub(crate) struct ReleaseRef {
    /// The version (SemVer, without the tag prefix).
    pub version: String,
    /// The service (the conductor's `[[trains]]` service).
    #[arg(long, env = "MAESTRO_SERVICE")]
    pub service: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SloCommand {
    /// Print the Prometheus rule file for OpenSLO v1 SLOs: the error ratio over every
    /// window, the error budget, and multi-window, multi-burn-rate alerts (page: 14.4× over
    /// 1h and 5m, 6× over 6h and 30m; ticket: 3× over 1d and 2h, 1× over 3d and 6h; windows
    /// scaled for periods other than 30 days).
    Rules {
        /// OpenSLO files (SLO and SLI documents; an indicatorRef may name an SLI in any).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write the rule file here (atomically) instead of standard output.
        #[arg(long, short = 'o')]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ApiCommand {
    /// Print the persisted GraphQL operations (Apollo's persisted-query manifest JSON:
    /// id = sha256 of each document).
    Manifest,
    /// The coverage reports: the share of the console's GraphQL operations that are
    /// persisted, and of REST endpoints and GraphQL fields under the authorization
    /// wrapper with their action in the policy matrix. Exit 1 below 100%.
    Coverage {
        #[arg(long)]
        json: bool,
    },
    /// Evaluate every cell of an allow/deny matrix (roles × own/other tenant × actions)
    /// against a policy; exit 1 naming each cell the policy decides otherwise.
    Matrix {
        /// A directory of .rego files (default: the built-in policy).
        #[arg(long)]
        policy: Option<std::path::PathBuf>,
        /// The matrix TOML (default: the built-in policy's matrix).
        #[arg(long)]
        matrix: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub common: Common,
    /// A TOML configuration file (keys: listen, database, mode, policy,
    /// max_connections); the environment and flags override it.
    #[arg(long, env = "MAESTRO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on. Default: 127.0.0.1:7070.
    #[arg(long, env = "MAESTRO_LISTEN")]
    pub listen: Option<String>,
    /// The store: a postgres:// URL or an SQLite file. Default: the repository's
    /// .maestro/store.db.
    #[arg(long, env = "MAESTRO_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    /// `development` or `production`.
    #[arg(long, env = "MAESTRO_MODE")]
    pub mode: Option<String>,
    /// A directory of Rego files deciding `data.maestro.authz.allow`. Default: the
    /// built-in policy.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Store connections kept at most. Default: 16.
    #[arg(long)]
    pub max_connections: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Create a token; its secret is printed once, on standard output, and only its
    /// SHA-256 is stored.
    Create(TokenCreateArgs),
    /// Every token: id, name, actor, roles, scopes, expiry, whether revoked.
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id (tok_…); it stops working at the next request.
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        id: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct TokenCreateArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// What the token is for (ci-deploy, alice-laptop).
    #[arg(long)]
    pub name: String,
    /// Who requests with it act as (user:alice, ci:checkout).
    #[arg(long)]
    pub actor: String,
    /// A role for the policy (viewer, developer, operator, admin); repeatable.
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// A team; repeatable.
    #[arg(long = "team")]
    pub teams: Vec<String>,
    /// The tenant the actor belongs to.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// What the token may be used for (runs:read, runs:write, session:read, audit:read,
    /// or * for everything its roles allow); repeatable, at least one.
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// Lifetime (30d, 12h); at most 400 days.
    #[arg(long, default_value = "90d")]
    pub expires: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct StoreArgs {
    #[command(flatten)]
    pub common: Common,
    /// The PostgreSQL store holding the log (postgres://user@host:5432/db). Default: the
    /// repository's SQLite store (.maestro/store.db).
    #[arg(
        long,
        env = "MAESTRO_DATABASE_URL",
        hide_env_values = true,
        global = true
    )]
    pub database: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Append an entry (durable and signed when this returns). Privileged actions
    /// (deploy, publish, promote, rollback, waive, flag.kill, restore, key.use) need
    /// --reason.
    Append(AuditAppendArgs),
    /// Entries, newest first.
    List(AuditListArgs),
    /// One entry, with its leaf hash and whether it is in the latest checkpoint.
    Show {
        #[command(flatten)]
        store: StoreArgs,
        index: u64,
        #[arg(long)]
        json: bool,
    },
    /// An inclusion proof for an entry, or (with --from) a consistency proof between two
    /// checkpoints.
    Prove {
        #[command(flatten)]
        store: StoreArgs,
        /// The entry to prove (inclusion).
        #[arg(required_unless_present = "from")]
        index: Option<u64>,
        /// Consistency: the smaller tree size.
        #[arg(long, conflicts_with = "index")]
        from: Option<u64>,
        /// The tree size to prove against. Default: the latest checkpoint.
        #[arg(long, alias = "size")]
        to: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Recompute the tree from the entries and check every stored hash and signed
    /// checkpoint; name the first bad entry.
    Verify(AuditVerifyArgs),
    /// Write entries (JSONL) with the latest signed checkpoint and, for part of the log,
    /// inclusion proofs: verifiable offline with `verify --offline`.
    Export {
        #[command(flatten)]
        store: StoreArgs,
        /// Where to write (`-` for standard output).
        #[arg(long, short = 'o', default_value = "-")]
        out: PathBuf,
        /// First entry (inclusive).
        #[arg(long)]
        from: Option<u64>,
        /// Last entry (exclusive).
        #[arg(long)]
        to: Option<u64>,
    },
    /// The latest signed checkpoint (C2SP signed note), or the one for --size.
    Checkpoint {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        size: Option<u64>,
    },
    /// The log's verifier key (creating the log's key if it has none).
    Key {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Replace the log's signing key: a `key.rotate` entry, signed by old and new key.
    RotateKey {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct AuditAppendArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// What was done: deploy, publish, promote, rollback, waive, flag.kill, restore,
    /// key.use, or any lowercase name.
    #[arg(long)]
    pub action: String,
    /// What it was done to, e.g. service/checkout@prod.
    #[arg(long)]
    pub target: String,
    /// Why (required for privileged actions).
    #[arg(long)]
    pub reason: Option<String>,
    /// started, success, failure or denied.
    #[arg(long, default_value = "success")]
    pub result: String,
    /// A parameter KEY=VALUE (repeatable); secret-looking values are redacted.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Parameters as a JSON object (a file, or `-` for standard input).
    #[arg(long, value_name = "FILE")]
    pub params_json: Option<PathBuf>,
    #[arg(long)]
    pub run: Option<i64>,
    #[arg(long)]
    pub job: Option<String>,
    /// The artifact's digest, sha256:<hex>.
    #[arg(long)]
    pub artifact: Option<String>,
    #[arg(long)]
    pub release: Option<String>,
    /// The W3C trace id. Default: from TRACEPARENT.
    #[arg(long)]
    pub trace: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct AuditListArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long)]
    pub action: Option<String>,
    #[arg(long)]
    pub actor: Option<String>,
    #[arg(long)]
    pub target: Option<String>,
    #[arg(long)]
    pub run: Option<i64>,
    #[arg(long)]
    pub artifact: Option<String>,
    /// Only this tenant's entries (local commands' are `default`'s).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only entries newer than this: a duration (24h, 7d) or an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only entries before this index (paging).
    #[arg(long)]
    pub before: Option<u64>,
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct AuditVerifyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// A trusted verifier key, or a file of them (repeatable). Default: the log's own
    /// .maestro/audit/log.pub.
    #[arg(long = "key", value_name = "KEY|FILE")]
    pub keys: Vec<String>,
    /// A checkpoint kept earlier (a file holding a signed note, repeatable): the log must
    /// still contain the tree it signed (detects forks and truncation).
    #[arg(long = "checkpoint", value_name = "FILE")]
    pub checkpoints: Vec<PathBuf>,
    /// Verify an export file instead of the store.
    #[arg(long, value_name = "FILE")]
    pub offline: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum MigrateCommand {
    /// Check the migrations (those changed since --base, or all).
    Check(MigrateCheckArgs),
    /// List the lint and structure rules with their codes.
    Rules {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct MigrateCheckArgs {
    /// Directories of migrations (NAME.up.sql/NAME.down.sql/NAME.plan.md, or
    /// NAME/{up.sql,down.sql,plan.md}).
    #[arg(long = "dir", default_value = "migrations")]
    pub dirs: Vec<PathBuf>,
    /// The shadow database: `sqlite` (in memory), or a PostgreSQL server URL on which a
    /// throwaway database is created and dropped.
    #[arg(
        long,
        env = "MAESTRO_MIGRATE_DATABASE",
        default_value = "sqlite",
        hide_env_values = true
    )]
    pub database: String,
    /// Check only the migrations changed since the merge base with this ref (e.g.
    /// origin/main); all are still replayed. Default: check every migration.
    #[arg(long)]
    pub base: Option<String>,
    /// Labels of the change (repeatable). Also read from MAESTRO_LABELS (comma-separated)
    /// and from the GitHub event at GITHUB_EVENT_PATH.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// The label that approves lint findings.
    #[arg(long, default_value = "migration-approved")]
    pub approval_label: String,
    /// Waivers (rule = code or name, resource = migration). Default: .ci/waivers.yaml when
    /// it exists.
    #[arg(long, value_name = "FILE")]
    pub waivers: Option<PathBuf>,
    /// Where the dry run, schema diff, schema and report are written.
    #[arg(long, default_value = "migration-report")]
    pub out: PathBuf,
    /// Maestro's working directory, where waiver uses are recorded. Default: `.maestro/`.
    #[arg(long, env = "MAESTRO_HOME")]
    pub home: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ReproArgs {
    #[command(flatten)]
    pub common: Common,
    /// The job whose outputs are compared (it runs with everything it needs).
    pub job: String,
    /// Keep the two build directories and print where they are.
    #[arg(long)]
    pub keep: bool,
    /// Jobs running at once in each build. Default: the number of cores.
    #[arg(long = "jobs", short = 'j', value_name = "N")]
    pub parallelism: Option<usize>,
    /// The comparison as JSON on standard output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct SecretsArgs {
    /// File or directory to scan (with --git: the repository). Default: the current directory.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Scan git history instead: every line added by any commit reachable from any ref.
    #[arg(long)]
    pub git: bool,
    /// gitleaks configuration. Default: $GITLEAKS_CONFIG, $GITLEAKS_CONFIG_TOML,
    /// PATH/.gitleaks.toml, else Maestro's default rules.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Skip files larger than this many MiB.
    #[arg(long, default_value_t = 16)]
    pub max_file_mib: u64,
    /// Threads for a tree scan. Default: the number of cores.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also scan files that .gitignore ignores.
    #[arg(long)]
    pub no_ignore: bool,
    /// Findings as JSON (gitleaks' report fields, redacted) on standard output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ScaArgs {
    /// Lockfiles, CycloneDX or SPDX JSON SBOMs, or directories holding lockfiles.
    /// Default: the current directory.
    pub paths: Vec<PathBuf>,
    /// Directory of OSV advisories (*.json, searched recursively): an OSV export,
    /// RustSec's OSV branch, GitHub's advisory database.
    #[arg(long, env = "MAESTRO_OSV_DB")]
    pub db: PathBuf,
    /// Policy file. Default: maestro-policy.toml in the current directory, if present.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Fail on findings at or above this severity: none, low, medium, high, critical
    /// (overrides the policy file; default low).
    #[arg(long)]
    pub fail_on: Option<String>,
    /// Refuse a database whose newest advisory is older than this (7d, 36h).
    #[arg(long)]
    pub max_db_age: Option<String>,
    /// Machine-readable report on standard output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct LicensesArgs {
    /// Lockfiles, CycloneDX or SPDX JSON SBOMs, or directories holding lockfiles.
    /// Default: the current directory.
    pub paths: Vec<PathBuf>,
    /// Policy file. Default: maestro-policy.toml in the current directory, if present.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Allowed license (SPDX id, optionally `WITH` an exception); adds to the policy file.
    #[arg(long)]
    pub allow: Vec<String>,
    /// Denied license; adds to the policy file.
    #[arg(long)]
    pub deny: Vec<String>,
    /// Machine-readable report on standard output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum SbomFormat {
    /// CycloneDX 1.6 JSON.
    Cyclonedx,
    /// SPDX 2.3 JSON.
    Spdx,
}

#[derive(Debug, Args)]
pub(crate) struct SbomArgs {
    /// Lockfiles (Cargo.lock, package-lock.json, npm-shrinkwrap.json, requirements*.txt,
    /// poetry.lock, go.sum) or directories holding them, or an SBOM to convert (CycloneDX
    /// ↔ SPDX). Default: the current directory.
    pub paths: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = SbomFormat::Cyclonedx)]
    pub format: SbomFormat,
    /// Write the document here (atomically) instead of to standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Name of what the SBOM describes. Default: the project's own package, else the
    /// directory's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Leave out development-only components (npm devDependencies, poetry dev groups).
    #[arg(long)]
    pub no_dev: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum KeyAlgorithm {
    /// ECDSA over NIST P-256 with SHA-256: what cosign generates.
    EcdsaP256,
    /// Ed25519.
    Ed25519,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Evaluate deny/violation/warn rules over input files (JSON, YAML; one input per
    /// YAML document).
    Eval(PolicyEvalArgs),
    /// Run the bundle's Rego unit tests (`test_*` rules).
    Test(PolicyBundleArgs),
    /// Check (default) or rewrite (--write) Rego files in canonical layout: tabs by bracket
    /// depth, spaces around operators and after commas, one blank line at most. Only
    /// whitespace changes; comments are kept.
    Fmt {
        /// Files or directories (every *.rego below). Default: .ci/policies.
        #[arg(default_value = ".ci/policies")]
        paths: Vec<PathBuf>,
        /// Rewrite the files (atomically) instead of listing them.
        #[arg(long, short = 'w')]
        write: bool,
        /// Parse as Rego v0.
        #[arg(long)]
        rego_v0: bool,
    },
    /// List the waivers with their status (active, expiring, expired) and recent uses.
    Waivers {
        /// The waiver file.
        #[arg(long, default_value = ".ci/waivers.yaml")]
        file: PathBuf,
        /// How many recorded uses to show.
        #[arg(long, default_value_t = 20)]
        uses: usize,
        #[arg(long, env = "MAESTRO_HOME")]
        home: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Write Maestro's starter bundle (with its tests) into a directory.
    Init {
        /// Where to write it.
        #[arg(long, default_value = ".ci/policies")]
        dir: PathBuf,
        /// Replace existing files of the same names.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct PolicyBundleArgs {
    /// Directory of policies (*.rego) and data files (*.json, *.yaml) beside them.
    #[arg(long, short = 'p', default_value = ".ci/policies")]
    pub policy: PathBuf,
    /// More data files merged into `data`.
    #[arg(long)]
    pub data: Vec<PathBuf>,
    /// Parse the policies as Rego v0 (`deny[msg] { … }`) instead of v1.
    #[arg(long)]
    pub rego_v0: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PolicyEvalArgs {
    #[command(flatten)]
    pub bundle: PolicyBundleArgs,
    /// Input files: Terraform plan JSON (`terraform show -json`), Kubernetes manifests,
    /// rendered Helm output, an SBOM, a license report, any JSON or YAML.
    #[arg(required_unless_present = "pipeline")]
    pub inputs: Vec<PathBuf>,
    /// Also evaluate the pipeline itself (its jobs, gates and tags), from this file.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "maestro.yaml")]
    pub pipeline: Option<PathBuf>,
    /// Packages whose rules are evaluated (conftest's namespaces). Default: main.
    #[arg(long, short = 'n')]
    pub namespace: Vec<String>,
    /// Evaluate the rules of every package.
    #[arg(long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// Waivers (rule, resource, reason, approver, expires). Default: .ci/waivers.yaml when
    /// it exists.
    #[arg(long, value_name = "FILE")]
    pub waivers: Option<PathBuf>,
    /// Maestro's working directory, where waiver uses are recorded. Default: `.maestro/`.
    #[arg(long, env = "MAESTRO_HOME")]
    pub home: Option<PathBuf>,
}

/// The private key's password comes from MAESTRO_KEY_PASSWORD, else COSIGN_PASSWORD.
#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Write PREFIX.key (encrypted, mode 0600) and PREFIX.pub.
    Generate {
        #[arg(long, value_enum, default_value_t = KeyAlgorithm::EcdsaP256)]
        algorithm: KeyAlgorithm,
        #[arg(long, default_value = "maestro")]
        output_key_prefix: String,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
        /// Do nothing when PREFIX.key already exists (for a pipeline's development key).
        #[arg(long, conflicts_with = "force")]
        if_missing: bool,
    },
    /// Import a PKCS#8 PEM or cosign private key: writes PREFIX.key (encrypted) and PREFIX.pub.
    Import {
        key: PathBuf,
        #[arg(long, default_value = "imported")]
        output_key_prefix: String,
        #[arg(long)]
        force: bool,
    },
    /// Write the private key as unencrypted PKCS#8 PEM (mode 0600), or to stdout.
    Export {
        key: PathBuf,
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Print the public key (PEM) and its id.
    Public { key: PathBuf },
}

#[derive(Debug, Args)]
pub(crate) struct SignArgs {
    /// Files to sign.
    #[arg(required = true)]
    pub artifacts: Vec<PathBuf>,
    /// Private key file (`maestro keys generate` or cosign's).
    #[arg(long, env = "MAESTRO_SIGNING_KEY")]
    pub key: PathBuf,
    /// Where to write the bundle (one artifact only). Default: ARTIFACT.sigstore.json.
    #[arg(long)]
    pub bundle: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct AttestArgs {
    #[command(flatten)]
    pub common: Common,
    /// Files built by the job; each is a subject of the statement.
    #[arg(required = true)]
    pub artifacts: Vec<PathBuf>,
    /// Private key file.
    #[arg(long, env = "MAESTRO_SIGNING_KEY")]
    pub key: PathBuf,
    /// The job that built them. Default: the job whose recorded outputs have these digests.
    #[arg(long)]
    pub job: Option<String>,
    /// The run. Default: MAESTRO_RUN_ID inside a pipeline, else the latest run.
    #[arg(long, env = "MAESTRO_RUN_ID")]
    pub run: Option<i64>,
    /// `runDetails.builder.id`: who ran the build (e.g. your CI's URL).
    #[arg(long, env = "MAESTRO_BUILDER_ID")]
    pub builder_id: Option<String>,
    /// Attest this SBOM (CycloneDX or SPDX JSON) about the artifacts instead of their
    /// provenance: an in-toto statement whose predicate is the document, as `cosign attest
    /// --type cyclonedx|spdxjson` writes. Needs no run.
    #[arg(long, value_name = "FILE")]
    pub sbom: Option<PathBuf>,
    /// Where to write the bundle. Default: beside every artifact,
    /// ARTIFACT.intoto.sigstore.json (ARTIFACT.sbom.sigstore.json with --sbom).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct VerifyCmd {
    #[command(subcommand)]
    pub what: Option<VerifyWhat>,
    #[command(flatten)]
    pub artifact: VerifyArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum VerifyWhat {
    /// A release's evidence bundle (`maestro release evidence`), offline: the manifest's
    /// signature by the conductor's audit log key, every file's digest, the artifact's
    /// signature, provenance and SBOM, the gates, each audit entry's inclusion proof and
    /// the canary reports. Exit 1 names each check that fails.
    Bundle {
        /// The bundle (`.evidence.tar.gz`).
        file: PathBuf,
        /// The conductor's audit log verifier key (`<name>+<id>+<base64>`, as `maestro
        /// audit key` prints), or a file holding it; repeatable.
        #[arg(long = "key", value_name = "KEY|FILE", required = true)]
        keys: Vec<String>,
        /// The released artifact: also check that it is the one the bundle is about.
        #[arg(long)]
        artifact: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The file to verify.
    #[arg(required = true)]
    pub artifact: Option<PathBuf>,
    /// Trusted public key file (PEM); repeat for several. A bundle verifies when one of
    /// them accepts it.
    #[arg(
        long,
        env = "MAESTRO_VERIFY_KEY",
        value_delimiter = ',',
        required = true
    )]
    pub key: Vec<PathBuf>,
    /// Evidence that must be present and valid: signature, provenance, sbom (comma
    /// separated). Default: the signature; provenance and SBOM when their bundles exist
    /// (provenance also when a policy flag is set).
    #[arg(long, value_delimiter = ',', value_name = "KIND")]
    pub require: Vec<String>,
    /// Signature bundle. Default: ARTIFACT.sigstore.json.
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// Provenance bundle. Default: ARTIFACT.intoto.sigstore.json.
    #[arg(long)]
    pub attestation: Option<PathBuf>,
    /// SBOM attestation bundle. Default: ARTIFACT.sbom.sigstore.json.
    #[arg(long)]
    pub sbom_bundle: Option<PathBuf>,
    /// Require provenance from this builder id.
    #[arg(long)]
    pub builder_id: Option<String>,
    /// Require provenance from this source repository (e.g. github.com/acme/app).
    #[arg(long)]
    pub source_uri: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub common: Common,
    /// Only these jobs (and what they need).
    pub jobs: Vec<String>,
    /// Why this run publishes or deploys, for the audit log. Default: the commit's
    /// subject line.
    #[arg(long, env = "MAESTRO_REASON")]
    pub reason: Option<String>,
    /// Jobs running at once. Default: the number of cores.
    #[arg(long = "jobs", short = 'j', value_name = "N")]
    pub parallelism: Option<usize>,
    /// Run every job; ignore cache entries (results are still stored).
    #[arg(long)]
    pub no_cache: bool,
    /// Time between SIGTERM and SIGKILL when a job is cancelled or times out.
    #[arg(long, default_value = "10s")]
    pub grace: String,
    /// Output style.
    #[arg(long, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// Write a Markdown summary (for PR comments). `$GITHUB_STEP_SUMMARY` is appended to
    /// as well when set.
    #[arg(long)]
    pub summary_md: Option<PathBuf>,
    /// Report this run into the conductor at URL (`maestro serve`) so that runs of many
    /// CI machines are seen in one place. The credential is MAESTRO_TOKEN, or on GitHub
    /// Actions an OIDC ID token (the job needs `permissions: id-token: write`).
    #[arg(long, env = "MAESTRO_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// The audience of the OIDC ID token requested for the conductor (the `audience` of
    /// its `[[oidc]]` issuer).
    #[arg(long, env = "MAESTRO_SERVER_AUDIENCE", default_value = "maestro")]
    pub server_audience: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RunsCommand {
    /// The newest runs.
    List {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One run: gates, jobs, cache hits, durations, and the failing job's log tail.
    Show {
        #[command(flatten)]
        common: Common,
        /// Run id (default: the latest).
        id: Option<i64>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CacheCommand {
    /// Entries, size and hit rate.
    Stats {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        json: bool,
    },
    /// Delete entries unused for longer than --max-age, and blobs nothing references.
    Gc {
        #[command(flatten)]
        common: Common,
        /// e.g. `30d`, `12h`.
        #[arg(long, default_value = "30d")]
        max_age: String,
    },
    /// Why a job hit or missed the cache in its latest run: which ingredient changed.
    Explain {
        #[command(flatten)]
        common: Common,
        job: String,
        #[arg(long)]
        json: bool,
    },
}

//! The operator CLI: run the node, manage tenants, tokens and links in the local metadata store, and read the log.

use std::io::Write as _;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use rand::Rng as _;
use tokio::net::TcpListener;
use tracker_log::{EmbeddedLog, EventLog};
use tracker_protocol::links::{v1_encrypted_url, v1_short_url, v1_signed_url};
use tracker_protocol::{LinkKind, Secret, V2Link};
use tracker_store::{GLOBAL_KEY_PREFIX, Store};

use crate::config::{Config, SECTIONS};
use crate::remote::parse_kv;
use crate::state::now_ms;
use crate::{NodeError, build_state, log_config, open_store, serve};

#[derive(Debug, Parser)]
#[command(name = "tracker-core", version, about = "Core node of the event tracking platform, and its operator CLI")]
pub struct Cli {
    /// TOML configuration file (keys are the environment variable names in lower case).
    #[arg(long, global = true, env = "CONFIG_FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the core node (the default).
    Serve,
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Manage ingest tokens (for /batch, /ingest and authenticated postbacks).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Print signed tracking links.
    #[command(subcommand)]
    Link(LinkCmd),
    /// The platform API against a local or remote host (TRACKER_API_URL, TRACKER_API_KEY).
    Api(crate::remote::ApiArgs),
    /// Read the embedded event log (stop the node first: the log is single-process).
    #[command(subcommand)]
    Log(LogCmd),
    /// Read the hot tier (stop the node first: its consumers merge segments as they run).
    #[command(subcommand)]
    Hot(HotCmd),
    /// Import history into the event log: the replaced system's archive (its `events` Delta table, a directory or
    /// `s3://` URL) or NDJSON, CSV and Parquet files. Re-runs and resumed runs store each event once. Stop the
    /// node first when the log is the embedded one.
    #[cfg(feature = "import")]
    Import(ImportArgs),
    /// The tenant that owns events naming none of their own: clicks on v1 links signed with the global secret,
    /// v1 postbacks and pixels without key_prefix.
    #[command(subcommand)]
    Global(GlobalCmd),
    /// The edge Workers of `EDGE_URLS`.
    #[command(subcommand)]
    Edge(EdgeCmd),
    /// Secrets at rest (`SECRETS_KEY`).
    #[command(subcommand)]
    Secrets(SecretsCmd),
    /// Operators' changes (imports, assignments), newest first.
    Audit {
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Ask the node on this machine whether it is healthy (`/health`, or `/health/broker` with `--broker`): exits 0
    /// only on a 200. For container health checks and exec probes: the image has no curl. Sends `METRICS_TOKEN`
    /// when it is set (a loopback caller needs none unless `TRUST_PROXY` names a proxy).
    Health {
        /// The event log's health (`/health/broker`) instead of the node's.
        #[arg(long)]
        broker: bool,
    },
    /// Create a demo tenant if missing and print links, a token and commands to try.
    Demo,
    /// Print the configuration variables and their values.
    Config,
}

#[derive(Debug, Subcommand)]
pub enum SecretsCmd {
    /// Seal every link and webhook secret with SECRETS_KEY, bound to its row: those written before it was set,
    /// sealed before values were bound to their rows, or sealed under a SECRETS_KEY_PREVIOUS key (rotation); prints
    /// how many were rewritten (none the second time).
    Reseal,
}

#[derive(Debug, Subcommand)]
pub enum EdgeCmd {
    /// Replay now the events each Worker parked while the core was away (its scheduled run does so every minute);
    /// prints each Worker's report.
    Replay,
}

#[derive(Debug, Subcommand)]
pub enum TenantCmd {
    /// Create a tenant; prints its key prefix and first key (shown once).
    Create {
        #[arg(long)]
        name: String,
        /// Choose the key prefix ([a-z0-9], 2-32 characters) instead of a random one.
        #[arg(long)]
        prefix: Option<String>,
        /// The tenant's plan (one of the configured plans).
        #[arg(long, default_value = "free")]
        plan: String,
    },
    List,
    /// Add a new current key; older keys keep verifying links for the grace period.
    Rotate {
        prefix: String,
        #[arg(long, default_value_t = 168)]
        grace_hours: i64,
    },
    /// Bring tenants over from the replaced system: key prefixes, signing secrets, encryption keys, ingest tokens
    /// and short links, from its database export (`turso db shell <db> .dump`, a database file, or an import
    /// document). Audited; `--dry-run` reports what would change.
    #[cfg(feature = "import")]
    Import {
        /// The export file.
        file: PathBuf,
        /// Report what would change and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// The plan of tenants whose plan there is not one of this platform's.
        #[arg(long, default_value = "free")]
        plan: String,
        /// Print the whole report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum GlobalCmd {
    /// Print the assigned tenant.
    Show,
    /// Assign a tenant (the platform's own, or the one the replaced system's global links were for).
    Assign { prefix: String },
    /// Remove the assignment (events naming no tenant are refused, or kept under `global` for links).
    Unassign,
}

#[cfg(feature = "import")]
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Files, directories or URLs to import, each a run of its own.
    #[arg(required = true)]
    sources: Vec<String>,
    /// ndjson, csv, parquet or v1-archive (default: from the name; a directory with _delta_log is v1-archive).
    #[arg(long)]
    format: Option<tracker_import::Format>,
    /// The tenant of rows that name none.
    #[arg(long)]
    tenant: Option<String>,
    /// Where rejected rows are listed (one JSON object a line).
    #[arg(long, default_value = "import-rejects.ndjson")]
    rejects: PathBuf,
    /// Rows per chunk appended to the log (and per recorded position).
    #[arg(long, default_value_t = 20_000)]
    chunk_rows: usize,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    Create {
        prefix: String,
        #[arg(long, default_value = "default")]
        name: String,
        #[arg(long)]
        expires_days: Option<i64>,
    },
    Revoke {
        prefix: String,
        token_id: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LinkFormatArg {
    V2,
    V2Encrypted,
    /// The replaced system's format (`seed`, its earlier name here, still works).
    #[value(alias = "seed")]
    V1,
    #[value(alias = "seed-encrypted")]
    V1Encrypted,
}

#[derive(Debug, Args)]
pub struct LinkOpts {
    /// Link format (v2 signs params and expiry; v1 formats are for compatibility).
    #[arg(long, value_enum, default_value = "v2")]
    format: LinkFormatArg,
    /// Attribution params, `key=value` (repeatable).
    #[arg(long = "param", value_parser = parse_kv)]
    params: Vec<(String, String)>,
    /// v2 only: the link stops working after this many seconds.
    #[arg(long)]
    expires_in: Option<i64>,
    /// v2 only: param names that may be appended later unsigned (comma-separated, e.g. gclid,fbclid).
    #[arg(long, value_delimiter = ',')]
    ext: Vec<String>,
    /// Base URL of the tracking host (default PUBLIC_URL).
    #[arg(long)]
    base: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum LinkCmd {
    /// A click link to a destination. Use the prefix `global` for links signed with HMAC_SECRET/ENCRYPTION_KEY.
    Sign {
        prefix: String,
        destination: String,
        #[command(flatten)]
        opts: LinkOpts,
    },
    /// Create a short link (destination stored server-side) and print its signed URL.
    Short {
        prefix: String,
        destination: String,
        #[command(flatten)]
        opts: LinkOpts,
    },
}

#[derive(Debug, Subcommand)]
pub enum LogCmd {
    /// Print events as JSON lines.
    Dump {
        #[arg(long)]
        partition: Option<u32>,
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Count events per partition.
    Count,
}

#[derive(Debug, Subcommand)]
pub enum HotCmd {
    /// Print the id of every event the hot tier holds, one per line.
    Ids,
}

/// `tracker-core health`: one request to this machine's node, over loopback when it listens on every address.
async fn health(cfg: &Config, broker: bool) -> Result<(), NodeError> {
    let host = match cfg.node.host {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        other => other,
    };
    let path = if broker { "/health/broker" } else { "/health" };
    let url = format!("http://{}{path}", std::net::SocketAddr::new(host, cfg.node.port));
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(5)).build().map_err(cli_err)?;
    let mut request = http.get(&url);
    if let Some(token) = std::env::var("METRICS_TOKEN").ok().filter(|t| !t.is_empty()) {
        request = request.bearer_auth(token);
    }
    let answer = request.send().await.map_err(|e| cli_err(format!("{url}: {e}")))?;
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    let status_field = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(str::to_owned))
        .unwrap_or_default();
    if status == reqwest::StatusCode::OK {
        println!("{url}: {status} {status_field}");
        Ok(())
    } else {
        Err(cli_err(format!("{url}: {status} {body}")))
    }
}

fn cli_err(e: impl std::fmt::Display) -> NodeError {
    NodeError::Cli(e.to_string())
}

pub async fn run(cli: Cli) -> Result<(), NodeError> {
    let cfg = Config::from_env(cli.config.as_deref())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let listener = TcpListener::bind((cfg.node.host, cfg.node.port)).await?;
            let state = build_state(cfg).await?;
            serve(state, listener, shutdown_signal()).await
        }
        Command::Config => {
            print!("{}", tracker_protocol::settings::markdown(SECTIONS));
            println!(
                "\nresolved: listen {}:{}, data {}, database {}",
                cfg.node.host,
                cfg.node.port,
                cfg.data_dir.display(),
                match &cfg.store.database {
                    tracker_store::Location::File(p) => p.display().to_string(),
                    tracker_store::Location::Remote { url, .. } => url.clone(),
                    tracker_store::Location::Replica { path, url, .. } =>
                        format!("{} (replica of {url})", path.display()),
                }
            );
            Ok(())
        }
        Command::Tenant(cmd) => tenant(cfg, cmd).await,
        Command::Token(cmd) => token(cfg, cmd).await,
        Command::Link(cmd) => link(cfg, cmd).await,
        Command::Log(cmd) => log(cfg, cmd).await,
        Command::Hot(HotCmd::Ids) => {
            let hot = tracker_store::hot::HotStore::connect(&cfg.store.hot_database).await?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut written = Ok(());
            hot.each_event_id(|id| {
                if written.is_ok() {
                    written = writeln!(out, "{id}");
                }
            })
            .await?;
            written.and_then(|()| out.flush()).map_err(cli_err)
        }
        Command::Health { broker } => health(&cfg, broker).await,
        Command::Demo => demo(cfg).await,
        #[cfg(feature = "import")]
        Command::Import(args) => import_events(cfg, args).await,
        Command::Global(cmd) => global(cfg, cmd).await,
        Command::Secrets(SecretsCmd::Reseal) => {
            let store = open_store(&cfg).await?;
            println!("{} secrets sealed with SECRETS_KEY and bound to their rows", store.reseal_secrets().await?);
            Ok(())
        }
        Command::Edge(EdgeCmd::Replay) => {
            let edge = cfg.consumers.edge.as_ref().ok_or_else(|| cli_err("EDGE_URLS is not set"))?;
            let mut failed = false;
            for (url, report) in edge.replay().await {
                match report {
                    Ok(r) => println!("{url}\t{r}"),
                    Err(e) => {
                        failed = true;
                        eprintln!("{url}\t{e}");
                    }
                }
            }
            if failed { Err(cli_err("some Workers could not be asked")) } else { Ok(()) }
        }
        Command::Audit { limit } => {
            let store = open_store(&cfg).await?;
            for e in store.audit_log(limit).await? {
                println!("{:>6}  {}  {:<8} {:<22} {}", e.seq, e.at, e.actor, e.action, e.detail);
            }
            Ok(())
        }
        Command::Api(args) => crate::remote::run(&cfg, args).await,
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("shutting down: finishing requests and flushing the log");
}

async fn tenant(cfg: Config, cmd: TenantCmd) -> Result<(), NodeError> {
    let store = open_store(&cfg).await?;
    match cmd {
        TenantCmd::Create { name, prefix, plan } => {
            if cfg.plans().get(&plan).is_none() {
                let names: Vec<&str> = cfg.plans().names().collect();
                return Err(NodeError::Cli(format!("--plan must be one of {}", names.join(", "))));
            }
            let limits = tracker_store::TenantLimits::default();
            let k = store.create_tenant_on(&name, prefix.as_deref(), &plan, &limits, now_ms()).await?;
            println!(
                "key_prefix      {}\nkid             {}\nsigning_secret  {}\nencryption_key  {}",
                k.key_prefix, k.kid, k.signing_secret, k.encryption_key
            );
            println!(
                "\nThe secrets are shown once. Sign links with: tracker-core link sign {} https://example.com",
                k.key_prefix
            );
        }
        TenantCmd::List => {
            println!("{:<12} {:<8} {:<10} name", "key_prefix", "plan", "status");
            for t in store.list_tenants().await? {
                println!("{:<12} {:<8} {:<10} {}", t.key_prefix, t.plan, t.status, t.name);
            }
        }
        #[cfg(feature = "import")]
        TenantCmd::Import { file, dry_run, plan, json } => {
            if cfg.plans().get(&plan).is_none() {
                let names: Vec<&str> = cfg.plans().names().collect();
                return Err(NodeError::Cli(format!("--plan must be one of {}", names.join(", "))));
            }
            let plans = tracker_import::v1db::PlanMap {
                known: cfg.plans().names().map(str::to_owned).collect(),
                default: plan,
            };
            let export = tracker_import::v1db::read(&file, &plans).await.map_err(cli_err)?;
            for note in &export.notes {
                eprintln!("note: {note}");
            }
            let report = store.import_tenants(&export.import, dry_run, "cli", now_ms()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report).map_err(cli_err)?);
            } else {
                print_import_report(&report);
            }
            if !dry_run && !report.purge.is_empty() {
                // edge copies of records the import changed (a tenant's keys, a moved link) are dropped now
                if let Some(edge) = &cfg.consumers.edge {
                    for keys in report.purge.chunks(100) {
                        edge.send(&keys.join(",")).await;
                    }
                }
            }
        }
        TenantCmd::Rotate { prefix, grace_hours } => {
            let k = store.rotate_keys(&prefix, grace_hours.saturating_mul(3_600_000), now_ms()).await?;
            println!(
                "new current key {} for {}; older keys verify links for {grace_hours} more hours",
                k.kid, k.key_prefix
            );
            println!("signing_secret  {}\nencryption_key  {}", k.signing_secret, k.encryption_key);
        }
    }
    Ok(())
}

#[cfg(feature = "import")]
fn print_import_report(r: &tracker_store::imports::ImportReport) {
    let verb = if r.dry_run { "would" } else { "did" };
    println!("{:<8} {:>8} {:>8} {:>10} {:>8}", "", "create", "update", "unchanged", "skip");
    for (name, c) in [("tenants", r.tenants), ("keys", r.keys), ("tokens", r.tokens), ("links", r.links)] {
        println!("{name:<8} {:>8} {:>8} {:>10} {:>8}", c.create, c.update, c.unchanged, c.skip);
    }
    const SHOWN: usize = 50;
    for c in r.changes.iter().take(SHOWN) {
        let reason = c.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
        println!("{verb} {:?} {} {}{reason}", c.action, c.kind, c.id);
    }
    if r.changes.len() > SHOWN {
        println!("... and {} more (--json lists them all)", r.changes.len() - SHOWN);
    }
    if r.dry_run {
        println!("dry run: nothing was changed");
    }
}

async fn global(cfg: Config, cmd: GlobalCmd) -> Result<(), NodeError> {
    let store = open_store(&cfg).await?;
    match cmd {
        GlobalCmd::Show => match store.global_tenant().await? {
            Some(p) => println!("{p}"),
            None => println!("(none: events that name no tenant are refused, global links are kept under `global`)"),
        },
        GlobalCmd::Assign { prefix } => {
            store.assign_global_tenant(Some(&prefix), "cli", now_ms()).await?;
            println!("events that name no tenant now belong to {prefix}");
        }
        GlobalCmd::Unassign => {
            store.assign_global_tenant(None, "cli", now_ms()).await?;
            println!("unassigned");
        }
    }
    if let Some(edge) = &cfg.consumers.edge {
        edge.send("tenant:global").await;
    }
    println!("(core nodes follow within CACHE_TTL_SECS, the edge within KV_FILL_TTL_SECS unless EDGE_URLS is set)");
    Ok(())
}

#[cfg(feature = "import")]
async fn import_events(cfg: Config, args: ImportArgs) -> Result<(), NodeError> {
    let store = open_store(&cfg).await?;
    let log = crate::open_raw_log(&cfg).await.map_err(|e| {
        cli_err(format!("{e} (is a node running on this DATA_DIR? the embedded log is single-process)"))
    })?;
    let mut failed = false;
    for source in &args.sources {
        let format = match args.format.or_else(|| tracker_import::Format::guess(source)) {
            Some(f) => f,
            None => return Err(cli_err(format!("{source}: say --format (ndjson, csv, parquet or v1-archive)"))),
        };
        let settings = tracker_import::ImportSettings {
            format,
            tenant: args.tenant.clone(),
            rejects: args.rejects.clone(),
            chunk_rows: args.chunk_rows,
            progress: !args.quiet,
            limits: cfg.links.limits.clone(),
        };
        match tracker_import::import(log.clone(), &store, source, &settings, now_ms()).await {
            Ok(s) if s.already_done => println!("{source}: imported before (run {}): nothing to do", s.run_id),
            Ok(s) => {
                let resumed =
                    if s.resumed_at > 0 { format!(", resumed at row {}", s.resumed_at) } else { String::new() };
                let (rows, imported, duplicates, rejected) = (s.rows, s.imported, s.duplicates, s.rejected_total());
                println!(
                    "{source}: {rows} rows, {imported} events imported, {duplicates} duplicates skipped, \
                     {rejected} rejected in {:.1} s ({:.0} events/s{resumed})",
                    s.seconds,
                    s.events_per_second()
                );
                for (code, n) in &s.rejected {
                    println!("  rejected {n}: {code}");
                }
                if s.rejected_total() > 0 {
                    println!("  the rejected rows and why: {}", args.rejects.display());
                }
            }
            Err(e) => {
                eprintln!("{source}: {e}");
                failed = true;
            }
        }
    }
    log.shutdown().await?;
    if failed { Err(cli_err("some sources were not imported")) } else { Ok(()) }
}

async fn token(cfg: Config, cmd: TokenCmd) -> Result<(), NodeError> {
    let store = open_store(&cfg).await?;
    match cmd {
        TokenCmd::Create { prefix, name, expires_days } => {
            let now = now_ms();
            let expires = expires_days.map(|d| now + d.saturating_mul(86_400_000));
            let (token, id) = store.create_ingest_token(&prefix, &name, expires, now).await?;
            println!("token_id  {id}\ntoken     {token}\n\nShown once; it is stored only as a hash.");
        }
        TokenCmd::Revoke { prefix, token_id } => {
            store.revoke_ingest_token(&prefix, &token_id, now_ms()).await?;
            println!("revoked {token_id} (nodes stop accepting it within CACHE_TTL_SECS)");
        }
    }
    Ok(())
}

/// Builds a click or short link for `prefix` with its current key (or the global secrets for `global`).
pub async fn build_link(
    cfg: &Config,
    store: &Store,
    prefix: &str,
    kind: LinkKind,
    target: &str,
    opts: &LinkOpts,
) -> Result<String, NodeError> {
    // a destination the platform would not take for a new link is refused, not printed as a link that cannot work
    if kind == LinkKind::Click {
        tracker_protocol::validate_destination(target).map_err(|e| cli_err(format!("{target:?}: {e}")))?;
    }
    let base = opts.base.clone().unwrap_or_else(|| cfg.node.public_url.clone());
    let params: Vec<(&str, &str)> = opts.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let nonce: [u8; 12] = rand::rng().random();
    let (secret, aes, kid) = if prefix == GLOBAL_KEY_PREFIX {
        (
            cfg.links.hmac_secret.clone().map(Secret::into_inner),
            cfg.links.encryption_key.clone().map(Secret::into_inner),
            "global".to_owned(),
        )
    } else {
        let t = store.tenant_keys(prefix).await?.ok_or_else(|| cli_err(format!("no tenant {prefix:?}")))?;
        let key = t.keys.into_iter().next().ok_or_else(|| cli_err("the tenant has no key"))?;
        (key.signing_secret, key.encryption_key, key.kid)
    };
    let need_secret = || secret.clone().ok_or_else(|| cli_err("no signing secret (set HMAC_SECRET for global links)"));
    let need_aes = || aes.ok_or_else(|| cli_err("no encryption key (set ENCRYPTION_KEY for global links)"));
    let v1_prefix = (prefix != GLOBAL_KEY_PREFIX).then_some(prefix);
    let url = match (opts.format, kind) {
        (LinkFormatArg::V1, LinkKind::Click) => v1_signed_url(&base, &need_secret()?, v1_prefix, target, &params),
        (LinkFormatArg::V1, _) => v1_short_url(&base, &need_secret()?, v1_prefix, target, &params),
        (LinkFormatArg::V1Encrypted, LinkKind::Click) if prefix == GLOBAL_KEY_PREFIX => {
            v1_encrypted_url(&base, &need_aes()?, nonce, target, &params)
        }
        (LinkFormatArg::V1Encrypted, _) => {
            return Err(cli_err("v1 encrypted links exist only for clicks with the global key"));
        }
        (LinkFormatArg::V2 | LinkFormatArg::V2Encrypted, _) if prefix == GLOBAL_KEY_PREFIX => {
            return Err(cli_err("v2 links belong to a tenant; use --format v1 for global links"));
        }
        (f, kind) => {
            let ext: Vec<&str> = opts.ext.iter().map(String::as_str).collect();
            let link = V2Link {
                kind,
                key_prefix: prefix,
                kid: &kid,
                target,
                expires_at: opts.expires_in.map(|s| now_ms() / 1000 + s),
                ext: &ext,
                params: &params,
            };
            match f {
                LinkFormatArg::V2Encrypted => link.encrypted_url(&base, &need_aes()?, nonce),
                _ => link.signed_url(&base, &need_secret()?),
            }
        }
    };
    url.map_err(cli_err)
}

async fn link(cfg: Config, cmd: LinkCmd) -> Result<(), NodeError> {
    let store = open_store(&cfg).await?;
    match cmd {
        LinkCmd::Sign { prefix, destination, opts } => {
            println!("{}", build_link(&cfg, &store, &prefix, LinkKind::Click, &destination, &opts).await?);
        }
        LinkCmd::Short { prefix, destination, opts } => {
            let short = store.create_short_link(&prefix, &destination, None, now_ms()).await?;
            println!("{}", build_link(&cfg, &store, &prefix, LinkKind::Short, &short.tu_id, &opts).await?);
        }
    }
    Ok(())
}

async fn log(cfg: Config, cmd: LogCmd) -> Result<(), NodeError> {
    let log_cfg = log_config(&cfg);
    let log = tokio::task::spawn_blocking(move || EmbeddedLog::open(log_cfg))
        .await
        .map_err(cli_err)?
        .map_err(|e| cli_err(format!("{e} (is a node running on this DATA_DIR? the log is single-process)")))?;
    let partitions: Vec<u32> = (0..log.partitions()).collect();
    match cmd {
        LogCmd::Dump { partition, from, limit } => {
            for p in partition.map(|p| vec![p]).unwrap_or(partitions) {
                let polled = log.poll(p, from, limit).await?;
                for (offset, event) in polled.events {
                    let line = serde_json::json!({ "partition": p, "offset": offset, "event": event });
                    println!("{line}");
                }
            }
        }
        LogCmd::Count => {
            let mut total = 0;
            for p in partitions {
                let mut from = 0;
                let mut n = 0u64;
                loop {
                    let polled = log.poll(p, from, 100_000).await?;
                    if polled.events.is_empty() {
                        break;
                    }
                    n += polled.events.len() as u64;
                    from = polled.next_offset;
                }
                if n > 0 {
                    println!("partition {p:>4}: {n} events");
                }
                total += n;
            }
            println!("total: {total} events");
        }
    }
    log.shutdown().await?;
    Ok(())
}

async fn demo(cfg: Config) -> Result<(), NodeError> {
    let store = open_store(&cfg).await?;
    let now = now_ms();
    if store.tenant_keys("demo").await?.is_none() {
        store.create_tenant("Demo tenant", Some("demo"), now).await?;
    }
    let (token, _) = store.create_ingest_token("demo", "demo", Some(now + 7 * 86_400_000), now).await?;
    let scopes = ["read", "write", "admin"].map(str::to_owned);
    let (dashboard_key, _) =
        store.create_api_key("demo", "dashboard (make dev)", &scopes, Some(now + 7 * 86_400_000), now).await?;
    let opts = |format| LinkOpts {
        format,
        params: vec![("campaign".into(), "demo".into())],
        expires_in: None,
        ext: vec!["gclid".into()],
        base: None,
    };
    let v2 = build_link(&cfg, &store, "demo", LinkKind::Click, "https://example.com/landing", &opts(LinkFormatArg::V2))
        .await?;
    let v1 = build_link(&cfg, &store, "demo", LinkKind::Click, "https://example.com/landing", &opts(LinkFormatArg::V1))
        .await?;
    let base = &cfg.node.public_url;
    println!("Demo tenant `demo` is ready on {base}\n");
    println!("Click (v2, signed params):   {v2}");
    println!("Click (v1 format):         {v1}");
    println!("Impression pixel:            {base}/i?key_prefix=demo&campaign=demo");
    println!("Beacon (on any page):        <script async src=\"{base}/t.js\" data-key=\"demo\"></script>");
    println!("Ingest token (7 days):       {token}");
    println!("Dashboard API key (7 days):  {dashboard_key}  (sign in at {base}/dashboard/)\n");
    println!("Try:");
    println!("  curl -si '{v2}' | grep -i location");
    println!(
        "  curl -s -X POST {base}/batch -H 'Authorization: Bearer {token}' \\\n    \
         -d '[{{\"event_type\":\"signup\",\"params\":{{\"plan\":\"pro\"}}}}]'"
    );
    println!("  curl -s {base}/metrics | grep tracker_events_accepted_total");
    Ok(())
}

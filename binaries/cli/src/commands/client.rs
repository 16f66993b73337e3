//! The CLI side of the control plane: finding the coordinator and its token, connecting, and
//! request/reply over the control WebSocket.

use std::{path::PathBuf, time::Duration};

use adora_client::{Auth, Backoff, ClientError, Connection, CONTROL_PATH, DEFAULT_PORT};
use adora_message::{
    cli_to_coordinator::ControlRequest,
    coordinator_to_cli::ControlReply,
    envelope::{Envelope, Hello},
};
use anyhow::{bail, Context};

/// Default coordinator host.
pub const DEFAULT_ADDR: &str = "127.0.0.1";
/// Longest a client waits for the TCP + WebSocket connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Name of the file (in the state directory) where `adora coordinator` writes its address.
pub const ADDR_FILE: &str = "coordinator.addr";
/// How long a state-changing request keeps retrying (same request id) after its connection
/// dropped, e.g. while the coordinator restarts.
pub const RETRY_WINDOW: Duration = Duration::from_secs(30);
/// Pause between reconnection attempts of such a retry.
pub const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Where the coordinator is and how to authenticate (shared by every client subcommand).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientArgs {
    /// Coordinator host [default: the address `adora up` / `adora coordinator` recorded in the
    /// state directory, else 127.0.0.1].
    #[arg(long, env = "ADORA_COORDINATOR_ADDR")]
    coordinator_addr: Option<String>,
    /// Coordinator port [default: recorded one, else 6013].
    #[arg(long, env = "ADORA_COORDINATOR_PORT")]
    coordinator_port: Option<u16>,
    /// File holding the token (mode 0600) [default: `ADORA_TOKEN`, else `<state dir>/token`].
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The cluster CA to verify the coordinator against [default: `ADORA_CA_FILE`, else
    /// `<state dir>/ca.pem`, which the coordinator creates].
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
}

impl ClientArgs {
    /// The coordinator at `addr:port`; the token is found the usual way (see
    /// [`adora_client::find_token`]).
    pub fn at(addr: &str, port: u16) -> Self {
        Self {
            coordinator_addr: Some(addr.to_owned()),
            coordinator_port: Some(port),
            token_file: None,
            ca_file: None,
        }
    }

    /// True when a coordinator was named (`--coordinator-addr`/`--coordinator-port` or their
    /// environment variables).
    pub fn names_coordinator(&self) -> bool {
        self.coordinator_addr.is_some() || self.coordinator_port.is_some()
    }

    /// `host:port` of the coordinator.
    pub fn addr(&self) -> String {
        let recorded = std::fs::read_to_string(super::common::state_dir().join(ADDR_FILE))
            .ok()
            .and_then(|s| {
                let s = s.trim().to_owned();
                let (h, p) = s.rsplit_once(':')?;
                Some((h.to_owned(), p.parse::<u16>().ok()?))
            });
        let host = self
            .coordinator_addr
            .clone()
            .or_else(|| recorded.as_ref().map(|r| r.0.clone()))
            .unwrap_or_else(|| DEFAULT_ADDR.into());
        let port = self
            .coordinator_port
            .or_else(|| recorded.as_ref().map(|r| r.1))
            .unwrap_or(DEFAULT_PORT);
        format!("{host}:{port}")
    }

    /// How to connect: TLS trusting the cluster CA (`--ca-file`, `ADORA_CA_FILE` or the state
    /// directory), with the token.
    pub fn auth(&self) -> anyhow::Result<Auth> {
        let state = super::common::state_dir();
        let token = adora_client::find_token(self.token_file.as_deref(), &state)?;
        let (path, pem) = adora_client::find_ca(self.ca_file.as_deref(), &state)?;
        Auth::with_ca(&pem, token).with_context(|| format!("the cluster CA {}", path.display()))
    }
}

/// An open control connection.
pub struct Client {
    conn: Connection,
    next_id: u64,
    args: ClientArgs,
    /// Log lines that arrived while `call_idempotent` waited for its answer (build output and
    /// the first node output of an attached start); see [`Client::take_early_logs`].
    early_logs: Vec<adora_message::control::NodeLogLine>,
}

impl Client {
    /// Connects and handshakes, with errors that say what to do.
    pub async fn connect(args: &ClientArgs) -> anyhow::Result<Self> {
        let addr = args.addr();
        let auth = args.auth()?;
        let conn = tokio::time::timeout(
            CONNECT_TIMEOUT,
            Connection::connect(&addr, CONTROL_PATH, &auth, Hello::current()),
        )
        .await
        .map_err(|_| {
            anyhow::anyhow!("the coordinator at {addr} did not answer within {CONNECT_TIMEOUT:?}")
        })?;
        match conn {
            Ok(conn) => Ok(Self {
                conn,
                next_id: 1,
                args: args.clone(),
                early_logs: Vec::new(),
            }),
            Err(ClientError::Unreachable { addr, source }) => bail!(
                "cannot reach the coordinator at {addr} ({source})\n  start one with `adora up`, or `adora coordinator` on the coordinator machine; \
                 point elsewhere with --coordinator-addr/--coordinator-port"
            ),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends a request; returns its id.
    pub async fn send(&mut self, request: ControlRequest) -> anyhow::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        self.conn.send(&Envelope::new(id, request)).await?;
        Ok(id)
    }

    /// The next message from the coordinator.
    pub async fn next(&mut self) -> anyhow::Result<ControlReply> {
        let envelope: Envelope<ControlReply> = self.conn.recv().await?;
        Ok(envelope.body)
    }

    /// Like [`Client::call`] for a state-changing request (`start`, `stop`, `restart`): it gets
    /// a fresh request id, and when the connection drops before the answer it reconnects and
    /// sends it again with the same id for up to [`RETRY_WINDOW`]. The coordinator answers a
    /// retry instead of running the request twice.
    pub async fn call_idempotent(
        &mut self,
        request: ControlRequest,
    ) -> anyhow::Result<ControlReply> {
        self.call_idempotent_streaming(request, None).await
    }

    /// Like [`Client::call_idempotent`], handing the log lines that arrive before the answer
    /// (build output) to `on_log` as they come instead of keeping them for
    /// [`Client::take_early_logs`].
    pub async fn call_idempotent_streaming(
        &mut self,
        request: ControlRequest,
        mut on_log: Option<&mut (dyn FnMut(adora_message::control::NodeLogLine) + Send)>,
    ) -> anyhow::Result<ControlReply> {
        let request = ControlRequest::Idempotent {
            request_id: uuid::Uuid::new_v4(),
            request: Box::new(request),
        };
        let deadline = tokio::time::Instant::now() + RETRY_WINDOW;
        loop {
            let attempt = async {
                self.send(request.clone()).await?;
                loop {
                    match self.next().await? {
                        ControlReply::Log(line) => match on_log.as_mut() {
                            Some(on_log) => on_log(line),
                            None => self.early_logs.push(line),
                        },
                        reply => return Ok(reply),
                    }
                }
            };
            match attempt.await {
                Ok(ControlReply::Error(e)) => return Err(e.into()),
                Ok(reply) => return Ok(reply),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    eprintln!("connection to the coordinator lost ({e:#}); retrying");
                    self.reconnect(deadline).await?;
                }
            }
        }
    }

    /// The log lines that arrived before the answer of the last `call_idempotent`.
    pub fn take_early_logs(&mut self) -> Vec<adora_message::control::NodeLogLine> {
        std::mem::take(&mut self.early_logs)
    }

    async fn reconnect(&mut self, deadline: tokio::time::Instant) -> anyhow::Result<()> {
        let mut backoff = Backoff::constant(RETRY_PAUSE);
        loop {
            tokio::time::sleep(backoff.next_delay()).await;
            match Client::connect(&self.args).await {
                Ok(fresh) => {
                    self.conn = fresh.conn;
                    return Ok(());
                }
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => {}
            }
        }
    }

    /// Sends a request and returns its first reply; an `Error` reply becomes `Err`.
    pub async fn call(&mut self, request: ControlRequest) -> anyhow::Result<ControlReply> {
        self.send(request).await?;
        match self.next().await? {
            ControlReply::Error(e) => Err(e.into()),
            reply => Ok(reply),
        }
    }
}

/// Prints a node log line from the coordinator like `adora run` does.
pub fn print_line(line: adora_message::control::NodeLogLine, width: usize) {
    crate::output::print_log_line(&line, width);
}

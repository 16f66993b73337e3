//! `adora top`: every node of every running dataflow with its machine, status, CPU, memory,
//! message rates, drops, restarts and uptime; a live terminal table, or one snapshot with `--once`.

use std::{io::IsTerminal, process::ExitCode, time::Duration};

use adora_message::{
    cli_to_coordinator::ControlRequest, coordinator_to_cli::ControlReply, stats::NodeInfo,
};
use anyhow::bail;
use ratatui::{
    crossterm::event::{self, Event, KeyCode, KeyEventKind},
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    widgets::{Cell, Paragraph, Row, Table, TableState},
    DefaultTerminal, Frame,
};
use tokio::sync::mpsc;

use super::client::{Client, ClientArgs};

/// How often the live view asks the coordinator for fresh figures.
pub const REFRESH: Duration = Duration::from_secs(1);
/// How long the key reader waits for a key before checking whether the view has closed.
const KEY_POLL: Duration = Duration::from_millis(200);

/// Live table of every node of every running dataflow (like `top`).
///
/// Figures come from the daemons' heartbeats (every 5 s): CPU % of one core and resident memory
/// of each node process, messages in/out per second, queue drops, restarts and uptime.
/// Keys: `c` CPU, `m` memory, `i` msgs in/s, `o` msgs out/s, `d` drops, `r` restarts, `u` uptime,
/// `n` name (pressing the same key again reverses the order); arrows scroll; `q` quits.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  adora top
  adora top --sort memory
  adora top --once
  adora top --once --json | jq '.[] | select(.cpu_percent > 50) | .node'")]
pub struct Args {
    /// Print one snapshot as a plain table and exit (the default without a terminal).
    #[arg(long)]
    once: bool,
    /// Print one snapshot as JSON and exit (implies --once; fields in the guide's JSON chapter).
    #[arg(long)]
    json: bool,
    /// Initial sort order.
    #[arg(long, value_enum, default_value_t = SortKey::Cpu)]
    sort: SortKey,
    #[command(flatten)]
    client: ClientArgs,
}

/// A column to sort by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    /// Dataflow, then node name (ascending).
    Name,
    /// CPU % (highest first).
    Cpu,
    /// Resident memory (largest first).
    Memory,
    /// Messages received per second.
    In,
    /// Messages sent per second.
    Out,
    /// Queue drops.
    Drops,
    /// Restarts.
    Restarts,
    /// Uptime (longest first).
    Uptime,
}

impl SortKey {
    fn label(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Cpu => "cpu",
            Self::Memory => "memory",
            Self::In => "msgs in/s",
            Self::Out => "msgs out/s",
            Self::Drops => "drops",
            Self::Restarts => "restarts",
            Self::Uptime => "uptime",
        }
    }

    fn from_key(c: char) -> Option<Self> {
        Some(match c {
            'n' => Self::Name,
            'c' => Self::Cpu,
            'm' => Self::Memory,
            'i' => Self::In,
            'o' => Self::Out,
            'd' => Self::Drops,
            'r' => Self::Restarts,
            'u' => Self::Uptime,
            _ => return None,
        })
    }
}

/// Sorts rows: names ascending, figures descending; `reverse` flips either.
pub fn sort_nodes(nodes: &mut [NodeInfo], key: SortKey, reverse: bool) {
    let figure = |n: &NodeInfo| -> f64 {
        match key {
            SortKey::Name => 0.0,
            SortKey::Cpu => n.cpu_percent,
            SortKey::Memory => n.rss_bytes as f64,
            SortKey::In => n.messages_received_per_sec,
            SortKey::Out => n.messages_sent_per_sec,
            SortKey::Drops => n.dropped as f64,
            SortKey::Restarts => f64::from(n.restarts),
            SortKey::Uptime => n.uptime_secs,
        }
    };
    let by_name = |a: &NodeInfo, b: &NodeInfo| (&a.dataflow, &a.node).cmp(&(&b.dataflow, &b.node));
    nodes.sort_by(|a, b| {
        let order = if key == SortKey::Name {
            by_name(a, b)
        } else {
            figure(b).total_cmp(&figure(a)).then_with(|| by_name(a, b))
        };
        if reverse {
            order.reverse()
        } else {
            order
        }
    });
}

/// `12.3 MiB`-style sizes (the same units placement errors use).
pub fn human_bytes(bytes: u64) -> String {
    adora_core::resources::format_bytes(bytes)
}

/// `1h02m`, `3m05s`, `12s`.
pub fn human_uptime(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

const HEADER: [&str; 11] = [
    "DATAFLOW", "NODE", "MACHINE", "STATUS", "CPU%", "RSS", "IN/s", "OUT/s", "DROPS", "RESTARTS",
    "UPTIME",
];

/// Drops, with the part that went missing between machines: `12 (3 net)`.
fn drops(n: &NodeInfo) -> String {
    let remote: u64 = n.remote_dropped.iter().map(|d| d.count).sum();
    if remote == 0 {
        n.dropped.to_string()
    } else {
        format!("{} ({remote} net)", n.dropped)
    }
}

fn cells(n: &NodeInfo) -> [String; 11] {
    [
        n.dataflow.clone(),
        n.node.to_string(),
        n.machine.clone(),
        n.status.to_string(),
        format!("{:.1}", n.cpu_percent),
        human_bytes(n.rss_bytes),
        format!("{:.1}", n.messages_received_per_sec),
        format!("{:.1}", n.messages_sent_per_sec),
        drops(n),
        n.restarts.to_string(),
        human_uptime(n.uptime_secs),
    ]
}

async fn fetch(client: &mut Client) -> anyhow::Result<Vec<NodeInfo>> {
    match client
        .call(ControlRequest::Nodes { dataflow: None })
        .await?
    {
        ControlReply::Nodes(nodes) => Ok(nodes),
        other => bail!("unexpected reply to Nodes: {other:?}"),
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut client = Client::connect(&args.client).await?;
    let terminal = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    if !terminal && !args.once && !args.json {
        // A CI job or a pipe: one snapshot, like `--once`, instead of failing the script.
        eprintln!("adora top: no terminal, printing one snapshot (as `--once`)");
    }
    if args.once || args.json || !terminal {
        let mut nodes = fetch(&mut client).await?;
        sort_nodes(&mut nodes, args.sort, false);
        if args.json {
            crate::output::print_json(&nodes)?;
        } else {
            print_table(&nodes);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let terminal = ratatui::init();
    let result = live(terminal, client, args.sort).await;
    ratatui::restore();
    result.map(|()| ExitCode::SUCCESS)
}

fn print_table(nodes: &[NodeInfo]) {
    if nodes.is_empty() {
        eprintln!("no running dataflows (start one with `adora start dataflow.yml`)");
        return;
    }
    // The first four columns are names, the rest numbers.
    let mut table = crate::table::Table::new(HEADER).right_align(&[4, 5, 6, 7, 8, 9, 10]);
    for node in nodes {
        table.row(cells(node));
    }
    table.print();
}

/// State of the live view.
struct View {
    nodes: Vec<NodeInfo>,
    sort: SortKey,
    reverse: bool,
    table: TableState,
    error: Option<String>,
}

/// Reads keys on a plain thread (crossterm's reads block) until the receiver is dropped.
fn spawn_key_reader() -> mpsc::UnboundedReceiver<KeyCode> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || loop {
        if tx.is_closed() {
            return;
        }
        match event::poll(KEY_POLL) {
            Ok(true) => match event::read() {
                Ok(Event::Key(k)) if k.kind == KeyEventKind::Press => {
                    if tx.send(k.code).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            },
            Ok(false) => {}
            Err(_) => return,
        }
    });
    rx
}

async fn live(
    mut terminal: DefaultTerminal,
    mut client: Client,
    sort: SortKey,
) -> anyhow::Result<()> {
    let mut keys = spawn_key_reader();
    let mut tick = tokio::time::interval(REFRESH);
    let mut view = View {
        nodes: Vec::new(),
        sort,
        reverse: false,
        table: TableState::default(),
        error: None,
    };
    loop {
        tokio::select! {
            _ = tick.tick() => match fetch(&mut client).await {
                Ok(nodes) => {
                    view.nodes = nodes;
                    view.error = None;
                }
                Err(e) => view.error = Some(format!("{e:#}")),
            },
            key = keys.recv() => match key {
                None | Some(KeyCode::Char('q') | KeyCode::Esc) => return Ok(()),
                Some(KeyCode::Down | KeyCode::Char('j')) => view.table.select_next(),
                Some(KeyCode::Up | KeyCode::Char('k')) => view.table.select_previous(),
                Some(KeyCode::Char(c)) => {
                    if let Some(key) = SortKey::from_key(c) {
                        view.reverse = key == view.sort && !view.reverse;
                        view.sort = key;
                    }
                }
                Some(_) => {}
            },
        }
        sort_nodes(&mut view.nodes, view.sort, view.reverse);
        terminal.draw(|frame| draw(frame, &mut view))?;
    }
}

fn draw(frame: &mut Frame<'_>, view: &mut View) {
    let [title, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let running = {
        let mut ids: Vec<_> = view.nodes.iter().map(|n| n.dataflow_id).collect();
        ids.sort();
        ids.dedup();
        ids.len()
    };
    let status = match &view.error {
        Some(e) => format!("adora top — error: {e}"),
        None => format!(
            "adora top — {} node(s) in {running} running dataflow(s), sorted by {}{}",
            view.nodes.len(),
            view.sort.label(),
            if view.reverse { " (reversed)" } else { "" }
        ),
    };
    frame.render_widget(Paragraph::new(status), title);
    let header = Row::new(HEADER.map(Cell::from)).style(Style::new().add_modifier(Modifier::BOLD));
    let rows = view.nodes.iter().map(|n| Row::new(cells(n)));
    let widths = [
        Constraint::Min(10),
        Constraint::Min(10),
        Constraint::Min(8),
        Constraint::Length(10),
        Constraint::Length(6),
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(8),
        Constraint::Length(7),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    frame.render_stateful_widget(table, body, &mut view.table);
    frame.render_widget(
        Paragraph::new(
            "sort: c cpu  m mem  i in/s  o out/s  d drops  r restarts  u uptime  n name (again: reverse)  ↑↓ scroll  q quit",
        ),
        footer,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use adora_message::stats::NodeStatus;

    fn node(name: &str, cpu: f64, rss: u64) -> NodeInfo {
        let mut info = NodeInfo::new(
            uuid::Uuid::nil(),
            "demo".into(),
            name.into(),
            "robot".into(),
        );
        info.status = NodeStatus::Running;
        info.pid = Some(1);
        info.cpu_percent = cpu;
        info.rss_bytes = rss;
        info
    }

    #[test]
    fn sorts_by_figure_descending_and_by_name_ascending() {
        let mut nodes = vec![node("b", 5.0, 10), node("a", 50.0, 1), node("c", 20.0, 100)];
        let names = |n: &[NodeInfo]| n.iter().map(|n| n.node.to_string()).collect::<Vec<_>>();
        sort_nodes(&mut nodes, SortKey::Cpu, false);
        assert_eq!(names(&nodes), ["a", "c", "b"]);
        sort_nodes(&mut nodes, SortKey::Memory, false);
        assert_eq!(names(&nodes), ["c", "b", "a"]);
        sort_nodes(&mut nodes, SortKey::Name, false);
        assert_eq!(names(&nodes), ["a", "b", "c"]);
        sort_nodes(&mut nodes, SortKey::Name, true);
        assert_eq!(names(&nodes), ["c", "b", "a"]);
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_uptime(12.7), "12s");
        assert_eq!(human_uptime(185.0), "3m05s");
        assert_eq!(human_uptime(3720.0), "1h02m");
    }
}

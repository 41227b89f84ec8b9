//! `warden desk`: the terminal desk (ratatui). The same live list as the web desk (the admin
//! API's task list, then its server-sent events), the selected task in plain words, and the
//! same decisions: approve, deny with a note, modify the arguments.
//!
//! Invariants: the terminal is restored (raw mode off, main screen back) however the desk
//! ends, an error included; a decision the gateway refuses is shown with its reason and
//! changes nothing on screen but the status line; task text is drawn as text (control
//! characters an agent put in its arguments or reason are replaced before drawing, so they
//! cannot drive the terminal).
//!
//! Threat: terminal escape sequences smuggled through task contents, and an approver acting
//! on a stale view (the list follows the gateway's events and re-lists when it missed some).

use crate::adminctl::{Client, Target};
use anyhow::{Context, Result};
use http_body_util::BodyExt;
use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::layout::{Constraint, Direction, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, List, ListItem, ListState, Paragraph, Wrap};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;

/// What reaches the desk's loop.
enum Input {
    Key(KeyEvent),
    Task(Value),
    Resync,
    Live(bool),
}

/// What the bottom line is editing.
enum Editing {
    None,
    Deny(String),
    Modify(String),
}

struct App {
    tasks: BTreeMap<String, Value>,
    history: bool,
    selected: Option<String>,
    editing: Editing,
    status: String,
    live: bool,
}

/// Replaces control characters (escape sequences included) with a visible mark.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

fn text(v: &Value, key: &str) -> String {
    clean(v[key].as_str().unwrap_or("-"))
}

fn pending(t: &Value) -> bool {
    t["state"] == "pending"
}

impl App {
    /// Stores `task` unless a newer view of it is known (events and vote answers arrive in
    /// either order; a higher revision is newer).
    fn upsert(&mut self, id: &str, task: &Value) {
        let revision = |t: &Value| t["revision"].as_u64().unwrap_or(0);
        if self
            .tasks
            .get(id)
            .is_none_or(|known| revision(known) <= revision(task))
        {
            self.tasks.insert(id.to_owned(), task.clone());
        }
    }

    fn visible(&self) -> Vec<&Value> {
        let mut list: Vec<&Value> = self
            .tasks
            .values()
            .filter(|t| pending(t) != self.history)
            .collect();
        list.sort_by(|a, b| {
            b["created_at"]
                .as_u64()
                .cmp(&a["created_at"].as_u64())
                .then_with(|| b["id"].as_str().cmp(&a["id"].as_str()))
        });
        list
    }

    fn current(&self) -> Option<&Value> {
        self.selected.as_ref().and_then(|id| self.tasks.get(id))
    }

    fn fix_selection(&mut self) {
        let visible: Vec<String> = self
            .visible()
            .iter()
            .map(|t| t["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        if !self.selected.as_ref().is_some_and(|s| visible.contains(s)) {
            self.selected = visible.first().cloned();
        }
    }

    fn step(&mut self, by: isize) {
        let visible: Vec<String> = self
            .visible()
            .iter()
            .map(|t| t["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        if visible.is_empty() {
            return;
        }
        let at = self
            .selected
            .as_ref()
            .and_then(|s| visible.iter().position(|v| v == s))
            .unwrap_or(0);
        let next = at
            .saturating_add_signed(by)
            .min(visible.len().saturating_sub(1));
        self.selected = Some(visible[next].clone());
    }
}

fn draw(f: &mut ratatui::Frame<'_>, app: &App) {
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Min(3),
            Constraint::Length(3),
        ])
        .split(f.area());
    let pending_count = app.tasks.values().filter(|t| pending(t)).count();
    let header = Line::from(vec![
        Span::styled(
            " warden desk ",
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(
            " {} pending ({}) · {} history ({}) · ",
            if app.history { " " } else { "▸" },
            pending_count,
            if app.history { "▸" } else { " " },
            app.tasks.len() - pending_count
        )),
        if app.live {
            Span::styled("● live", Style::default().fg(Color::Green))
        } else {
            Span::styled("○ reconnecting", Style::default().fg(Color::Red))
        },
    ]);
    f.render_widget(Paragraph::new(header), rows[0]);

    let cols = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(40), Constraint::Percentage(60)])
        .split(rows[1]);
    let visible = app.visible();
    let items: Vec<ListItem<'_>> = visible
        .iter()
        .map(|t| {
            ListItem::new(vec![
                Line::from(vec![
                    Span::styled(
                        text(t, "tool"),
                        Style::default().add_modifier(Modifier::BOLD),
                    ),
                    Span::raw(format!("  [{}]", text(t, "state"))),
                ]),
                Line::from(Span::styled(
                    format!("  {}  {}", text(t, "agent"), text(t, "id")),
                    Style::default().fg(Color::DarkGray),
                )),
            ])
        })
        .collect();
    let mut state = ListState::default();
    state.select(
        app.selected
            .as_ref()
            .and_then(|s| visible.iter().position(|t| t["id"].as_str() == Some(s))),
    );
    let title = if app.history {
        " History "
    } else {
        " Pending "
    };
    let list = List::new(items)
        .block(Block::default().borders(Borders::ALL).title(title))
        .highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    f.render_stateful_widget(list, cols[0], &mut state);

    let detail = match app.current() {
        None => vec![Line::from(if app.history {
            "No decided requests yet."
        } else {
            "Nothing is waiting for you. New requests appear here as they arrive."
        })],
        Some(t) => detail_lines(t),
    };
    f.render_widget(
        Paragraph::new(detail)
            .wrap(Wrap { trim: false })
            .block(Block::default().borders(Borders::ALL).title(" Request ")),
        cols[1],
    );

    let (prompt, help) = match &app.editing {
        Editing::None => (
            clean(&app.status),
            "a approve · d deny · m modify · j/k move · 1 pending · 2 history · q quit",
        ),
        Editing::Deny(note) => (
            format!("note for the agent: {}▏", clean(note)),
            "Enter deny · Esc cancel",
        ),
        Editing::Modify(args) => (
            format!("arguments (JSON): {}▏", clean(args)),
            "Enter modify and approve · Esc cancel",
        ),
    };
    f.render_widget(
        Paragraph::new(vec![
            Line::from(prompt),
            Line::from(Span::styled(help, Style::default().fg(Color::DarkGray))),
        ])
        .block(Block::default().borders(Borders::TOP)),
        rows[2],
    );
}

fn detail_lines(t: &Value) -> Vec<Line<'static>> {
    let agent = text(t, "agent");
    let short = agent.rsplit('/').next().unwrap_or("-").to_owned();
    let mut lines = vec![
        Line::from(Span::styled(
            format!("{short} wants to run {}", text(t, "tool")),
            Style::default().add_modifier(Modifier::BOLD),
        )),
        Line::from(text(t, "description")),
        Line::from(""),
    ];
    match t["reason"].as_str() {
        Some(r) => lines.push(Line::from(format!("The agent says: {}", clean(r)))),
        None => lines.push(Line::from("The agent gave no reason.")),
    }
    let a = &t["annotations"];
    let mut risks = Vec::new();
    if a["destructiveHint"] == json!(true) {
        risks.push("destructive");
    }
    if a["openWorldHint"] == json!(true) {
        risks.push("reaches the outside world");
    }
    if !risks.is_empty() {
        lines.push(Line::from(Span::styled(
            format!("Risk: {} (as the skill declares it)", risks.join(", ")),
            Style::default().fg(Color::Red),
        )));
    }
    lines.push(Line::from(""));
    let modified = !t["modified_arguments"].is_null();
    lines.push(Line::from(if modified {
        "Arguments (modified):"
    } else {
        "Arguments:"
    }));
    let args = if modified {
        &t["modified_arguments"]
    } else {
        &t["arguments"]
    };
    match args.as_object() {
        Some(map) if !map.is_empty() => {
            for (k, v) in map {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                lines.push(Line::from(format!("  {}: {}", clean(k), clean(&v))));
            }
        }
        _ => lines.push(Line::from(format!("  {}", clean(&args.to_string())))),
    }
    lines.push(Line::from(""));
    lines.push(Line::from(format!("Agent:   {agent}")));
    let quorums: Vec<String> = t["quorums"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(clean)
        .collect();
    lines.push(Line::from(format!("Needs:   {}", quorums.join(" and "))));
    let missing: Vec<String> = t["missing"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(clean)
        .collect();
    if !missing.is_empty() {
        lines.push(Line::from(format!("Missing: {}", missing.join(" and "))));
    }
    for v in t["votes"].as_array().into_iter().flatten() {
        lines.push(Line::from(format!(
            "Vote:    {} by {}",
            text(v, "vote"),
            text(v, "approver")
        )));
    }
    if let Some(n) = t["note"].as_str() {
        lines.push(Line::from(format!("Note:    {}", clean(n))));
    }
    lines.push(Line::from(format!("Skill:   {}", text(t, "skill"))));
    lines.push(Line::from(format!("Task:    {}", text(t, "id"))));
    lines
}

/// Restores the terminal when dropped.
struct Screen;

impl Screen {
    fn enter() -> Result<Self> {
        enable_raw_mode().context("the desk needs a terminal")?;
        execute!(std::io::stdout(), EnterAlternateScreen)?;
        Ok(Self)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = disable_raw_mode();
        let _ = execute!(std::io::stdout(), LeaveAlternateScreen);
    }
}

/// Follows the gateway's task events, reconnecting after a pause when the stream ends.
async fn follow(client: Client, tx: mpsc::Sender<Input>) {
    loop {
        if let Ok(mut body) = client.stream("/admin/v1/approvals/events").await {
            {
                let _ = tx.send(Input::Live(true)).await;
                // A reconnect may have missed events: list again.
                let _ = tx.send(Input::Resync).await;
                let mut buf = String::new();
                while let Some(Ok(frame)) = body.frame().await {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    buf.push_str(&String::from_utf8_lossy(&data));
                    while let Some(end) = buf.find("\n\n") {
                        let event: String = buf.drain(..end + 2).collect();
                        let mut kind = "message";
                        let mut payload = String::new();
                        for line in event.lines() {
                            if let Some(k) = line.strip_prefix("event:") {
                                kind = if k.trim() == "task" { "task" } else { "other" };
                            } else if let Some(d) = line.strip_prefix("data:") {
                                payload.push_str(d.trim_start());
                            }
                        }
                        let input = match kind {
                            "task" => serde_json::from_str(&payload).ok().map(Input::Task),
                            "other" => Some(Input::Resync),
                            _ => None,
                        };
                        if let Some(i) = input
                            && tx.send(i).await.is_err()
                        {
                            return;
                        }
                    }
                    if buf.len() > 4 << 20 {
                        buf.clear();
                    }
                }
            }
        }
        if tx.send(Input::Live(false)).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn list(client: &Client) -> Result<Vec<Value>> {
    let v = client
        .call("GET", "/admin/v1/approvals?state=all&limit=500", None)
        .await?;
    Ok(v["approvals"].as_array().cloned().unwrap_or_default())
}

async fn decide(client: &Client, id: &str, action: &str, body: Value) -> Result<Value> {
    if !warden::approvals::valid_id(id) {
        anyhow::bail!("not a task id");
    }
    client
        .call_raw(
            "POST",
            &format!("/admin/v1/approvals/{id}/{action}"),
            body.to_string().into_bytes(),
        )
        .await
}

/// `warden desk`
pub async fn run(t: Target) -> Result<()> {
    let client = Client::new(&t)?;
    let mut app = App {
        tasks: BTreeMap::new(),
        history: false,
        selected: None,
        editing: Editing::None,
        status: "connecting…".into(),
        live: false,
    };
    for task in list(&client).await? {
        if let Some(id) = task["id"].as_str() {
            app.upsert(id, &task);
        }
    }
    app.fix_selection();
    app.status = "ready".into();
    let (tx, mut rx) = mpsc::channel::<Input>(256);
    tokio::spawn(follow(Client::new(&t)?, tx.clone()));
    // Keys are read on a thread of their own (crossterm's reads block).
    let keys = tx.clone();
    std::thread::spawn(move || {
        loop {
            match event::poll(Duration::from_millis(200)) {
                Ok(true) => {
                    if let Ok(TermEvent::Key(k)) = event::read()
                        && keys.blocking_send(Input::Key(k)).is_err()
                    {
                        return;
                    }
                }
                Ok(false) => {
                    if keys.is_closed() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    let _screen = Screen::enter()?;
    let mut terminal =
        ratatui::Terminal::new(ratatui::backend::CrosstermBackend::new(std::io::stdout()))?;
    loop {
        terminal.draw(|f| draw(f, &app))?;
        let Some(input) = rx.recv().await else {
            return Ok(());
        };
        match input {
            Input::Live(l) => app.live = l,
            Input::Resync => {
                if let Ok(tasks) = list(&client).await {
                    for task in tasks {
                        if let Some(id) = task["id"].as_str() {
                            app.upsert(id, &task);
                        }
                    }
                }
            }
            Input::Task(task) => {
                if let Some(id) = task["id"].as_str() {
                    if !app.tasks.contains_key(id) && pending(&task) {
                        app.status = format!(
                            "new request: {} wants to run {}",
                            text(&task, "agent"),
                            text(&task, "tool")
                        );
                    }
                    app.upsert(id, &task);
                }
            }
            Input::Key(k) => {
                if !handle_key(&client, &mut app, k).await {
                    return Ok(());
                }
            }
        }
        app.fix_selection();
    }
}

/// One key press; false ends the desk.
async fn handle_key(client: &Client, app: &mut App, k: KeyEvent) -> bool {
    if k.kind != event::KeyEventKind::Press {
        return true;
    }
    if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
        return false;
    }
    let id = app.selected.clone();
    match std::mem::replace(&mut app.editing, Editing::None) {
        Editing::Deny(mut note) => {
            if edit_line(&mut note, k.code) {
                app.editing = Editing::Deny(note);
            } else if k.code == KeyCode::Esc {
                app.status = "cancelled".into();
            } else if let Some(id) = id {
                app.status = outcome(
                    app,
                    decide(client, &id, "deny", json!({ "note": note })).await,
                    "denied: the agent is told your note",
                );
            }
            return true;
        }
        Editing::Modify(mut args) => {
            if edit_line(&mut args, k.code) {
                app.editing = Editing::Modify(args);
            } else if k.code == KeyCode::Esc {
                app.status = "cancelled".into();
            } else {
                match serde_json::from_str::<Value>(&args) {
                    Ok(v) if v.is_object() => {
                        if let Some(id) = id {
                            app.status = outcome(
                                app,
                                decide(client, &id, "modify", json!({ "arguments": v })).await,
                                "modified and approved",
                            );
                        }
                    }
                    _ => {
                        app.status = "the arguments must be a JSON object".into();
                        app.editing = Editing::Modify(args);
                    }
                }
            }
            return true;
        }
        Editing::None => {}
    }
    let is_pending = app.current().is_some_and(pending);
    match k.code {
        KeyCode::Char('q') | KeyCode::Esc => return false,
        KeyCode::Char('j') | KeyCode::Down => app.step(1),
        KeyCode::Char('k') | KeyCode::Up => app.step(-1),
        KeyCode::Char('1') => app.history = false,
        KeyCode::Char('2') => app.history = true,
        KeyCode::Char('a') if is_pending => {
            if let Some(id) = id {
                app.status = outcome(
                    app,
                    decide(client, &id, "approve", json!({})).await,
                    "approved",
                );
            }
        }
        KeyCode::Char('d') if is_pending => app.editing = Editing::Deny(String::new()),
        KeyCode::Char('m') if is_pending => {
            let current = app.current().map_or(Value::Null, |t| {
                if t["modified_arguments"].is_null() {
                    t["arguments"].clone()
                } else {
                    t["modified_arguments"].clone()
                }
            });
            app.editing = Editing::Modify(current.to_string());
        }
        _ => {}
    }
    true
}

/// Edits the bottom line with `key`; false when the key ends the editing (Enter or Esc).
fn edit_line(line: &mut String, key: KeyCode) -> bool {
    match key {
        KeyCode::Enter | KeyCode::Esc => return false,
        KeyCode::Backspace => {
            line.pop();
        }
        KeyCode::Char(c) => line.push(c),
        _ => {}
    }
    true
}

/// The status line after a decision (the updated task is stored).
fn outcome(app: &mut App, result: Result<Value>, done: &str) -> String {
    match result {
        Ok(task) => {
            let state = text(&task, "state");
            if let Some(id) = task["id"].as_str() {
                app.upsert(id, &task);
            }
            let missing: Vec<String> = task["missing"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(clean)
                .collect();
            if missing.is_empty() {
                format!("{done} (the task is {state})")
            } else {
                format!("your vote counted; still missing {}", missing.join(" and "))
            }
        }
        Err(e) => format!("refused: {}", clean(&e.to_string())),
    }
}

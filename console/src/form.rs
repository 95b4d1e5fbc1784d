//! A small form: labelled text, secret and choice fields, one focused.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

#[derive(Clone, Debug)]
pub enum FieldKind {
    Text,
    /// Shown as stars.
    Secret,
    /// One of these; Left/Right/Space cycle.
    Choice(&'static [&'static str]),
}

#[derive(Clone, Debug)]
pub struct Field {
    pub label: &'static str,
    pub value: String,
    pub kind: FieldKind,
}

impl Field {
    pub fn text(label: &'static str, value: impl Into<String>) -> Self {
        Field { label, value: value.into(), kind: FieldKind::Text }
    }
    pub fn secret(label: &'static str) -> Self {
        Field { label, value: String::new(), kind: FieldKind::Secret }
    }
    pub fn choice(label: &'static str, options: &'static [&'static str], value: &str) -> Self {
        Field { label, value: value.into(), kind: FieldKind::Choice(options) }
    }
    /// What the screen shows.
    pub fn shown(&self) -> String {
        match self.kind {
            FieldKind::Secret => "*".repeat(self.value.chars().count()),
            FieldKind::Choice(opts) => opts.iter().map(|o| if *o == self.value { format!("({o})") } else { format!(" {o} ") }).collect::<Vec<_>>().join(" "),
            FieldKind::Text => self.value.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Form {
    pub fields: Vec<Field>,
    pub focus: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum FormEvent {
    None,
    Submit,
    Back,
}

impl Form {
    pub fn new(fields: Vec<Field>) -> Self {
        Form { fields, focus: 0 }
    }

    pub fn value(&self, label: &str) -> &str {
        self.fields.iter().find(|f| f.label == label).map(|f| f.value.as_str()).unwrap_or("")
    }

    pub fn set(&mut self, label: &str, value: impl Into<String>) {
        if let Some(f) = self.fields.iter_mut().find(|f| f.label == label) {
            f.value = value.into();
        }
    }

    /// Focuses the field with this label (after a validation error).
    pub fn focus_on(&mut self, label: &str) {
        if let Some(i) = self.fields.iter().position(|f| f.label == label) {
            self.focus = i;
        }
    }

    pub fn clear_secrets(&mut self) {
        for f in &mut self.fields {
            if matches!(f.kind, FieldKind::Secret) {
                f.value.clear();
            }
        }
    }

    pub fn key(&mut self, key: KeyEvent) -> FormEvent {
        let n = self.fields.len();
        let field = &mut self.fields[self.focus];
        match key.code {
            KeyCode::Enter => return FormEvent::Submit,
            KeyCode::Esc => return FormEvent::Back,
            KeyCode::Tab | KeyCode::Down => self.focus = (self.focus + 1) % n,
            KeyCode::BackTab | KeyCode::Up => self.focus = (self.focus + n - 1) % n,
            KeyCode::Left | KeyCode::Right | KeyCode::Char(' ') if matches!(field.kind, FieldKind::Choice(_)) => {
                if let FieldKind::Choice(opts) = field.kind {
                    let i = opts.iter().position(|o| *o == field.value).unwrap_or(0);
                    let next = if key.code == KeyCode::Left { (i + opts.len() - 1) % opts.len() } else { (i + 1) % opts.len() };
                    field.value = opts[next].to_string();
                }
            }
            KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => field.value.clear(),
            KeyCode::Backspace => {
                field.value.pop();
            }
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) && !matches!(field.kind, FieldKind::Choice(_)) => field.value.push(c),
            _ => {}
        }
        FormEvent::None
    }
}

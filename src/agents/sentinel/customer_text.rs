//! Every string of a chat request that the customer wrote and the model will read, grouped by
//! where it sits (one role's `content`, one role's `tool_calls`, the `tools`, ...), each string
//! remembering its path (`messages[2].tool_calls[0].function.arguments`).
//!
//! A group is scanned as one text (its strings one paragraph each), so that an attack split over
//! turns is seen whole, while the scan count stays a handful whatever the history's length.

use serde_json::{Map, Value};
use std::ops::Range;

/// The top-level fields of a chat completions request whose strings reach the model.
pub const CHAT_INPUT_FIELDS: &[&str] =
    &["messages", "tools", "functions", "response_format", "prediction", "documents"];

/// Keys whose string values are identifiers, enums or binary data, never text for the model
/// (`image_url.url`, `input_audio.data`, `tool_call_id`, a part's `type`, ...). A `match`, which
/// compiles to a length switch: this runs on every key of the request.
fn is_not_text(key: &str) -> bool {
    matches!(
        key,
        "type" | "id" | "tool_call_id" | "role" | "url" | "detail" | "data" | "file_data" | "file_id" | "format"
    )
}

/// A role is customer text too: a long one is cut in labels.
const MAX_ROLE_CHARS: usize = 32;

/// A message role (none outside `messages`) and a field.
type Place<'a> = (Option<&'a str>, &'a str);

#[derive(Debug, Default)]
pub struct CustomerText {
    groups: Vec<Group>,
}

/// The strings of one kind of place, one paragraph each.
#[derive(Debug)]
pub(super) struct Group {
    /// The message role, for strings of `messages`.
    role: Option<String>,
    /// The message field (`content`, `name`, `tool_calls`, ...) or the top-level field (`tools`).
    field: String,
    pub(super) text: String,
    /// The strings' paths, end to end (one buffer, not an allocation per string).
    paths: String,
    parts: Vec<Part>,
}

#[derive(Debug)]
struct Part {
    /// Where the path lies in `paths`, and the string in `text`.
    path: Range<usize>,
    text: Range<usize>,
}

impl CustomerText {
    /// Reads the model-visible strings of a request body: those under `fields`, the top-level
    /// fields the model reads (the others — `model`, `user`, `metadata`, `stop`, ... — are
    /// parameters it never reads). `messages`, and the Responses API's `input` items, are read
    /// message by message, each string grouped by its role. Fields in key order: serde_json's
    /// maps are sorted.
    pub fn of_request(request: &Map<String, Value>, fields: &[&str]) -> CustomerText {
        let mut found = CustomerText::default();
        let mut path = String::new();
        for (key, value) in request.iter().filter(|(k, _)| fields.contains(&k.as_str())) {
            path.clear();
            path.push_str(key);
            match (key.as_str(), value) {
                ("messages" | "input", Value::Array(messages)) => {
                    for (index, message) in messages.iter().enumerate() {
                        path.clear();
                        path.push_str(key);
                        push_index(&mut path, index);
                        found.message(message, &mut path);
                    }
                }
                _ => found.walk((None, key), value, &mut path),
            }
        }
        found
    }

    /// Nothing worth scanning.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    pub(super) fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// All of it, one paragraph a string: what the judge reads and a stored prompt keeps.
    pub fn joined(&self) -> String {
        let mut all = String::with_capacity(self.groups.iter().map(|g| g.text.len() + 2).sum());
        for group in &self.groups {
            if !all.is_empty() {
                all.push_str("\n\n");
            }
            all.push_str(&group.text);
        }
        all
    }

    fn message(&mut self, message: &Value, path: &mut String) {
        let Value::Object(fields) = message else {
            return self.walk((Some("none"), "content"), message, path);
        };
        let role = match fields.get("role") {
            Some(Value::String(role)) => role.as_str(),
            _ => "none",
        };
        for (field, value) in fields {
            if value.is_string() && is_not_text(field) {
                continue;
            }
            let len = path.len();
            path.push('.');
            path.push_str(field);
            self.walk((Some(role), field), value, path);
            path.truncate(len);
        }
    }

    /// The group for (role, field), added when new: only places with text have one.
    fn group(&mut self, (role, field): Place) -> &mut Group {
        let role = role.map(|r| match r.char_indices().nth(MAX_ROLE_CHARS) {
            Some((cut, _)) => &r[..cut],
            None => r,
        });
        let index = match self.groups.iter().position(|g| g.role.as_deref() == role && g.field == field) {
            Some(index) => index,
            None => {
                let group = Group {
                    role: role.map(str::to_owned),
                    field: field.to_owned(),
                    text: String::new(),
                    paths: String::new(),
                    parts: Vec::new(),
                };
                self.groups.push(group);
                self.groups.len() - 1
            }
        };
        &mut self.groups[index]
    }

    fn walk(&mut self, place: Place, value: &Value, path: &mut String) {
        let len = path.len();
        match value {
            Value::String(s) if !s.trim().is_empty() => {
                let group = self.group(place);
                if !group.text.is_empty() {
                    group.text.push_str("\n\n");
                }
                let (text_start, path_start) = (group.text.len(), group.paths.len());
                group.text.push_str(s);
                group.paths.push_str(path);
                group.parts.push(Part { path: path_start..group.paths.len(), text: text_start..group.text.len() });
            }
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    push_index(path, index);
                    self.walk(place, item, path);
                    path.truncate(len);
                }
            }
            Value::Object(fields) => {
                for (key, item) in fields {
                    if item.is_string() && is_not_text(key) {
                        continue;
                    }
                    path.push('.');
                    path.push_str(key);
                    self.walk(place, item, path);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }
}

impl Group {
    /// The group as a place: `role=tool content`, `tools`.
    pub(super) fn label(&self) -> String {
        match &self.role {
            Some(role) => format!("role={role} {}", self.field),
            None => self.field.clone(),
        }
    }

    /// Each string of the group with where it was (`messages[3].content (role=tool)`).
    pub(super) fn parts(&self) -> impl Iterator<Item = (String, &str)> {
        self.parts.iter().map(|part| {
            let (path, text) = (&self.paths[part.path.clone()], &self.text[part.text.clone()]);
            match &self.role {
                Some(role) => (format!("{path} (role={role})"), text),
                None => (path.to_owned(), text),
            }
        })
    }

    pub(super) fn part_count(&self) -> usize {
        self.parts.len()
    }
}

/// Appends `[index]` (on every string's path: cheaper than `write!`).
fn push_index(path: &mut String, index: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = index;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    path.push('[');
    path.extend(digits[at..].iter().map(|&d| char::from(d)));
    path.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn places(request: Value) -> Vec<(String, Vec<(String, String)>)> {
        let Value::Object(request) = request else { panic!("an object") };
        let found = CustomerText::of_request(&request, CHAT_INPUT_FIELDS);
        found
            .groups()
            .iter()
            .map(|g| (g.label(), g.parts().map(|(place, text)| (place, text.to_owned())).collect()))
            .collect()
    }

    fn place(at: &str, text: &str) -> (String, String) {
        (at.to_owned(), text.to_owned())
    }

    #[test]
    fn every_model_visible_string_is_found_with_its_place() {
        let request = json!({
            "model": "gpt-4o-mini",
            "user": "customer-42",
            "metadata": {"note": "not read by the model"},
            "messages": [
                {"role": "system", "content": "sys text"},
                {"role": "user", "name": "Ada", "content": [
                    {"type": "text", "text": "look at this"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "high"}},
                    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                    {"type": "text", "text": "and this"}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "tool result"},
                {"role": "developer", "content": "dev text"},
                {"role": "user", "content": "   "},
                {"role": "user", "content": "second question"},
                {"role": "critic", "content": "unknown role"},
                "not an object"
            ],
            "tools": [{"type": "function", "function": {"name": "lookup", "description": "Looks things up.",
                "parameters": {"type": "object", "properties": {"q": {"type": "string", "description": "The query."}}}}}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "description": "schema text"}}
        });
        assert_eq!(
            places(request),
            vec![
                ("role=system content".into(), vec![place("messages[0].content (role=system)", "sys text")]),
                (
                    "role=user content".into(),
                    vec![
                        place("messages[1].content[0].text (role=user)", "look at this"),
                        place("messages[1].content[3].text (role=user)", "and this"),
                        place("messages[6].content (role=user)", "second question"),
                    ]
                ),
                ("role=user name".into(), vec![place("messages[1].name (role=user)", "Ada")]),
                (
                    "role=assistant tool_calls".into(),
                    vec![
                        place("messages[2].tool_calls[0].function.arguments (role=assistant)", "{\"q\":\"x\"}"),
                        place("messages[2].tool_calls[0].function.name (role=assistant)", "lookup"),
                    ]
                ),
                ("role=tool content".into(), vec![place("messages[3].content (role=tool)", "tool result")]),
                ("role=developer content".into(), vec![place("messages[4].content (role=developer)", "dev text")]),
                ("role=critic content".into(), vec![place("messages[7].content (role=critic)", "unknown role")]),
                ("role=none content".into(), vec![place("messages[8] (role=none)", "not an object")]),
                (
                    "response_format".into(),
                    vec![
                        place("response_format.json_schema.description", "schema text"),
                        place("response_format.json_schema.name", "answer"),
                    ]
                ),
                (
                    "tools".into(),
                    vec![
                        place("tools[0].function.description", "Looks things up."),
                        place("tools[0].function.name", "lookup"),
                        place("tools[0].function.parameters.properties.q.description", "The query."),
                    ]
                ),
            ]
        );
    }

    #[test]
    fn user_turns_are_one_text_as_before() {
        let Value::Object(request) = json!({"messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": [{"type": "text", "text": "look at this"}, {"type": "text", "text": "and this"}]},
        ]}) else {
            panic!("an object")
        };
        let found = CustomerText::of_request(&request, CHAT_INPUT_FIELDS);
        assert_eq!(found.groups()[0].text, "first question\n\nlook at this\n\nand this");
        assert_eq!(found.joined(), "first question\n\nlook at this\n\nand this\n\nan answer");
    }

    #[test]
    fn indices_are_written_in_decimal() {
        for index in [0, 7, 10, 99, 12_345, usize::MAX] {
            let mut path = String::from("a");
            push_index(&mut path, index);
            assert_eq!(path, format!("a[{index}]"));
        }
    }

    #[test]
    fn a_long_role_is_cut_in_labels() {
        let role = "r".repeat(100);
        let places = places(json!({"messages": [{"role": role, "content": "x"}]}));
        assert_eq!(places[0].0, format!("role={} content", "r".repeat(MAX_ROLE_CHARS)));
    }
}

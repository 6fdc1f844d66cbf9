//! A renderer for the subset of Go templates (as Helm uses them) that the chart in
//! `deploy/helm/portcullis` is written in: `{{ .Values.a.b }}` and `$`-rooted paths, string and
//! number literals, pipelines into `quote`, `toYaml`, `nindent N`, `indent N` and `default X`,
//! `{{- … -}}` whitespace trimming, `{{/* comments */}}`, and `if`/`else`/`end`, `range` and
//! `with` blocks. Anything else is an error, so the chart cannot drift into syntax this does not
//! check.

use serde_json::Value;

/// One parsed piece of a template.
#[derive(Debug)]
enum Node {
    Text(String),
    Print(String),
    If(String, Vec<Node>, Vec<Node>),
    Range(String, Vec<Node>),
    With(String, Vec<Node>),
}

/// Splits a template into text and actions, applying `{{-` and `-}}` trimming.
fn tokens(template: &str) -> Result<Vec<(bool, String)>, String> {
    let mut out: Vec<(bool, String)> = Vec::new();
    let mut rest = template;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or("an action is not closed with }}")?;
        let mut action = &after[..end];
        if let Some(a) = action.strip_prefix('-') {
            text = text.trim_end();
            action = a;
        }
        trim_next = false;
        if let Some(a) = action.strip_suffix('-') {
            trim_next = true;
            action = a;
        }
        out.push((false, text.to_string()));
        let action = action.trim();
        if !(action.starts_with("/*") && action.ends_with("*/")) {
            out.push((true, action.to_string()));
        }
        rest = &after[end + 2..];
    }
    out.push((
        false,
        if trim_next { rest.trim_start() } else { rest }.to_string(),
    ));
    Ok(out)
}

/// Parses tokens into nodes up to an `end` (or `else`), returning what stopped it.
fn parse(
    tokens: &mut std::vec::IntoIter<(bool, String)>,
) -> Result<(Vec<Node>, Option<&'static str>), String> {
    let mut nodes = Vec::new();
    while let Some((action, text)) = tokens.next() {
        if !action {
            nodes.push(Node::Text(text));
            continue;
        }
        let (word, rest) = text.split_once(' ').unwrap_or((text.as_str(), ""));
        match word {
            "end" => return Ok((nodes, Some("end"))),
            "else" => return Ok((nodes, Some("else"))),
            "if" => {
                let (then, stop) = parse(tokens)?;
                let otherwise = if stop == Some("else") {
                    let (o, stop) = parse(tokens)?;
                    if stop != Some("end") {
                        return Err("if … else without end".into());
                    }
                    o
                } else if stop == Some("end") {
                    Vec::new()
                } else {
                    return Err("if without end".into());
                };
                nodes.push(Node::If(rest.trim().to_string(), then, otherwise));
            }
            "range" | "with" => {
                let (body, stop) = parse(tokens)?;
                if stop != Some("end") {
                    return Err(format!("{word} without end"));
                }
                let expr = rest.trim().to_string();
                nodes.push(if word == "range" {
                    Node::Range(expr, body)
                } else {
                    Node::With(expr, body)
                });
            }
            "define" | "template" | "include" | "block" | "tpl" => {
                return Err(format!("{word} is not supported here"));
            }
            _ => nodes.push(Node::Print(text)),
        }
    }
    Ok((nodes, None))
}

/// Words of a command, keeping quoted strings whole.
fn words(command: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in command.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn lookup(path: &str, dot: &Value, root: &Value) -> Result<Value, String> {
    let (mut value, rest) = if let Some(rest) = path.strip_prefix('$') {
        (root, rest)
    } else {
        (dot, path)
    };
    for key in rest.split('.').filter(|k| !k.is_empty()) {
        value = value.get(key).unwrap_or(&Value::Null);
    }
    Ok(value.clone())
}

fn term(word: &str, dot: &Value, root: &Value) -> Result<Value, String> {
    if word.starts_with('"') {
        return serde_json::from_str(word).map_err(|e| format!("bad string {word}: {e}"));
    }
    if word.starts_with('.') || word.starts_with('$') {
        return lookup(word, dot, root);
    }
    word.parse::<i64>()
        .map(Value::from)
        .map_err(|_| format!("unknown term {word:?}"))
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn indent(n: usize, s: &str) -> String {
    let pad = " ".repeat(n);
    s.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Evaluates a pipeline: `TERM | FN ARGS… | …` or `FN ARGS…`.
fn pipeline(expr: &str, dot: &Value, root: &Value) -> Result<Value, String> {
    let mut value: Option<Value> = None;
    for command in expr.split('|') {
        let w = words(command);
        let (name, args) = w.split_first().ok_or("an empty command")?;
        let mut args: Vec<Value> = args
            .iter()
            .map(|a| term(a, dot, root))
            .collect::<Result<_, _>>()?;
        if let Some(v) = value.take() {
            args.push(v);
        }
        let arg = |i: usize| args.get(i).cloned().unwrap_or(Value::Null);
        value = Some(match name.as_str() {
            "quote" => Value::String(Value::String(text(&arg(0))).to_string()),
            "toYaml" => {
                let yaml = serde_norway::to_string(&arg(0)).map_err(|e| e.to_string())?;
                Value::String(yaml.trim_end().to_string())
            }
            "nindent" | "indent" => {
                let n = arg(0).as_u64().ok_or("indent needs a number")? as usize;
                let body = indent(n, &text(&arg(1)));
                Value::String(if name == "nindent" {
                    format!("\n{body}")
                } else {
                    body
                })
            }
            "default" => {
                if truthy(&arg(1)) {
                    arg(1)
                } else {
                    arg(0)
                }
            }
            "not" => Value::Bool(!truthy(&arg(0))),
            _ if args.is_empty() => term(name, dot, root)?,
            other => return Err(format!("unknown function {other:?}")),
        });
    }
    value.ok_or_else(|| "an empty pipeline".to_string())
}

fn eval(nodes: &[Node], dot: &Value, root: &Value, out: &mut String) -> Result<(), String> {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Print(expr) => out.push_str(&text(&pipeline(expr, dot, root)?)),
            Node::If(cond, then, otherwise) => {
                let branch = if truthy(&pipeline(cond, dot, root)?) {
                    then
                } else {
                    otherwise
                };
                eval(branch, dot, root, out)?;
            }
            Node::With(expr, body) => {
                let value = pipeline(expr, dot, root)?;
                if truthy(&value) {
                    eval(body, &value, root, out)?;
                }
            }
            Node::Range(expr, body) => match pipeline(expr, dot, root)? {
                Value::Array(items) => {
                    for item in &items {
                        eval(body, item, root, out)?;
                    }
                }
                Value::Null => {}
                other => return Err(format!("range over {other}")),
            },
        }
    }
    Ok(())
}

/// Renders `template` with `root` as both `.` and `$`.
pub fn render(template: &str, root: &Value) -> Result<String, String> {
    let mut tokens = tokens(template)?.into_iter();
    let (nodes, stop) = parse(&mut tokens)?;
    if let Some(stop) = stop {
        return Err(format!("{stop} without a block"));
    }
    let mut out = String::new();
    eval(&nodes, root, root, &mut out)?;
    Ok(out)
}

#[test]
fn the_subset_renders_like_helm() {
    let root = serde_json::json!({
        "Values": { "name": "x", "on": true, "off": false, "list": ["a", "b"], "map": { "k": "v" }, "empty": {} },
        "Release": { "Namespace": "ns" },
    });
    let t = "a: {{ .Values.name }}\n{{- if .Values.off }}\nno\n{{- else }}\nb: {{ $.Release.Namespace | quote }}\n{{- end }}\n{{- range .Values.list }}\n- {{ . }}\n{{- end }}\n{{- with .Values.map }}\nm:{{ toYaml . | nindent 2 }}\n{{- end }}\n{{- with .Values.empty }}\nnever\n{{- end }}\nd: {{ .Values.missing | default \"z\" }}{{/* note */}}\n";
    let r = render(t, &root).expect("renders");
    assert_eq!(r, "a: x\nb: \"ns\"\n- a\n- b\nm:\n  k: v\nd: z\n");
    assert!(render("{{ include \"x\" . }}", &root).is_err());
    assert!(render("{{ if .Values.on }}", &root).is_err());
}

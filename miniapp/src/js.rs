//! A static scan of `bot-logic.js` and `tools.js` for APIs a mini-app must not use.
//!
//! The QuickJS runtime guest has none of these anyway; the scan tells the author early,
//! with the line, instead of failing at run time. It masks comments and string contents
//! first, so a prompt saying "the process." is not a finding. It is not a sandbox: code
//! that builds names at run time (`globalThis["ev" + "al"]`) passes the scan and meets the
//! runtime's limits instead.

/// One forbidden use found in a JS file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What was found, e.g. `require(`.
    pub api: String,
    /// Why it is refused.
    pub why: &'static str,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: `{}` is not allowed: {}",
            self.file, self.line, self.api, self.why
        )
    }
}

/// The only module a `bot-logic.js` may import.
pub const ALLOWED_IMPORT: &str = "./tools.js";

/// (needle, must the character before it be a non-identifier (and not `.`), why)
const FORBIDDEN: &[(&str, &str)] = &[
    (
        "require(",
        "there are no CommonJS modules; import from './tools.js'",
    ),
    ("process.", "there is no process object; use context.env"),
    ("eval(", "code built at run time is not allowed"),
    ("Function(", "code built at run time is not allowed"),
    (
        "globalThis.fetch",
        "use context.tools.fetch (needs a network permission)",
    ),
    (
        "fetch(",
        "use context.tools.fetch (needs a network permission)",
    ),
    (
        "XMLHttpRequest",
        "use context.tools.fetch (needs a network permission)",
    ),
    ("WebSocket", "sockets are not available to mini-apps"),
    ("import(", "dynamic import is not allowed"),
];

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$'
}

/// Replaces comments and the contents of string and template literals by spaces,
/// keeping quotes, newlines and `${…}` code. Output has the same length as input.
fn mask(src: &str) -> Vec<u8> {
    #[derive(Clone, Copy, PartialEq)]
    enum S {
        Code,
        Line,
        Block,
        Str(u8),
        Template,
    }
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let mut state = S::Code;
    // For each open `${`, the brace depth of code inside it.
    let mut templates: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        match state {
            S::Code => match c {
                b'/' if next == Some(b'/') => {
                    state = S::Line;
                    out[i] = b' ';
                }
                b'/' if next == Some(b'*') => {
                    state = S::Block;
                    out[i] = b' ';
                }
                b'\'' | b'"' => state = S::Str(c),
                b'`' => state = S::Template,
                b'{' => {
                    if let Some(d) = templates.last_mut() {
                        *d += 1;
                    }
                }
                b'}' => match templates.last_mut() {
                    Some(0) => {
                        templates.pop();
                        state = S::Template;
                    }
                    Some(d) => *d -= 1,
                    None => {}
                },
                _ => {}
            },
            S::Line => {
                if c == b'\n' {
                    state = S::Code;
                } else {
                    out[i] = b' ';
                }
            }
            S::Block => {
                if c == b'*' && next == Some(b'/') {
                    out[i] = b' ';
                    out[i + 1] = b' ';
                    i += 1;
                    state = S::Code;
                } else if c != b'\n' {
                    out[i] = b' ';
                }
            }
            S::Str(q) => {
                if c == b'\\' {
                    out[i] = b' ';
                    if next.is_some_and(|n| n != b'\n') {
                        out[i + 1] = b' ';
                    }
                    i += 1;
                } else if c == q || c == b'\n' {
                    state = S::Code;
                } else {
                    out[i] = b' ';
                }
            }
            S::Template => {
                if c == b'\\' {
                    out[i] = b' ';
                    if next.is_some_and(|n| n != b'\n') {
                        out[i + 1] = b' ';
                    }
                    i += 1;
                } else if c == b'`' {
                    state = S::Code;
                } else if c == b'$' && next == Some(b'{') {
                    templates.push(0);
                    state = S::Code;
                    i += 1;
                } else if c != b'\n' {
                    out[i] = b' ';
                }
            }
        }
        i += 1;
    }
    out
}

fn line_of(src: &[u8], at: usize) -> usize {
    src[..at].iter().filter(|&&c| c == b'\n').count() + 1
}

/// The string literal starting at `at` in `src` (after optional whitespace), if any.
fn string_at(src: &str, at: usize) -> Option<&str> {
    let rest = src.get(at..)?.trim_start();
    let quote = rest.chars().next().filter(|c| matches!(c, '\'' | '"'))?;
    let body = &rest[1..];
    body.find(quote).map(|end| &body[..end])
}

/// Scans one JS file; `file` names it in the findings.
pub fn scan(file: &str, src: &str) -> Vec<Finding> {
    let masked = mask(src);
    let mut findings = Vec::new();
    let mut push = |at: usize, api: String, why: &'static str| {
        findings.push(Finding {
            file: file.to_owned(),
            line: line_of(&masked, at),
            api,
            why,
        })
    };
    for (needle, why) in FORBIDDEN {
        let n = needle.as_bytes();
        let mut from = 0;
        while let Some(pos) = find(&masked[from..], n).map(|p| p + from) {
            from = pos + 1;
            let before = pos.checked_sub(1).map(|p| masked[p]);
            // `x.fetch(` and `myeval(` are someone else's functions; `new Function(` is not.
            if before.is_some_and(|c| is_ident(c) || c == b'.') {
                continue;
            }
            push(pos, (*needle).to_owned(), why);
        }
    }
    // Static imports and re-exports: `import … from '…'`, `import '…'`, `export … from '…'`.
    for keyword in ["from", "import"] {
        let k = keyword.as_bytes();
        let mut from = 0;
        while let Some(pos) = find(&masked[from..], k).map(|p| p + from) {
            from = pos + 1;
            let end = pos + k.len();
            let before = pos.checked_sub(1).map(|p| masked[p]);
            if before.is_some_and(|c| is_ident(c) || c == b'.')
                || masked.get(end).is_some_and(|&c| is_ident(c))
            {
                continue;
            }
            if let Some(spec) = string_at(src, end)
                && spec != ALLOWED_IMPORT
            {
                push(
                    pos,
                    format!("{keyword} '{spec}'"),
                    "the only module a mini-app may import is './tools.js'",
                );
            }
        }
    }
    findings.sort_by_key(|f| f.line);
    findings
}

/// The names a module exports, or `None` when it re-exports another module wholesale
/// (`export * from …`, `export default …`), so its exports cannot be listed statically.
///
/// Understands `export [async] function[*] NAME`, `export const|let|var|class NAME` and
/// `export { a, b as c }` (with or without `from`).
pub fn exports(src: &str) -> Option<Vec<String>> {
    let masked = mask(src);
    let code = String::from_utf8_lossy(&masked);
    let mut names = Vec::new();
    let mut from = 0;
    while let Some(pos) = find(&masked[from..], b"export").map(|p| p + from) {
        from = pos + 1;
        let before = pos.checked_sub(1).map(|p| masked[p]);
        let end = pos + "export".len();
        if before.is_some_and(|c| is_ident(c) || c == b'.')
            || masked.get(end).is_some_and(|&c| is_ident(c))
        {
            continue;
        }
        let rest = code[end..].trim_start();
        let mut words = rest
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
            .filter(|w| !w.is_empty());
        if rest.starts_with('*') {
            return None;
        }
        if let Some(list) = rest.strip_prefix('{') {
            let list = list.split('}').next().unwrap_or_default();
            for item in list.split(',') {
                let item: Vec<&str> = item.split_whitespace().collect();
                match item.as_slice() {
                    [name] | [_, "as", name] => names.push((*name).to_owned()),
                    _ => {}
                }
            }
            continue;
        }
        match words.next() {
            Some("default") => return None,
            Some("async") if words.next() == Some("function") => {
                names.extend(words.next().map(str::to_owned));
            }
            Some("function" | "const" | "let" | "var" | "class") => {
                names.extend(words.next().map(str::to_owned));
            }
            _ => {}
        }
    }
    Some(names)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apis(src: &str) -> Vec<(usize, String)> {
        scan("bot-logic.js", src)
            .into_iter()
            .map(|f| (f.line, f.api))
            .collect()
    }

    #[test]
    fn exports_are_listed() {
        let src = "export async function write(p, c) {}\nexport function* gen() {}\nexport const a = 1, b = 2;\nfunction x() {}\nfunction y() {}\nexport { x, y as why };\n// export function commented() {}\nconst s = 'export function inString() {}';\nmyexport(1);";
        assert_eq!(exports(src).unwrap(), ["write", "gen", "a", "x", "why"]);
        assert_eq!(exports("export * from './tools.js';"), None);
        assert_eq!(exports("export default { write }"), None);
    }

    #[test]
    fn clean_code_passes() {
        let src = r#"import { wordCount } from './tools.js';
// require('fs') in a comment is fine, so is /* eval( */
export async function write(payload, context) {
  const prompt = `Describe the process. Use ${payload.topic}`;
  const r = await context.tools.fetch("https://x", {});
  for await (const chunk of context.ai.generateText({ prompt: "don't eval(" + prompt })) {
    context.emit(chunk);
  }
  return myeval(1) + obj.Function(2);
}"#;
        assert_eq!(apis(src), Vec::<(usize, String)>::new());
    }

    #[test]
    fn forbidden_apis_are_found_with_their_line() {
        let src = "const fs = require('fs');\nlet k = process.env.KEY;\neval(\"1\");\nnew Function('x');\nimport os from 'os';\nconst m = await import('./tools.js');\nglobalThis.fetch('u');\nnew WebSocket(`ws://${process.pid}`);\nexport * from \"../x.js\";";
        assert_eq!(
            apis(src),
            vec![
                (1, "require(".to_owned()),
                (2, "process.".to_owned()),
                (3, "eval(".to_owned()),
                (4, "Function(".to_owned()),
                (5, "from 'os'".to_owned()),
                (6, "import(".to_owned()),
                (7, "globalThis.fetch".to_owned()),
                (8, "process.".to_owned()),
                (8, "WebSocket".to_owned()),
                (9, "from '../x.js'".to_owned()),
            ]
        );
        let f = &scan("tools.js", "\n\nrequire('x')")[0];
        assert_eq!(
            f.to_string(),
            "tools.js:3: `require(` is not allowed: there are no CommonJS modules; import from './tools.js'"
        );
    }
}

//! Normalisation of the texts both sides spell differently: type names (`VARCHAR(255)` in the
//! inventory, `character varying(255)` in the catalog), default and index expressions
//! (`'active'` vs `'active'::text`, `NOW()` vs `now()`, `status IN (...)` vs
//! `status::text = ANY (ARRAY[...]::text[])`), serial and identity columns.
//!
//! The rules, applied outside quoted literals only (a literal keeps its case and content):
//! lower case; casts (`::type`) removed; double quotes removed; `= any (array[...])` written
//! `in (...)`; grouping parentheses removed (a function call's or `in`'s are kept); whitespace
//! collapsed; a quoted number unquoted (`'1800000000000'::bigint` is `1800000000000`).

/// A type as the catalog's `format_type` writes it.
pub fn type_name(raw: &str) -> String {
    let raw = raw.trim().to_lowercase();
    if let Some(element) = raw.strip_suffix("[]") {
        return format!("{}[]", type_name(element));
    }
    let (base, modifier) = match raw.find('(') {
        Some(i) => (raw[..i].trim(), &raw[i..]),
        None => (raw.as_str(), ""),
    };
    let base = match base {
        "varchar" => "character varying",
        "char" | "bpchar" => "character",
        "timestamp" => "timestamp without time zone",
        "timestamptz" => "timestamp with time zone",
        "int" | "int4" | "serial" | "serial4" => "integer",
        "int8" | "bigserial" | "serial8" => "bigint",
        "int2" | "smallserial" | "serial2" => "smallint",
        "bool" => "boolean",
        "decimal" => "numeric",
        "float8" => "double precision",
        "float4" => "real",
        other => other,
    };
    format!("{base}{modifier}")
}

/// A column default: `serial` for a sequence's `nextval(...)`, `generated always|by default as
/// identity` for an identity column, otherwise the normalised expression.
pub fn default_value(raw: Option<&str>, identity_generation: Option<&str>) -> Option<String> {
    if let Some(generation) = identity_generation.filter(|g| !g.is_empty()) {
        return Some(format!(
            "generated {} as identity",
            generation.to_lowercase()
        ));
    }
    let expression = expression(raw?);
    if expression.starts_with("nextval(") {
        Some("serial".to_owned())
    } else {
        Some(expression)
    }
}

/// An expression (default, index key, index predicate, policy).
pub fn expression(raw: &str) -> String {
    let mut out = String::new();
    for (quoted, text) in segments(raw) {
        if quoted {
            out.push_str(&text);
        } else {
            let lowered = text.to_lowercase().replace('"', "");
            out.push_str(&strip_casts(&lowered));
        }
    }
    let out = collapse_whitespace(&out);
    let out = any_array_to_in(&out);
    let out = drop_grouping_parentheses(&out);
    let out = collapse_whitespace(&out)
        .replace("( ", "(")
        .replace(" )", ")");
    unquote_number(&out)
}

/// The string literals of a check constraint's definition, unescaped.
pub fn literals(definition: &str) -> Vec<String> {
    segments(definition)
        .into_iter()
        .filter(|(quoted, _)| *quoted)
        .map(|(_, text)| text[1..text.len() - 1].replace("''", "'"))
        .collect()
}

/// The text cut into unquoted and quoted (`'...'`, quotes included) runs.
fn segments(raw: &str) -> Vec<(bool, String)> {
    let mut result = Vec::new();
    let mut current = String::new();
    let mut chars = raw.chars().peekable();
    let mut in_quote = false;
    while let Some(c) = chars.next() {
        if in_quote {
            current.push(c);
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    current.push(chars.next().unwrap_or('\''));
                } else {
                    result.push((true, std::mem::take(&mut current)));
                    in_quote = false;
                }
            }
        } else if c == '\'' {
            if !current.is_empty() {
                result.push((false, std::mem::take(&mut current)));
            }
            current.push(c);
            in_quote = true;
        } else {
            current.push(c);
        }
    }
    if !current.is_empty() {
        result.push((in_quote, current));
    }
    result
}

/// Removes `::type` casts from unquoted text (multi-word types included).
fn strip_casts(text: &str) -> String {
    const MULTI_WORD: [(&str, &str); 5] = [
        ("character", " varying"),
        ("timestamp", " without time zone"),
        ("timestamp", " with time zone"),
        ("time", " without time zone"),
        ("double", " precision"),
    ];
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("::") {
        out.push_str(&rest[..at]);
        rest = &rest[at + 2..];
        let word_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(rest.len());
        let word = &rest[..word_end];
        rest = &rest[word_end..];
        for (first, tail) in MULTI_WORD {
            if word == first && rest.starts_with(tail) {
                rest = &rest[tail.len()..];
                break;
            }
        }
        if rest.starts_with('(') {
            if let Some(close) = rest.find(')') {
                if rest[1..close]
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == ',' || c == ' ')
                {
                    rest = &rest[close + 1..];
                }
            }
        }
        while let Some(tail) = rest.strip_prefix("[]") {
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

fn collapse_whitespace(text: &str) -> String {
    let mut out = String::new();
    for (quoted, part) in segments(text) {
        if quoted {
            out.push_str(&part);
        } else {
            let mut last_space = out.ends_with(' ');
            for c in part.chars() {
                if c.is_whitespace() {
                    if !last_space {
                        out.push(' ');
                    }
                    last_space = true;
                } else {
                    out.push(c);
                    last_space = false;
                }
            }
        }
    }
    out.trim().to_owned()
}

/// `x = any (array[a, b])` → `x in (a, b)` (how the catalog writes an `in` list).
fn any_array_to_in(text: &str) -> String {
    let mut out = text.to_owned();
    for pattern in ["= any (array[", "= any(array["] {
        while let Some(start) = out.find(pattern) {
            let after = start + pattern.len();
            let Some(close) = out[after..].find("])").map(|i| after + i) else {
                break;
            };
            out = format!(
                "{}in ({}){}",
                &out[..start],
                &out[after..close],
                &out[close + 2..]
            );
        }
    }
    out
}

/// Drops parentheses that only group (not those of a call or of `in (...)`), with their
/// matching closing parenthesis.
fn drop_grouping_parentheses(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut keep = vec![true; chars.len()];
    let mut stack: Vec<(usize, bool)> = Vec::new();
    let mut in_quote = false;
    for (i, &c) in chars.iter().enumerate() {
        if c == '\'' {
            in_quote = !in_quote;
            continue;
        }
        if in_quote {
            continue;
        }
        if c == '(' {
            let previous = chars[..i].iter().rev().find(|c| !c.is_whitespace());
            let is_call = previous.is_some_and(|p| p.is_ascii_alphanumeric() || *p == '_');
            stack.push((i, is_call));
        } else if c == ')' {
            if let Some((open, is_call)) = stack.pop() {
                if !is_call {
                    keep[open] = false;
                    keep[i] = false;
                }
            }
        }
    }
    chars
        .iter()
        .zip(keep)
        .filter_map(|(c, k)| k.then_some(*c))
        .collect()
}

fn unquote_number(text: &str) -> String {
    let inner = text.strip_prefix('\'').and_then(|t| t.strip_suffix('\''));
    match inner {
        Some(n)
            if !n.is_empty()
                && n.trim_start_matches('-')
                    .chars()
                    .all(|c| c.is_ascii_digit()) =>
        {
            n.to_owned()
        }
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_match_the_catalogs_spelling() {
        assert_eq!(type_name("VARCHAR(255)"), "character varying(255)");
        assert_eq!(type_name("TIMESTAMP"), "timestamp without time zone");
        assert_eq!(type_name("TEXT[]"), "text[]");
        assert_eq!(type_name("INTEGER"), "integer");
        assert_eq!(type_name("character varying(50)"), "character varying(50)");
        assert_eq!(type_name("XID8"), "xid8");
    }

    #[test]
    fn defaults_lose_their_casts_and_keep_their_literals() {
        let d = |raw: &str| default_value(Some(raw), None).unwrap();
        assert_eq!(d("'active'::text"), d("'active'"));
        assert_eq!(d("'active'::character varying"), "'active'");
        assert_eq!(d("'AND'::text"), "'AND'");
        assert_eq!(d("NOW()"), d("now()"));
        assert_eq!(d("CURRENT_TIMESTAMP"), "current_timestamp");
        assert_eq!(d("'1800000000000'::bigint"), "1800000000000");
        assert_eq!(d("'{}'::text[]"), "'{}'");
        assert_eq!(d("'[]'::jsonb"), "'[]'");
        assert_eq!(d("FALSE"), "false");
        assert_eq!(
            d("nextval('processed_events_id_seq'::regclass)"),
            d("SERIAL")
        );
        assert_eq!(
            default_value(None, Some("ALWAYS")).unwrap(),
            default_value(Some("GENERATED ALWAYS AS IDENTITY"), None).unwrap()
        );
    }

    #[test]
    fn predicates_and_keys_compare_as_written_in_the_inventory() {
        assert_eq!(
            expression(
                "status::text = ANY (ARRAY['pending'::character varying, 'processing'::character varying]::text[])"
            ),
            expression("status in ('pending', 'processing')")
        );
        assert_eq!(
            expression(
                "((tenant_id)::text = current_setting('app.current_tenant_id'::text, true))"
            ),
            expression("tenant_id = current_setting('app.current_tenant_id', true)")
        );
        assert_eq!(
            expression("(metadata ->> 'contact_id'::text)"),
            "metadata ->> 'contact_id'"
        );
        assert_eq!(
            expression("COALESCE(project_id::text, 'global'::text)"),
            expression("coalesce(project_id::text, 'global')")
        );
        assert_eq!(
            expression(
                "(\nCASE content_type\n    WHEN 'voice'::text THEN 10\n    ELSE 5\nEND) desc"
            ),
            expression("case content_type when 'voice' then 10 else 5 end desc")
        );
        assert_eq!(expression("\"position\""), "position");
    }

    #[test]
    fn check_literals_are_read_unescaped() {
        assert_eq!(
            literals("CHECK ((role = ANY (ARRAY['admin'::text, 'it''s'::text])))"),
            vec!["admin", "it's"]
        );
    }
}

//! A small RFC 4180 CSV reader (quoted fields, doubled quotes, newlines inside quotes).
//!
//! Written here rather than taken from the `csv` crate: that crate switches `serde_core`'s
//! default features on, which changes the build hash of every burn crate and costs a full
//! rebuild of burn.

/// Split CSV text into records of fields. Errors name the 1-based line of an unclosed quote.
pub fn parse_csv(text: &str, delimiter: char) -> Result<Vec<Vec<String>>, String> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut quote_line = 0;
    let mut line = 1;
    let mut chars = text.chars().peekable();
    let mut row_has_content = false;
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => {
                in_quotes = true;
                quote_line = line;
                row_has_content = true;
            }
            c if c == delimiter => {
                record.push(std::mem::take(&mut field));
                row_has_content = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                line += 1;
                if row_has_content || !field.is_empty() {
                    record.push(std::mem::take(&mut field));
                    records.push(std::mem::take(&mut record));
                }
                row_has_content = false;
            }
            _ => {
                field.push(c);
                row_has_content = true;
            }
        }
    }
    if in_quotes {
        return Err(format!("unclosed quote starting on line {quote_line}"));
    }
    if row_has_content || !field.is_empty() {
        record.push(field);
        records.push(record);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::parse_csv;

    #[test]
    fn quotes_and_newlines() {
        let r = parse_csv("a,b\n\"x, \"\"y\"\"\",\"two\nlines\"\r\n3,\n", ',').unwrap();
        assert_eq!(
            r,
            vec![
                vec!["a".to_string(), "b".into()],
                vec!["x, \"y\"".into(), "two\nlines".into()],
                vec!["3".into(), "".into()],
            ]
        );
        assert!(parse_csv("a,\"open\n", ',').unwrap_err().contains("line 1"));
    }
}

//! The static token file (`--token-auth-file`, upstream's format): CSV lines
//! `token,user,uid[,"group1,group2"]`, read once at start. Lines with an empty token are skipped,
//! a token listed twice keeps its last line, as upstream does.

use std::collections::HashMap;

use crate::User;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenFileError {
    #[error("token file '{file}' must have at least 3 columns (token, user name, user uid), found {found}")]
    Columns { file: String, found: usize },
    #[error("token file '{file}' line {line}: {why}")]
    Syntax { file: String, line: usize, why: String },
}

/// The users of a token file by token.
#[derive(Debug, Clone, Default)]
pub struct StaticTokens(HashMap<String, User>);

impl StaticTokens {
    /// Parses the text of the file named `file`.
    pub fn parse(file: &str, text: &str) -> Result<Self, TokenFileError> {
        let mut tokens = HashMap::new();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let record = csv_record(line).map_err(|why| TokenFileError::Syntax { file: file.into(), line: i + 1, why })?;
            if record.len() < 3 {
                return Err(TokenFileError::Columns { file: file.into(), found: record.len() });
            }
            if record[0].is_empty() {
                tracing::warn!(file, line = i + 1, "empty token in the token file");
                continue;
            }
            let groups = match record.get(3) {
                Some(g) => g.split(',').map(String::from).collect(),
                None => vec![],
            };
            let user = User { name: record[1].clone(), uid: record[2].clone(), groups, ..Default::default() };
            if tokens.insert(record[0].clone(), user).is_some() {
                tracing::warn!(file, line = i + 1, "duplicate token in the token file");
            }
        }
        Ok(StaticTokens(tokens))
    }

    /// The user of `token` (without system:authenticated).
    pub fn user(&self, token: &str) -> Option<&User> {
        self.0.get(token)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The fields of one CSV line (RFC 4180 quoting, leading spaces of a field dropped).
fn csv_record(line: &str) -> Result<Vec<String>, String> {
    let mut fields = vec![];
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("extraneous or missing \" in quoted-field".into()),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => return Err("extraneous or missing \" in quoted-field".into()),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field.trim_end_matches('\r').to_string());
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err("bare \" in non-quoted-field".into()),
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_users_uids_and_quoted_groups() {
        let t = StaticTokens::parse("f", "abc,alice,1001,\"dev,ops\"\n\ndef, bob, 1002\n,nobody,3\n").unwrap();
        let a = t.user("abc").unwrap();
        assert_eq!((a.name.as_str(), a.uid.as_str(), a.groups.clone()), ("alice", "1001", vec!["dev".to_string(), "ops".to_string()]));
        let b = t.user("def").unwrap();
        assert_eq!((b.name.as_str(), b.uid.as_str(), b.groups.len()), ("bob", "1002", 0));
        assert_eq!(t.len(), 2);
        assert!(t.user("").is_none());
    }

    #[test]
    fn the_last_of_duplicate_tokens_wins() {
        let t = StaticTokens::parse("f", "x,first,1\nx,second,2\n").unwrap();
        assert_eq!(t.user("x").unwrap().name, "second");
    }

    #[test]
    fn too_few_columns_and_bad_quotes_are_errors() {
        assert_eq!(
            StaticTokens::parse("tokens.csv", "x,alice\n").unwrap_err().to_string(),
            "token file 'tokens.csv' must have at least 3 columns (token, user name, user uid), found 2"
        );
        assert!(matches!(StaticTokens::parse("f", "x,\"alice,1\n"), Err(TokenFileError::Syntax { line: 1, .. })));
    }

    #[test]
    fn quoted_quotes() {
        assert_eq!(csv_record(r#"a,"b""c",d"#).unwrap(), vec!["a", "b\"c", "d"]);
    }
}

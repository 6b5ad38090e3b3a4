//! Decoding the two pgoutput messages the log-tailing relay needs: Relation
//! (a table's columns, sent before the first change to it on a session and
//! after its definition changes) and Insert (one new row, as text).
//!
//! pgwire-replication streams the replication protocol and parses the
//! transaction boundaries, but hands change messages over as bytes; their
//! format is PostgreSQL's documented "Logical Replication Message Formats"
//! (protocol version 1). Only what an outbox insert needs is decoded: every
//! other message (update, delete, truncate, type, origin) is skipped, and
//! the publication sends only inserts anyway.

use std::collections::HashMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("pgoutput message truncated while reading {0}")]
    Truncated(&'static str),
    #[error("pgoutput insert into relation {0}, which no Relation message described")]
    UnknownRelation(u32),
}

/// A table as the last Relation message described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub namespace: String,
    pub name: String,
    pub columns: Vec<String>,
}

/// One decoded change message.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Relation {
        id: u32,
        relation: Relation,
    },
    /// Column name to text value (`None` for SQL NULL).
    Insert {
        relation: u32,
        values: Vec<Option<String>>,
    },
    /// Anything else: update, delete, truncate, type, origin.
    Other(u8),
}

/// The relations seen on one replication session (their ids are only
/// meaningful within it).
#[derive(Debug, Default)]
pub struct Relations {
    by_id: HashMap<u32, Relation>,
}

impl Relations {
    pub fn remember(&mut self, id: u32, relation: Relation) {
        self.by_id.insert(id, relation);
    }

    /// The values of an insert, by column name.
    pub fn columns_of<'a>(
        &'a self,
        relation: u32,
        values: &'a [Option<String>],
    ) -> Result<(&'a Relation, HashMap<&'a str, Option<&'a str>>), DecodeError> {
        let table = self.by_id.get(&relation).ok_or(DecodeError::UnknownRelation(relation))?;
        let row = table.columns.iter().map(String::as_str).zip(values.iter().map(Option::as_deref)).collect();
        Ok((table, row))
    }
}

/// Decodes one pgoutput change message (the `data` of an XLogData event).
pub fn decode(data: &[u8]) -> Result<Change, DecodeError> {
    let mut reader = Reader { data, at: 0 };
    match reader.u8("message type")? {
        b'R' => {
            let id = reader.u32("relation id")?;
            let namespace = reader.string("namespace")?;
            let name = reader.string("relation name")?;
            let _replica_identity = reader.u8("replica identity")?;
            let count = reader.u16("column count")?;
            let mut columns = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                let _flags = reader.u8("column flags")?;
                columns.push(reader.string("column name")?);
                let _type_oid = reader.u32("column type")?;
                let _type_modifier = reader.u32("column type modifier")?;
            }
            Ok(Change::Relation { id, relation: Relation { namespace, name, columns } })
        }
        b'I' => {
            let relation = reader.u32("relation id")?;
            let _new_tuple_marker = reader.u8("tuple marker")?;
            let count = reader.u16("tuple column count")?;
            let mut values = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                values.push(match reader.u8("column kind")? {
                    b't' => {
                        let length = reader.u32("value length")? as usize;
                        Some(String::from_utf8_lossy(reader.bytes(length, "value")?).into_owned())
                    }
                    // 'n' null; 'u' unchanged TOAST, never in an insert.
                    _ => None,
                });
            }
            Ok(Change::Insert { relation, values })
        }
        other => Ok(Change::Other(other)),
    }
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, length: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end =
            self.at.checked_add(length).filter(|end| *end <= self.data.len()).ok_or(DecodeError::Truncated(what))?;
        let bytes = &self.data[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.bytes(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let bytes = self.bytes(2, what)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let bytes = self.bytes(4, what)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// A NUL-terminated string.
    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let rest = &self.data[self.at..];
        let length = rest.iter().position(|byte| *byte == 0).ok_or(DecodeError::Truncated(what))?;
        let text = String::from_utf8_lossy(&rest[..length]).into_owned();
        self.at += length + 1;
        Ok(text)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A Relation message as pgoutput writes it.
    pub(crate) fn relation_message(id: u32, table: &str, columns: &[&str]) -> Vec<u8> {
        let mut out = vec![b'R'];
        out.extend(id.to_be_bytes());
        out.extend(b"public\0");
        out.extend(table.as_bytes());
        out.push(0);
        out.push(b'd');
        out.extend((columns.len() as u16).to_be_bytes());
        for column in columns {
            out.push(0);
            out.extend(column.as_bytes());
            out.push(0);
            out.extend(25u32.to_be_bytes());
            out.extend(u32::MAX.to_be_bytes());
        }
        out
    }

    /// An Insert message with text values (`None`: NULL).
    pub(crate) fn insert_message(id: u32, values: &[Option<&str>]) -> Vec<u8> {
        let mut out = vec![b'I'];
        out.extend(id.to_be_bytes());
        out.push(b'N');
        out.extend((values.len() as u16).to_be_bytes());
        for value in values {
            match value {
                Some(text) => {
                    out.push(b't');
                    out.extend((text.len() as u32).to_be_bytes());
                    out.extend(text.as_bytes());
                }
                None => out.push(b'n'),
            }
        }
        out
    }

    #[test]
    fn a_relation_then_an_insert_decode_to_named_values() {
        let mut relations = Relations::default();
        let Change::Relation { id, relation } = decode(&relation_message(7, "outbox", &["id", "last_error"])).unwrap()
        else {
            panic!("not a relation")
        };
        assert_eq!(relation.name, "outbox");
        relations.remember(id, relation);
        let Change::Insert { relation, values } = decode(&insert_message(7, &[Some("42"), None])).unwrap() else {
            panic!("not an insert")
        };
        let (table, row) = relations.columns_of(relation, &values).unwrap();
        assert_eq!(table.name, "outbox");
        assert_eq!(row["id"], Some("42"));
        assert_eq!(row["last_error"], None);
    }

    #[test]
    fn a_truncated_message_or_an_unknown_relation_is_an_error_not_a_panic() {
        let whole = insert_message(7, &[Some("42")]);
        for cut in 1..whole.len() {
            assert!(decode(&whole[..cut]).is_err(), "cut at {cut}");
        }
        let Change::Insert { relation, values } = decode(&whole).unwrap() else { panic!() };
        assert_eq!(Relations::default().columns_of(relation, &values).unwrap_err(), DecodeError::UnknownRelation(7));
        assert_eq!(decode(b"U").unwrap(), Change::Other(b'U'));
    }
}

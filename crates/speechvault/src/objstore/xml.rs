//! A tiny element tree over quick-xml: S3 responses are small (a list page holds at most
//! 1,000 entries), so a tree keeps the parsing code short and obvious.

use quick_xml::events::Event;

/// One XML element with its text and children.
#[derive(Debug, Default, Clone)]
pub struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// The first child with this local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
    /// All children with this local name.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
    /// Text of the first child with this name.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }
}

/// Parses a document and returns its root element.
pub fn parse(body: &[u8]) -> Result<Element, String> {
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut stack: Vec<Element> = vec![Element::default()];
    let mut buf = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("malformed XML at byte {}: {e}", reader.buffer_position()))?;
        match event {
            Event::Start(start) => {
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                stack.push(Element { name, ..Element::default() });
            }
            Event::Empty(start) => {
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                if let Some(parent) = stack.last_mut() {
                    parent.children.push(Element { name, ..Element::default() });
                }
            }
            Event::Text(text) => {
                let t = text.unescape().map_err(|e| format!("bad XML text: {e}"))?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t);
                }
            }
            Event::CData(data) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&data));
                }
            }
            Event::End(_) => {
                let done = stack.pop().ok_or("unbalanced XML")?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => return Err("unbalanced XML".into()),
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    let mut doc = stack.pop().ok_or("empty XML document")?;
    if !stack.is_empty() {
        return Err("truncated XML document".into());
    }
    doc.children.pop().ok_or_else(|| "XML document has no root element".to_string())
}

/// Escapes text for inclusion in an XML element.
pub fn escape(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

/// A document's content as one string, for comparing two documents: element names (without
/// namespaces), trimmed text and children in order; the declaration, attributes and the
/// whitespace between elements are left out.
pub fn canonical(body: &[u8]) -> Result<String, String> {
    fn walk(e: &Element, out: &mut String) {
        out.push('<');
        out.push_str(&e.name);
        out.push('>');
        out.push_str(&escape(e.text.trim()));
        for c in &e.children {
            walk(c, out);
        }
        out.push_str("</>");
    }
    let root = parse(body)?;
    let mut out = String::new();
    walk(&root, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_list_page() {
        let doc = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name>
<Contents><Key>a&amp;b</Key><Size>3</Size></Contents><Contents><Key>c</Key><Size>0</Size></Contents>
<IsTruncated>false</IsTruncated></ListBucketResult>"#;
        let root = parse(doc).unwrap();
        assert_eq!(root.name, "ListBucketResult");
        let keys: Vec<_> = root.all("Contents").filter_map(|c| c.text_of("Key")).collect();
        assert_eq!(keys, ["a&b", "c"]);
        assert!(parse(b"<a><b></a>").is_err());
    }
}

//! HTML pages as Open Graph data: `og:*`, `article:*`, `profile:*` and `twitter:*` meta tags,
//! then Synapse's fallbacks: the first title or heading, a microdata image, the largest image
//! with dimensions (or the first image, or the icon), the meta description or a summary of the
//! page's text.

use encoding_rs::Encoding;
use scraper::{ElementRef, Html, Node};
use serde_json::Value;

use super::OpenGraph;

/// More meta tags of one prefix than this and the page's tags of that prefix are ignored.
const MAX_META_TAGS: usize = 50;
/// Elements whose text is not part of the page's description.
const TAGS_WITHOUT_TEXT: &[&str] = &[
    "head", "header", "nav", "aside", "footer", "script", "noscript", "style", "svg", "iframe", "video",
    "canvas", "img", "picture",
];
/// ARIA roles of elements not meant for display.
const ROLES_WITHOUT_TEXT: &[&str] = &["directory", "menu", "menubar", "toolbar"];
/// The description is cut at a word boundary around these lengths (characters).
const SUMMARY_MIN: usize = 200;
const SUMMARY_MAX: usize = 500;
/// How deep the text walk goes, so that a page of deeply nested elements costs little.
const MAX_TEXT_STACK: usize = 1024;

/// The `charset` parameter of a `Content-Type` value.
fn charset_parameter(value: &str) -> Option<&str> {
    value.split(';').skip(1).find_map(|parameter| {
        let (name, value) = parameter.split_once('=')?;
        name.trim().eq_ignore_ascii_case("charset").then(|| value.trim().trim_matches(['"', '\'']))
    })
}

/// The charset a `<meta charset>` or `<meta http-equiv content="...; charset=...">` in the
/// first 1024 bytes declares.
fn sniff_meta_charset(body: &[u8]) -> Option<&'static Encoding> {
    let head = String::from_utf8_lossy(&body[..body.len().min(1024)]).to_ascii_lowercase();
    head.match_indices("<meta").find_map(|(at, _)| {
        let tag = &head[at..];
        let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
        let value = &tag[tag.find("charset=")? + "charset=".len()..];
        let value = value.trim_start_matches(['"', '\'', ' ']);
        let end = value.find(['"', '\'', ' ', ';', '/', '>']).unwrap_or(value.len());
        Encoding::for_label(&value.as_bytes()[..end])
    })
}

/// The text of an HTML body: its BOM, else the header's charset, else a `<meta>` charset,
/// else UTF-8; undecodable bytes become U+FFFD.
pub fn decode_html(body: &[u8], content_type: &str) -> String {
    let declared = charset_parameter(content_type)
        .and_then(|label| Encoding::for_label(label.as_bytes()))
        .or_else(|| sniff_meta_charset(body))
        .unwrap_or(encoding_rs::UTF_8);
    // `decode` lets a BOM win over the declared encoding.
    let (text, _, _) = declared.decode(body);
    text.into_owned()
}

/// A parsed page.
pub(super) struct Page {
    document: Html,
}

pub(super) fn parse(text: &str) -> Page {
    Page { document: Html::parse_document(text) }
}

/// The Open Graph data of an HTML page.
pub fn parse_html_to_open_graph(text: &str) -> OpenGraph {
    parse(text).open_graph()
}

fn elements<'a>(document: &'a Html, name: &'a str) -> impl Iterator<Item = ElementRef<'a>> + 'a {
    document.root_element().descendent_elements().filter(move |e| e.value().name() == name)
}

fn non_blank<'a>(element: &ElementRef<'a>, attribute: &str) -> Option<&'a str> {
    element.attr(attribute).filter(|v| !v.is_empty())
}

fn float_attribute(element: &ElementRef<'_>, attribute: &str) -> f64 {
    element
        .attr(attribute)
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .unwrap_or(0.0)
}

impl Page {
    /// `<meta {attribute}="{prefix}:..." content="...">` tags, keyed by their (mapped) name;
    /// `map` returns `None` to skip a name.
    fn meta_tags(&self, attribute: &str, prefix: &str, map: impl Fn(&str) -> Option<String>) -> OpenGraph {
        let mut found = OpenGraph::new();
        let prefix = format!("{prefix}:");
        for meta in elements(&self.document, "meta") {
            let (Some(name), Some(content)) = (meta.attr(attribute), non_blank(&meta, "content")) else {
                continue;
            };
            if !name.starts_with(&prefix) {
                continue;
            }
            if found.len() >= MAX_META_TAGS {
                tracing::info!(prefix, "ignoring the meta tags of a page with too many of them");
                return OpenGraph::new();
            }
            if let Some(key) = map(name) {
                found.insert(key, Value::from(content));
            }
        }
        found
    }

    /// The URL of the page's oEmbed data (`<link rel="alternate" type="application/json+oembed">`).
    pub(super) fn oembed_link(&self) -> Option<String> {
        ["alternate", "alternative"].into_iter().find_map(|rel| {
            elements(&self.document, "link").find_map(|link| {
                let matches =
                    link.attr("rel") == Some(rel) && link.attr("type") == Some("application/json+oembed");
                matches.then(|| link.attr("href").map(str::to_owned)).flatten()
            })
        })
    }

    pub(super) fn open_graph(&self) -> OpenGraph {
        let same = |name: &str| Some(name.to_owned());
        let mut og = self.meta_tags("property", "og", same);
        og.extend(self.meta_tags("property", "article", same));
        og.extend(self.meta_tags("property", "profile", same));
        let twitter = self.meta_tags("name", "twitter", |name| match name {
            "twitter:card" | "twitter:creator" | "twitter:site" => None,
            _ => Some(format!("og{}", &name["twitter".len()..])),
        });
        for (key, value) in twitter {
            og.entry(key).or_insert(value);
        }

        if !og.contains_key("og:title") {
            let title = self.document.root_element().descendent_elements().find_map(|e| {
                if !matches!(e.value().name(), "title" | "h1" | "h2" | "h3") {
                    return None;
                }
                let text: String = e.text().collect();
                Some(text.trim().to_owned()).filter(|t| !t.is_empty())
            });
            og.insert("og:title".to_owned(), title.map_or(Value::Null, Value::from));
        }

        if !og.contains_key("og:image")
            && let Some(image) = self.fallback_image()
        {
            og.insert("og:image".to_owned(), Value::from(image));
        }

        match og.get("og:description").and_then(Value::as_str) {
            None if !og.contains_key("og:description") => {
                let meta = elements(&self.document, "meta").find_map(|meta| {
                    let named =
                        meta.attr("name").is_some_and(|n| n.to_ascii_lowercase().contains("description"));
                    if named { non_blank(&meta, "content").map(str::to_owned) } else { None }
                });
                let description = meta.or_else(|| self.text_description());
                og.insert("og:description".to_owned(), description.map_or(Value::Null, Value::from));
            }
            Some(description) if !description.is_empty() => {
                let summary = summarize_paragraphs([description.to_owned()]);
                og.insert("og:description".to_owned(), summary.map_or(Value::Null, Value::from));
            }
            _ => {}
        }
        og
    }

    /// A microdata image, else the largest image given dimensions over 10x10, else the first
    /// image, else the page's icon.
    fn fallback_image(&self) -> Option<String> {
        let microdata = elements(&self.document, "meta").find_map(|meta| {
            let image = meta.attr("itemprop").is_some_and(|p| p.to_ascii_lowercase().contains("image"));
            if image { non_blank(&meta, "content") } else { None }
        });
        if let Some(image) = microdata {
            return Some(image.to_owned());
        }
        let mut sized: Vec<(f64, &str)> = elements(&self.document, "img")
            .filter(|img| non_blank(img, "width").is_some() && non_blank(img, "height").is_some())
            .filter_map(|img| {
                let (width, height) = (float_attribute(&img, "width"), float_attribute(&img, "height"));
                (width > 10.0 && height > 10.0)
                    .then(|| non_blank(&img, "src").map(|src| (width * height, src)))?
            })
            .collect();
        // Largest first; among equals, the first on the page.
        sized.sort_by(|a, b| b.0.total_cmp(&a.0));
        if let Some((_, src)) = sized.first() {
            return Some((*src).to_owned());
        }
        if let Some(src) = elements(&self.document, "img").find_map(|img| non_blank(&img, "src")) {
            return Some(src.to_owned());
        }
        elements(&self.document, "link")
            .find(|link| {
                link.attr("rel").is_some_and(|rel| rel.split_ascii_whitespace().any(|r| r == "icon"))
            })
            .and_then(|link| non_blank(&link, "href"))
            .map(str::to_owned)
    }

    /// A summary of the text of the page's body outside navigation, scripts and media.
    pub(super) fn text_description(&self) -> Option<String> {
        let mut paragraphs = Vec::new();
        let mut stack = vec![*self.document.root_element()];
        while let Some(node) = stack.pop() {
            match node.value() {
                Node::Text(text) => {
                    let words: Vec<&str> = text.split_whitespace().collect();
                    paragraphs.push(words.join("\n"));
                }
                Node::Element(element) => {
                    if TAGS_WITHOUT_TEXT.contains(&element.name())
                        || element.attr("role").is_some_and(|role| ROLES_WITHOUT_TEXT.contains(&role))
                    {
                        continue;
                    }
                    for child in node.children().rev() {
                        if stack.len() > MAX_TEXT_STACK {
                            break;
                        }
                        stack.push(child);
                    }
                }
                _ => {}
            }
        }
        summarize_paragraphs(paragraphs)
    }

    /// The first `src` of a `tag` element.
    pub(super) fn first_src(&self, tag: &str) -> Option<String> {
        elements(&self.document, tag).find_map(|e| e.attr("src").map(str::to_owned))
    }
}

fn is_space(c: char) -> bool {
    matches!(c, '\t' | ' ' | '\r' | '\n')
}

/// Synapse's summary: paragraphs until at least [`SUMMARY_MIN`] characters, whitespace
/// collapsed (a line break becomes a paragraph break), cut at a word boundary under
/// [`SUMMARY_MAX`] with an ellipsis.
pub(crate) fn summarize_paragraphs(paragraphs: impl IntoIterator<Item = String>) -> Option<String> {
    let mut description = String::new();
    for paragraph in paragraphs {
        if description.chars().count() >= SUMMARY_MIN {
            break;
        }
        let mut previous_space = false;
        for c in paragraph.chars() {
            let space = is_space(c);
            if !(space && previous_space) {
                description.push(if space { ' ' } else { c });
            }
            previous_space = space;
        }
        description.push_str("\n\n");
    }
    let description = collapse_breaks(description.trim_matches(char::is_whitespace));
    if description.chars().count() <= SUMMARY_MAX {
        return Some(description).filter(|d| !d.is_empty());
    }
    let mut cut = String::new();
    for word in words_with_leading_space(&description) {
        let (word_length, cut_length) = (word.chars().count(), cut.chars().count());
        if word_length + cut_length < SUMMARY_MAX {
            cut.push_str(word);
        } else {
            if cut_length < SUMMARY_MIN {
                cut.push_str(word);
            }
            break;
        }
    }
    let cut: String = cut.chars().take(SUMMARY_MAX).collect();
    Some(format!("{}…", cut.trim_matches(char::is_whitespace)))
}

/// Runs of spaces and tabs become one space; a run of whitespace ending in line breaks
/// becomes one paragraph break.
fn collapse_breaks(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let mut index = 0;
    while index < chars.len() {
        if !is_space(chars[index]) {
            out.push(chars[index]);
            index += 1;
            continue;
        }
        let start = index;
        while index < chars.len() && is_space(chars[index]) {
            index += 1;
        }
        let run = &chars[start..index];
        match run.iter().rposition(|c| matches!(c, '\r' | '\n')) {
            Some(last_break) => {
                out.push_str("\n\n");
                if run[last_break + 1..].iter().any(|c| matches!(c, '\t' | ' ')) {
                    out.push(' ');
                }
            }
            None => out.push(' '),
        }
    }
    out
}

/// `text` as words, each with the whitespace before it.
fn words_with_leading_space(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let word_start = rest.find(|c: char| !c.is_whitespace())?;
        let word_end =
            rest[word_start..].find(char::is_whitespace).map_or(rest.len(), |end| word_start + end);
        let (word, remainder) = rest.split_at(word_end);
        rest = remainder;
        Some(word)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn og(html: &str) -> OpenGraph {
        parse_html_to_open_graph(html)
    }

    #[test]
    fn open_graph_tags_are_read_and_twitter_fills_gaps() {
        let og = og(r#"<html><head>
            <meta property="og:title" content="The title">
            <meta property="og:description" content="Described">
            <meta property="og:image" content="/img.png">
            <meta property="og:empty" content="">
            <meta property="article:author" content="Someone">
            <meta name="twitter:title" content="Not this one">
            <meta name="twitter:label1" content="Label">
            <meta name="twitter:site" content="@ignored">
            <title>Not the title</title></head><body><p>Body text</p></body></html>"#);
        assert_eq!(og["og:title"], "The title");
        assert_eq!(og["og:description"], "Described");
        assert_eq!(og["og:image"], "/img.png");
        assert_eq!(og["article:author"], "Someone");
        assert_eq!(og["og:label1"], "Label");
        assert!(!og.contains_key("og:empty") && !og.contains_key("og:site"));
    }

    #[test]
    fn fallbacks_find_a_title_an_image_and_a_description() {
        let og = og(r#"<html><head><title> Page title </title>
            <meta name="Description" content="Meta description"></head>
            <body><img src="small.png" width="5" height="5">
            <img src="big.png" width="100" height="50"><img src="bigger.png" width="200" height="50">
            </body></html>"#);
        assert_eq!(og["og:title"], "Page title");
        assert_eq!(og["og:image"], "bigger.png");
        assert_eq!(og["og:description"], "Meta description");

        let og = og_of_body(
            "<h2>Heading</h2><nav>Menu</nav><p>First paragraph.</p><script>var x;</script><p>Second.</p>",
        );
        assert_eq!(og["og:title"], "Heading");
        assert_eq!(og["og:description"], "Heading\n\nFirst paragraph.\n\nSecond.");
        assert!(!og.contains_key("og:image"));
    }

    fn og_of_body(body: &str) -> OpenGraph {
        og(&format!("<html><head></head><body>{body}</body></html>"))
    }

    #[test]
    fn no_title_is_null_and_the_icon_is_the_last_image() {
        let og =
            og(r#"<html><head><link rel="shortcut icon" href="/favicon.ico"></head><body></body></html>"#);
        assert_eq!(og["og:title"], Value::Null);
        assert_eq!(og["og:image"], "/favicon.ico");
        assert_eq!(og["og:description"], Value::Null);
    }

    #[test]
    fn too_many_tags_are_ignored() {
        let tags: String = (0..60).map(|i| format!(r#"<meta property="og:k{i}" content="v">"#)).collect();
        let og = og(&format!("<html><head>{tags}<title>T</title></head></html>"));
        assert!(!og.contains_key("og:k0"));
        assert_eq!(og["og:title"], "T");
    }

    #[test]
    fn long_text_is_cut_at_a_word_with_an_ellipsis() {
        let long = "word ".repeat(300);
        let summary = summarize_paragraphs([long]).unwrap();
        assert!(summary.ends_with("word…"), "{summary}");
        assert!(summary.chars().count() <= SUMMARY_MAX + 1);
        assert_eq!(summarize_paragraphs(["  a \t b  ".to_owned(), "c\nd".to_owned()]).unwrap(), "a b\n\nc d");
        assert_eq!(summarize_paragraphs(Vec::<String>::new()), None);
    }

    #[test]
    fn charsets_come_from_the_header_a_bom_or_a_meta_tag() {
        let latin1 = b"<html><head><title>caf\xe9</title></head></html>";
        assert!(decode_html(latin1, "text/html; charset=ISO-8859-1").contains("café"));
        let with_meta = b"<html><head><meta charset=\"windows-1252\"><title>caf\xe9</title></head></html>";
        assert!(decode_html(with_meta, "text/html").contains("café"));
        let http_equiv =
            b"<meta http-equiv=\"Content-Type\" content=\"text/html; charset=iso-8859-1\"><p>caf\xe9</p>";
        assert!(decode_html(http_equiv, "text/html").contains("café"));
        let bom = b"\xef\xbb\xbf<title>caf\xc3\xa9</title>";
        assert!(decode_html(bom, "text/html; charset=iso-8859-1").contains("café"));
        assert!(decode_html(b"caf\xc3\xa9", "text/html").contains("café"));
    }

    #[test]
    fn oembed_links_are_discovered() {
        let page = parse(
            r#"<html><head><link rel="alternate" type="application/json+oembed" href="/oembed?x=1"></head></html>"#,
        );
        assert_eq!(page.oembed_link().as_deref(), Some("/oembed?x=1"));
        assert_eq!(parse("<html></html>").oembed_link(), None);
    }
}
